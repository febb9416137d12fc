# The two commands: `make run` (the platform on embedded defaults) and `make test` (everything the
# tests need, then the whole suite). Both create .venv and install into it on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test unit services services-stop bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-runtime

run: $(VENV)/.installed-runtime
	mkdir -p data
	$(BIN)/iot-platform serve

test: $(VENV)/.installed-dev
	bash tools/services.sh start
	$(BIN)/ruff check
	$(BIN)/mypy
	eval "$$(bash tools/services.sh env)" && $(BIN)/pytest

unit: $(VENV)/.installed-dev
	$(BIN)/pytest tests/unit

services:
	bash tools/services.sh start

services-stop:
	bash tools/services.sh stop

bench: $(VENV)/.installed-dev
	bash tools/services.sh start
	eval "$$(bash tools/services.sh env)" && $(BIN)/python -m tools.bench_eventstore --backend all

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache

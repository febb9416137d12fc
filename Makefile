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

# The suite in two passes. Most tests wait on platform processes and brokers rather than the CPU,
# so the first pass runs on PYTEST_WORKERS workers (each with its own PostgreSQL database and
# port slice); the tests marked serial restart or reload a shared service, so they run alone
# afterwards. Both passes always run; make fails if either did.
PYTEST_WORKERS ?= 4

test: $(VENV)/.installed-dev
	bash tools/services.sh start
	$(BIN)/ruff check
	$(BIN)/mypy
	eval "$$(bash tools/services.sh env)" || exit 1; status=0; \
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not serial" || status=$$?; \
	$(BIN)/pytest -m serial || status=$$?; \
	exit $$status

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

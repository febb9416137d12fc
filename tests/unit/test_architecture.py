"""Dependencies point inward: domain <- application <- infrastructure/presentation."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "iot_platform"


def imports_of(layer: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (PACKAGE / layer).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(PACKAGE))] = names
    return found


def test_the_domain_imports_only_the_standard_library_and_itself() -> None:
    for module, names in imports_of("domain").items():
        foreign = {
            n for n in names
            if n.split(".")[0] not in sys.stdlib_module_names
            and not n.startswith(("iot_platform.domain", "__future__"))
        }
        assert not foreign, f"{module} imports {foreign}"


@pytest.mark.parametrize("forbidden", ["iot_platform.infrastructure", "iot_platform.presentation",
                                       "iot_platform.composition", "sqlalchemy", "fastapi", "pydantic"])
def test_the_application_layer_knows_no_adapter(forbidden: str) -> None:
    for module, names in imports_of("application").items():
        assert not any(n == forbidden or n.startswith(forbidden + ".") for n in names), module


def test_infrastructure_does_not_reach_into_presentation() -> None:
    for module, names in imports_of("infrastructure").items():
        assert not any(n.startswith("iot_platform.presentation") for n in names), module

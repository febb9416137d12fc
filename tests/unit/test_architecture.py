"""Dependencies point inward: domain <- application <- infrastructure/presentation.

Presentation (REST, CLI, the MQTT/CoAP/LoRaWAN servers) reaches use cases and ports through
the application's ``Services``; only the app factory and the CLI know the composition root,
which is the one place that knows adapters."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "iot_platform"


COMPOSITION_ROOT = ("iot_platform.bootstrap", "iot_platform.composition")
"""The composition root, as a module or as a package."""


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """``from ..x import y`` in iot_platform/a/b.py -> ``iot_platform.a.x``."""
    if node.level == 0:
        return node.module or ""
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(layer: str) -> dict[str, set[str]]:
    """Every module each file of ``layer`` imports, at the top or inside a function."""
    found: dict[str, set[str]] = {}
    for path in (PACKAGE / layer).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(path, node)
                names.add(module)
                names |= {f"{module}.{alias.name}" for alias in node.names}
        found[str(path.relative_to(PACKAGE))] = names
    return found


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


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


def test_presentation_imports_no_infrastructure() -> None:
    for module, names in imports_of("presentation").items():
        reached = {n for n in names if within(n, "iot_platform.infrastructure")}
        assert not reached, f"{module} imports {reached}"


def test_only_the_app_factory_and_the_cli_know_the_composition_root() -> None:
    allowed = ("presentation/rest/app.py", "presentation/cli/")
    for layer in ("domain", "application", "infrastructure", "presentation"):
        for module, names in imports_of(layer).items():
            if module.startswith(allowed):
                continue
            assert not any(within(n, *COMPOSITION_ROOT) for n in names), f"{module} imports the composition root"


@pytest.mark.parametrize("layer", ["domain", "application"])
def test_nothing_inward_imports_presentation(layer: str) -> None:
    for module, names in imports_of(layer).items():
        assert not any(within(n, "iot_platform.presentation") for n in names), module


def test_the_device_facing_servers_live_in_presentation() -> None:
    """MQTT, CoAP and the LoRaWAN gateways' UDP endpoint call use cases: they are front ends."""
    for server in ("mqtt/ingestion.py", "coap/server.py", "lorawan/listener.py", "lorawan/network_server.py"):
        assert (PACKAGE / "presentation" / server).is_file(), server
    assert not list((PACKAGE / "infrastructure").rglob("listener.py"))
    assert not list((PACKAGE / "infrastructure").rglob("network_server.py"))

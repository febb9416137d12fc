"""The domain reads no clock: every event is given its time by whoever causes it (the
application's clock, or the stored row when an event is read back), so aggregates decide the same
way on every run and tests need no frozen time."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from iot_platform.domain.events import DomainEvent

DOMAIN = Path(__file__).resolve().parents[2] / "src" / "iot_platform" / "domain"

CLOCK_ATTRIBUTES = {"now", "utcnow", "today", "fromtimestamp", "utcfromtimestamp"}
CLOCK_NAMES = {"utcnow"}
CLOCK_MODULES = {"time"}


def clock_reads(source: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in CLOCK_ATTRIBUTES:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in CLOCK_MODULES:
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Name) and node.id in CLOCK_NAMES and isinstance(node.ctx, ast.Load):
            found.append(f"line {node.lineno}: {node.id}")
        elif isinstance(node, ast.FunctionDef) and node.name in CLOCK_NAMES:
            found.append(f"line {node.lineno}: def {node.name}")
        elif isinstance(node, ast.Import) and {a.name.split(".")[0] for a in node.names} & CLOCK_MODULES:
            found.append(f"line {node.lineno}: import time")
        elif isinstance(node, ast.ImportFrom) and node.module in CLOCK_MODULES:
            found.append(f"line {node.lineno}: from {node.module} import")
    return found


@pytest.mark.parametrize("path", sorted(DOMAIN.rglob("*.py")), ids=lambda p: str(p.relative_to(DOMAIN)))
def test_no_domain_module_reads_the_clock(path: Path) -> None:
    assert clock_reads(path.read_text()) == []


def test_the_check_sees_the_ways_code_reads_the_clock() -> None:
    source = (
        "import time\n"
        "from datetime import UTC, datetime\n"
        "def utcnow(): return datetime.now(UTC)\n"
        "x = field(default_factory=utcnow)\n"
        "y = time.time()\n"
    )
    assert len(clock_reads(source)) == 5


def test_an_event_cannot_be_built_without_its_time() -> None:
    with pytest.raises(TypeError, match="occurred_at"):
        DomainEvent(aggregate_id="d1")  # type: ignore[call-arg]


def test_an_event_keeps_the_time_it_is_given() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert DomainEvent(aggregate_id="d1", occurred_at=at).occurred_at == at

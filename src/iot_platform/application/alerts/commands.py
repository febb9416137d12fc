"""Commands of the alerting use cases: what a caller asks for, before anything is decided."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.alerts import RuleDefinition


@dataclass(frozen=True)
class CreateRule:
    rule_id: str
    definition: RuleDefinition
    context: EventContext = EventContext()


@dataclass(frozen=True)
class ChangeRule:
    """``changes`` names fields of the rule body (``threshold``, ``enabled``, ``tags``...)."""

    rule_id: str
    changes: Mapping[str, Any] = field(default_factory=dict)
    expected_version: int | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class DeleteRule:
    rule_id: str
    expected_version: int | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class AcknowledgeAlert:
    alert_id: str
    note: str | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class ResolveAlert:
    alert_id: str
    resolution: str | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class RaiseAlert:
    """Issued by the rule engine only."""

    alert_id: str
    rule_id: str
    definition: RuleDefinition
    device_id: str
    value: float | None
    message: str
    at: float
    """Epoch seconds at which the condition was judged true."""

"""What can happen to alert rules and alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from iot_platform.domain.alerts.values import RuleDefinition, Severity
from iot_platform.domain.events import DomainEvent


@dataclass(frozen=True, kw_only=True)
class AlertRuleCreated(DomainEvent):
    definition: RuleDefinition


@dataclass(frozen=True, kw_only=True)
class AlertRuleChanged(DomainEvent):
    """The whole new definition (enabling and disabling are changes too)."""

    definition: RuleDefinition


@dataclass(frozen=True, kw_only=True)
class AlertRuleDeleted(DomainEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class AlertRaised(DomainEvent):
    rule_id: str
    rule_name: str
    device_id: str
    metric: str
    severity: Severity
    value: float | None
    message: str
    raised_at: datetime
    """When the condition was judged true (the reading's time), not when this was recorded."""


@dataclass(frozen=True, kw_only=True)
class AlertAcknowledged(DomainEvent):
    by: str
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class AlertResolved(DomainEvent):
    by: str
    automatic: bool
    resolution: str | None = None


ALERT_EVENTS: tuple[type[DomainEvent], ...] = (
    AlertRuleCreated,
    AlertRuleChanged,
    AlertRuleDeleted,
    AlertRaised,
    AlertAcknowledged,
    AlertResolved,
)

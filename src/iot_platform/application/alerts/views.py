"""What the read side answers about rules and alerts (plain data, no aggregates)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from iot_platform.domain.alerts import AlertStatus, RuleDefinition, Severity


@dataclass(frozen=True)
class RuleView:
    rule_id: str
    definition: RuleDefinition
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AlertView:
    alert_id: str
    rule_id: str
    rule_name: str
    device_id: str
    metric: str
    severity: Severity
    status: AlertStatus
    value: float | None
    message: str
    raised_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    note: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    version: int = 1


@dataclass(frozen=True)
class AlertSearch:
    status: AlertStatus | None = None
    open_only: bool = False
    severity: Severity | None = None
    device_id: str | None = None
    rule_id: str | None = None
    raised_from: datetime | None = None
    raised_to: datetime | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class DevicePresence:
    """A registered device and when it was last heard from (``no_data`` rules start here)."""

    device_id: str
    device_type: str
    tags: Mapping[str, str]
    last_seen: float | None
    """Epoch seconds."""

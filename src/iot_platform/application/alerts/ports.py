"""Ports of the alerting use cases.

Adapters: ``SqlAlertReadModel`` (rules and alerts read models, device presence); the live feed
and the webhook/MQTT senders as ``AlertChannel``s; the system clock. Unit tests use fakes.
"""

from __future__ import annotations

from typing import Protocol

from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.application.alerts.views import AlertSearch, AlertView, DevicePresence, RuleView
from iot_platform.domain.alerts import RuleDefinition


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""
        ...


class AlertReadModel(Protocol):
    async def rule(self, rule_id: str) -> RuleView | None: ...

    async def rules(self, *, include_disabled: bool = True) -> list[RuleView]: ...

    async def alert(self, alert_id: str) -> AlertView | None: ...

    async def alerts(self, search: AlertSearch) -> list[AlertView]: ...

    async def open_alerts(self) -> list[AlertView]: ...

    async def presence(self) -> list[DevicePresence]:
        """Every live device with its last-seen time."""
        ...


class AlertChannel(Protocol):
    """Somewhere alerts are told. ``send`` must not block: queue and return."""

    def send(self, notice: AlertNotice, rule: RuleDefinition | None) -> None: ...


class RuleCatalog(Protocol):
    """The rule definitions the engine holds, for channels that route by rule."""

    def definition(self, rule_id: str) -> RuleDefinition | None: ...


"""The Alert aggregate: raised -> acknowledged -> resolved; raised -> resolved.

Uniqueness (at most one open alert per rule and device) is the rule engine's to keep: it alone
raises alerts, and it owns each device's evaluation. Re-raising after resolution makes a new
alert with a new id.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import singledispatchmethod

from iot_platform.domain.aggregate import Aggregate, EventContext
from iot_platform.domain.alerts.events import AlertAcknowledged, AlertRaised, AlertResolved
from iot_platform.domain.alerts.values import Severity
from iot_platform.domain.errors import AlreadyExists, InvalidTransition
from iot_platform.domain.events import DomainEvent
from iot_platform.domain.validation import require_number, require_text


class AlertStatus(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


OPEN_STATUSES = frozenset({AlertStatus.RAISED, AlertStatus.ACKNOWLEDGED})


class Alert(Aggregate):
    stream_type = "alert"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status: AlertStatus | None = None
        self.rule_id = ""
        self.device_id = ""
        self.severity = Severity.WARNING
        self.raised: AlertRaised | None = None
        """What was raised: the facts every later notice repeats."""

    @property
    def exists(self) -> bool:
        return self.status is not None

    def raise_(
        self,
        *,
        rule_id: str,
        rule_name: str,
        device_id: str,
        metric: str,
        severity: Severity,
        value: float | None,
        message: str,
        raised_at: datetime,
        context: EventContext = EventContext(),
    ) -> None:
        if self.exists:
            raise AlreadyExists(f"alert {self.id!r} was already raised")
        require_number(value, "value", optional=True)
        self._trigger(
            AlertRaised(
                **self._meta(context),
                rule_id=rule_id,
                rule_name=rule_name,
                device_id=device_id,
                metric=metric,
                severity=severity,
                value=value,
                message=message,
                raised_at=raised_at,
            )
        )

    def acknowledge(self, note: str | None, context: EventContext) -> None:
        require_text(note, "note", optional=True)
        if self.status is not AlertStatus.RAISED:
            raise InvalidTransition(f"alert {self.id!r} is {self._status_name}, not raised")
        self._trigger(AlertAcknowledged(**self._meta(context), by=context.actor, note=note))

    def resolve(
        self, resolution: str | None, context: EventContext, *, automatic: bool = False
    ) -> None:
        require_text(resolution, "resolution", optional=True)
        if self.status not in OPEN_STATUSES:
            raise InvalidTransition(f"alert {self.id!r} is {self._status_name}, not open")
        self._trigger(
            AlertResolved(
                **self._meta(context), by=context.actor, automatic=automatic, resolution=resolution
            )
        )

    @property
    def _status_name(self) -> str:
        return self.status.value if self.status else "unknown"

    # -- state changes: only here -------------------------------------------------------
    @singledispatchmethod
    def _apply(self, event: DomainEvent) -> None:
        raise TypeError(f"Alert cannot apply {type(event).__name__}")

    @_apply.register
    def _(self, event: AlertRaised) -> None:
        self.status = AlertStatus.RAISED
        self.rule_id, self.device_id, self.severity = event.rule_id, event.device_id, event.severity
        self.raised = event

    @_apply.register
    def _(self, event: AlertAcknowledged) -> None:
        self.status = AlertStatus.ACKNOWLEDGED

    @_apply.register
    def _(self, event: AlertResolved) -> None:
        self.status = AlertStatus.RESOLVED

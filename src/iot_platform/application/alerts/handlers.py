"""Command handlers for rules and alerts: load, decide, save, tell.

Every saved change is told to ``listeners`` (the rule engine, the notification channels) in
this process, after it is stored; the read model is waited for only when a person asked. The
time of every change comes from the handler's clock (the domain reads none).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from iot_platform.application.alerts.commands import (
    AcknowledgeAlert,
    ChangeRule,
    CreateRule,
    DeleteRule,
    RaiseAlert,
    ResolveAlert,
)
from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.application.clock import utcnow
from iot_platform.application.devices.commands import CommandResult
from iot_platform.application.errors import NotFound
from iot_platform.application.ports import ReadModelSync
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.alerts import (
    Alert,
    AlertAcknowledged,
    AlertResolved,
    AlertRule,
    Channel,
    Condition,
    DeviceSelector,
    Operator,
    RuleDefinition,
    Severity,
)
from iot_platform.domain.errors import InvalidValue

RuleListener = Callable[[str, RuleDefinition | None, int], None]
"""(rule id, its definition or None once deleted, the version that saved it)"""
AlertListener = Callable[[AlertNotice], None]

_SELECTOR_FIELDS = {"device_pattern", "device_type", "tags"}
_CONDITION_FIELDS = {"metric", "op", "threshold", "min", "max", "window"}
_RULE_FIELDS = {"name", "duration_seconds", "severity", "notification_channels",
                "webhook_url", "mqtt_topic", "enabled"}


def apply_changes(definition: RuleDefinition, changes: Mapping[str, Any]) -> RuleDefinition:
    """A rule body's fields, merged into a definition (the domain validates the result)."""
    unknown = set(changes) - _SELECTOR_FIELDS - _CONDITION_FIELDS - _RULE_FIELDS
    if unknown:
        raise InvalidValue("is not a field of a rule", field=sorted(unknown)[0])
    selector = dataclasses.replace(
        definition.selector, **{k: v for k, v in changes.items() if k in _SELECTOR_FIELDS}
    )
    condition_changes = {k: v for k, v in changes.items() if k in _CONDITION_FIELDS}
    if "op" in condition_changes:
        condition_changes["op"] = _member(Operator, condition_changes["op"], "op")
    condition = dataclasses.replace(definition.condition, **condition_changes)
    rest = {k: v for k, v in changes.items() if k in _RULE_FIELDS}
    if "notification_channels" in rest:
        rest["channels"] = _channels(rest.pop("notification_channels"))
    if "severity" in rest:
        rest["severity"] = _member(Severity, rest["severity"], "severity")
    return dataclasses.replace(definition, selector=selector, condition=condition, **rest)


_E = TypeVar("_E", Operator, Severity, Channel)


def _member(kind: type[_E], value: Any, field: str) -> _E:
    """``kind(value)``, or ``InvalidValue`` naming ``field`` (``None`` included)."""
    try:
        return kind(value)
    except ValueError:
        raise InvalidValue("must be one of " + ", ".join(m.value for m in kind), field=field) from None


def _channels(values: object) -> tuple[Channel, ...]:
    if not isinstance(values, list | tuple):
        raise InvalidValue("must be a list of channels", field="notification_channels")
    return tuple(_member(Channel, c, "notification_channels") for c in values)


class RuleHandler:
    def __init__(
        self,
        repository: EventSourcedRepository[AlertRule],
        read_model: ReadModelSync | None = None,
        read_your_writes_timeout: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._read_model = read_model
        self._timeout = read_your_writes_timeout
        self.listeners: list[RuleListener] = []

    async def create(self, command: CreateRule) -> CommandResult:
        rule = await self._repository.load(command.rule_id)
        rule.create(command.definition, command.context.stamped(self._clock()))
        return await self._save(rule, None)

    async def change(self, command: ChangeRule) -> CommandResult:
        rule = await self._existing(command.rule_id)
        assert rule.definition is not None
        rule.change(apply_changes(rule.definition, command.changes), command.context.stamped(self._clock()))
        return await self._save(rule, command.expected_version)

    async def delete(self, command: DeleteRule) -> CommandResult:
        rule = await self._existing(command.rule_id)
        rule.delete(command.context.stamped(self._clock()))
        return await self._save(rule, command.expected_version)

    async def _existing(self, rule_id: str) -> AlertRule:
        rule = await self._repository.load(rule_id)
        if not rule.exists:
            raise NotFound(f"rule {rule_id!r} does not exist")
        return rule

    async def _save(self, rule: AlertRule, expected_version: int | None) -> CommandResult:
        result = await self._repository.save(rule, expected_version)
        if result is None:
            return CommandResult(rule.id, rule.version, None)
        for listener in self.listeners:
            listener(rule.id, None if rule.deleted else rule.definition, result.version)
        if self._read_model is not None:
            await self._read_model.wait_for(result.last_position, self._timeout)
        return CommandResult(rule.id, result.version, result.last_position)


class AlertHandler:
    def __init__(
        self,
        repository: EventSourcedRepository[Alert],
        read_model: ReadModelSync | None = None,
        read_your_writes_timeout: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._read_model = read_model
        self._timeout = read_your_writes_timeout
        self.listeners: list[AlertListener] = []

    async def raise_alert(self, command: RaiseAlert) -> None:
        alert = await self._repository.load(command.alert_id)
        definition = command.definition
        alert.raise_(
            rule_id=command.rule_id,
            rule_name=definition.name,
            device_id=command.device_id,
            metric=definition.condition.metric,
            severity=definition.severity,
            value=command.value,
            message=command.message,
            raised_at=datetime.fromtimestamp(command.at, UTC),
            context=EventContext(actor="rule-engine", at=self._clock()),
        )
        await self._save(alert, wait=False)

    async def acknowledge(self, command: AcknowledgeAlert) -> CommandResult:
        alert = await self._existing(command.alert_id)
        alert.acknowledge(command.note, command.context.stamped(self._clock()))
        return await self._save(alert)

    async def resolve(self, command: ResolveAlert, *, automatic: bool = False) -> CommandResult:
        alert = await self._existing(command.alert_id)
        alert.resolve(command.resolution, command.context.stamped(self._clock()), automatic=automatic)
        return await self._save(alert, wait=not automatic)

    async def _existing(self, alert_id: str) -> Alert:
        alert = await self._repository.load(alert_id)
        if not alert.exists:
            raise NotFound(f"alert {alert_id!r} does not exist")
        return alert

    async def _save(self, alert: Alert, *, wait: bool = True) -> CommandResult:
        decided = alert.pending_events
        result = await self._repository.save(alert)
        if result is None:
            return CommandResult(alert.id, alert.version, None)
        for notice in _notices(alert, decided):
            for listener in self.listeners:
                listener(notice)
        if wait and self._read_model is not None:
            await self._read_model.wait_for(result.last_position, self._timeout)
        return CommandResult(alert.id, result.version, result.last_position)


def _notices(alert: Alert, events: Sequence[object]) -> list[AlertNotice]:
    raised = alert.raised
    assert raised is not None
    notices = []
    for event in events:
        kind, by, note, automatic, at = "raised", raised.actor, None, False, raised.raised_at
        if isinstance(event, AlertAcknowledged):
            kind, by, note, at = "acknowledged", event.by, event.note, event.occurred_at
        elif isinstance(event, AlertResolved):
            kind, by, note, automatic = "resolved", event.by, event.resolution, event.automatic
            at = event.occurred_at
        notices.append(
            AlertNotice(
                kind=kind,
                alert_id=alert.id,
                rule_id=raised.rule_id,
                rule_name=raised.rule_name,
                device_id=raised.device_id,
                metric=raised.metric,
                severity=raised.severity.value,
                status=alert.status.value if alert.status else kind,
                value=raised.value,
                message=raised.message,
                at=at,
                by=by,
                note=note,
                automatic=automatic,
            )
        )
    return notices


def minimal_definition(fields: Mapping[str, Any]) -> RuleDefinition:
    """A definition from a rule body (full or minimal form), validated by the domain."""
    pattern = fields.get("device_pattern")
    if pattern is None:
        pattern = fields.get("device_id")
    channels = fields.get("notification_channels") or ["sse"]
    condition = Condition(
        metric=fields["metric"],
        op=_member(Operator, fields["op"], "op"),
        threshold=fields.get("threshold"),
        min=fields.get("min"),
        max=fields.get("max"),
        window=fields.get("window"),
    )
    return RuleDefinition(
        name=fields.get("name") or f"{condition.describe()} on {pattern or 'any device'}",
        selector=DeviceSelector(
            device_pattern=pattern,
            device_type=fields.get("device_type"),
            tags=dict(fields.get("tags") or {}),
        ),
        condition=condition,
        duration_seconds=fields.get("duration_seconds") or 0.0,
        severity=_member(Severity, fields.get("severity") or "warning", "severity"),
        channels=_channels(channels),
        webhook_url=fields.get("webhook_url"),
        mqtt_topic=fields.get("mqtt_topic"),
        enabled=fields.get("enabled") is not False,
    )

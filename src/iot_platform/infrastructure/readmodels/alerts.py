"""Read models of alert rules and alerts, the projections that build them, and their queries."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import singledispatchmethod
from typing import Any

from sqlalchemy import Row, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iot_platform.application.alerts.views import AlertSearch, AlertView, DevicePresence, RuleView
from iot_platform.application.ports import RecordedEvent
from iot_platform.domain.alerts import (
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    AlertRuleChanged,
    AlertRuleCreated,
    AlertRuleDeleted,
    AlertStatus,
    Channel,
    Condition,
    DeviceSelector,
    Operator,
    RuleDefinition,
    Severity,
)
from iot_platform.domain.devices import DeviceStatus
from iot_platform.domain.errors import InvalidValue
from iot_platform.domain.events import DomainEvent
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import (
    device_presence,
    rm_alert_rules,
    rm_alerts,
    rm_devices,
)

log = logging.getLogger(__name__)

_OPEN = [AlertStatus.RAISED.value, AlertStatus.ACKNOWLEDGED.value]


def _definition_columns(definition: RuleDefinition) -> dict[str, Any]:
    selector, condition = definition.selector, definition.condition
    return {
        "name": definition.name,
        "device_pattern": selector.device_pattern,
        "device_type": selector.device_type,
        "tags": json.dumps(dict(selector.tags)),
        "metric": condition.metric,
        "op": condition.op.value,
        "threshold": condition.threshold,
        "min": condition.min,
        "max": condition.max,
        "window": condition.window,
        "duration_seconds": definition.duration_seconds,
        "severity": definition.severity.value,
        "channels": json.dumps([c.value for c in definition.channels]),
        "webhook_url": definition.webhook_url,
        "mqtt_topic": definition.mqtt_topic,
        "enabled": definition.enabled,
    }


class AlertRulesProjection:
    name = "alert_rules"
    tables: Sequence[Table] = (rm_alert_rules,)
    stream_types = frozenset({"alert_rule"})

    async def apply(self, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        await self._on(recorded.event, conn, recorded)

    @singledispatchmethod
    async def _on(self, event: DomainEvent, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        """Events this read model does not show."""

    @_on.register
    async def _(self, event: AlertRuleCreated, conn: AsyncConnection, r: RecordedEvent) -> None:
        await conn.execute(
            insert(rm_alert_rules).values(
                rule_id=r.aggregate_id,
                deleted=False,
                version=r.version,
                created_at=event.occurred_at,
                updated_at=event.occurred_at,
                **_definition_columns(event.definition),
            )
        )

    @_on.register
    async def _(self, event: AlertRuleChanged, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, **_definition_columns(event.definition))

    @_on.register
    async def _(self, event: AlertRuleDeleted, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, deleted=True)

    @staticmethod
    async def _update(conn: AsyncConnection, recorded: RecordedEvent, **values: Any) -> None:
        await conn.execute(
            update(rm_alert_rules)
            .where(rm_alert_rules.c.rule_id == recorded.aggregate_id)
            .values(version=recorded.version, updated_at=recorded.event.occurred_at, **values)
        )


class AlertsProjection:
    name = "alerts"
    tables: Sequence[Table] = (rm_alerts,)
    stream_types = frozenset({"alert"})

    async def apply(self, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        await self._on(recorded.event, conn, recorded)

    @singledispatchmethod
    async def _on(self, event: DomainEvent, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        """Events this read model does not show."""

    @_on.register
    async def _(self, event: AlertRaised, conn: AsyncConnection, r: RecordedEvent) -> None:
        await conn.execute(
            insert(rm_alerts).values(
                alert_id=r.aggregate_id,
                rule_id=event.rule_id,
                device_id=event.device_id,
                rule_name=event.rule_name,
                metric=event.metric,
                severity=event.severity.value,
                status=AlertStatus.RAISED.value,
                value=event.value,
                message=event.message,
                raised_at=event.raised_at,
                version=r.version,
            )
        )

    @_on.register
    async def _(self, event: AlertAcknowledged, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(
            conn, r,
            status=AlertStatus.ACKNOWLEDGED.value,
            acknowledged_at=event.occurred_at,
            acknowledged_by=event.by,
            note=event.note,
        )

    @_on.register
    async def _(self, event: AlertResolved, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(
            conn, r,
            status=AlertStatus.RESOLVED.value,
            resolved_at=event.occurred_at,
            resolved_by=event.by,
            resolution=event.resolution,
        )

    @staticmethod
    async def _update(conn: AsyncConnection, recorded: RecordedEvent, **values: Any) -> None:
        await conn.execute(
            update(rm_alerts)
            .where(rm_alerts.c.alert_id == recorded.aggregate_id)
            .values(version=recorded.version, **values)
        )


def _rule_view(row: Row[Any]) -> RuleView:
    m = row._mapping
    definition = RuleDefinition(
        name=m["name"],
        selector=DeviceSelector(m["device_pattern"], m["device_type"], json.loads(m["tags"])),
        condition=Condition(
            metric=m["metric"], op=Operator(m["op"]), threshold=m["threshold"],
            min=m["min"], max=m["max"], window=m["window"],
        ),
        duration_seconds=m["duration_seconds"],
        severity=Severity(m["severity"]),
        channels=tuple(Channel(c) for c in json.loads(m["channels"])),
        webhook_url=m["webhook_url"],
        mqtt_topic=m["mqtt_topic"],
        enabled=m["enabled"],
    )
    return RuleView(m["rule_id"], definition, m["version"], m["created_at"], m["updated_at"])


def _alert_view(row: Row[Any]) -> AlertView:
    m = dict(row._mapping)
    m["severity"] = Severity(m["severity"])
    m["status"] = AlertStatus(m["status"])
    return AlertView(**m)


class SqlAlertReadModel:
    def __init__(self, engine: AsyncEngine) -> None:
        self._reader = reader(engine)

    async def rule(self, rule_id: str) -> RuleView | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(
                select(rm_alert_rules)
                .where(rm_alert_rules.c.rule_id == rule_id)
                .where(rm_alert_rules.c.deleted.is_(False))
            )).first()
        return None if row is None else _rule_view(row)

    async def rules(self, *, include_disabled: bool = True) -> list[RuleView]:
        query = select(rm_alert_rules).where(rm_alert_rules.c.deleted.is_(False))
        if not include_disabled:
            query = query.where(rm_alert_rules.c.enabled.is_(True))
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query.order_by(rm_alert_rules.c.created_at, rm_alert_rules.c.rule_id))).all()
        views = []
        for row in rows:
            try:
                views.append(_rule_view(row))
            except (InvalidValue, ValueError, TypeError) as exc:
                # A row the domain no longer accepts is left out (and said), not fatal to every
                # reader of the rules (the rule engine loads them at start).
                log.error("rule %s in the read model is not a valid rule, left out: %s",
                          row._mapping["rule_id"], exc)
        return views

    async def alert(self, alert_id: str) -> AlertView | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(rm_alerts).where(rm_alerts.c.alert_id == alert_id))).first()
        return None if row is None else _alert_view(row)

    async def alerts(self, search: AlertSearch) -> list[AlertView]:
        c = rm_alerts.c
        query = select(rm_alerts)
        if search.status is not None:
            query = query.where(c.status == search.status.value)
        if search.open_only:
            query = query.where(c.status.in_(_OPEN))
        if search.severity is not None:
            query = query.where(c.severity == search.severity.value)
        if search.device_id is not None:
            query = query.where(c.device_id == search.device_id)
        if search.rule_id is not None:
            query = query.where(c.rule_id == search.rule_id)
        if search.raised_from is not None:
            query = query.where(c.raised_at >= search.raised_from)
        if search.raised_to is not None:
            query = query.where(c.raised_at < search.raised_to)
        query = query.order_by(c.raised_at.desc(), c.alert_id).limit(search.limit).offset(search.offset)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_alert_view(r) for r in rows]

    async def open_alerts(self) -> list[AlertView]:
        async with self._reader.connect() as conn:
            rows = (await conn.execute(select(rm_alerts).where(rm_alerts.c.status.in_(_OPEN)))).all()
        return [_alert_view(r) for r in rows]

    async def presence(self) -> list[DevicePresence]:
        query = (
            select(rm_devices.c.device_id, rm_devices.c.device_type, rm_devices.c.tags,
                   device_presence.c.last_seen)
            .select_from(rm_devices.outerjoin(
                device_presence, device_presence.c.device_id == rm_devices.c.device_id))
            .where(rm_devices.c.status != DeviceStatus.DECOMMISSIONED.value)
        )
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            DevicePresence(device_id, device_type, json.loads(tags),
                           None if last_seen is None else last_seen.timestamp())
            for device_id, device_type, tags, last_seen in rows
        ]

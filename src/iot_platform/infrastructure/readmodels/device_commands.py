"""The command-status read model: one row per command in rm_device_commands, and its queries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import singledispatchmethod
from typing import Any

from sqlalchemy import Row, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iot_platform.application.commands.ports import CommandView
from iot_platform.application.ports import RecordedEvent
from iot_platform.domain.commands import (
    FINAL_STATUSES,
    PENDING_STATUSES,
    CommandDelivered,
    CommandExpired,
    CommandFailed,
    CommandIssued,
    CommandSent,
    CommandStatus,
    CommandSucceeded,
    DeviceCommand,
)
from iot_platform.domain.events import DomainEvent
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import rm_device_commands

_t = rm_device_commands


class DeviceCommandsProjection:
    name = "device_commands"
    tables: Sequence[Table] = (rm_device_commands,)
    stream_types = frozenset({DeviceCommand.stream_type})

    async def apply(self, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        if recorded.stream_type == DeviceCommand.stream_type:
            await self._on(recorded.event, conn, recorded)

    @singledispatchmethod
    async def _on(self, event: DomainEvent, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        """Events this read model does not show."""

    @_on.register
    async def _(self, event: CommandIssued, conn: AsyncConnection, r: RecordedEvent) -> None:
        await conn.execute(
            insert(_t).values(
                command_id=r.aggregate_id,
                device_id=event.device_id,
                command=event.command,
                parameters=json.dumps(event.parameters),
                status=CommandStatus.ISSUED.value,
                result=None,
                issued_by=event.actor,
                issued_at=event.occurred_at,
                expires_at=event.expires_at,
                version=r.version,
            )
        )

    @_on.register
    async def _(self, event: CommandSent, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, status=CommandStatus.SENT.value, sent_at=event.occurred_at)

    @_on.register
    async def _(self, event: CommandDelivered, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(
            conn, r, status=CommandStatus.DELIVERED.value, delivered_at=event.occurred_at
        )

    @_on.register
    async def _(self, event: CommandSucceeded, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(
            conn,
            r,
            status=CommandStatus.SUCCEEDED.value,
            result=json.dumps(event.result),
            completed_at=event.occurred_at,
        )

    @_on.register
    async def _(self, event: CommandFailed, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(
            conn,
            r,
            status=CommandStatus.FAILED.value,
            result=json.dumps(event.result),
            completed_at=event.occurred_at,
        )

    @_on.register
    async def _(self, event: CommandExpired, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(
            conn, r, status=CommandStatus.EXPIRED.value, completed_at=event.occurred_at
        )

    @staticmethod
    async def _update(conn: AsyncConnection, r: RecordedEvent, **values: Any) -> None:
        # The version guard makes a redelivered event a no-op.
        await conn.execute(
            update(_t)
            .where(_t.c.command_id == r.aggregate_id)
            .where(_t.c.version < r.version)
            .values(version=r.version, **values)
        )


def _view(row: Row[Any]) -> CommandView:
    return CommandView(
        command_id=row.command_id,
        device_id=row.device_id,
        command=row.command,
        parameters=json.loads(row.parameters),
        status=CommandStatus(row.status),
        result=None if row.result is None else json.loads(row.result),
        issued_by=row.issued_by,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        sent_at=row.sent_at,
        delivered_at=row.delivered_at,
        completed_at=row.completed_at,
        version=row.version,
    )


class SqlCommandQueries:
    """Implements ``CommandQueries``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._reader = reader(engine)

    async def get(self, command_id: str) -> CommandView | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(_t).where(_t.c.command_id == command_id))).first()
        return None if row is None else _view(row)

    async def for_device(
        self, device_id: str, status: CommandStatus | None = None, limit: int = 50
    ) -> list[CommandView]:
        query = select(_t).where(_t.c.device_id == device_id)
        if status is not None:
            query = query.where(_t.c.status == status.value)
        query = query.order_by(_t.c.issued_at.desc(), _t.c.command_id.desc()).limit(limit)
        async with self._reader.connect() as conn:
            return [_view(row) for row in await conn.execute(query)]

    async def pending(self, device_id: str, now: datetime) -> list[CommandView]:
        query = (
            select(_t)
            .where(_t.c.device_id == device_id)
            .where(_t.c.status.in_([s.value for s in PENDING_STATUSES]))
            .where(_t.c.expires_at > now)
            .order_by(_t.c.issued_at, _t.c.command_id)
        )
        async with self._reader.connect() as conn:
            return [_view(row) for row in await conn.execute(query)]

    async def due(self, now: datetime, limit: int) -> list[str]:
        unfinished = [s.value for s in CommandStatus if s not in FINAL_STATUSES]
        query = (
            select(_t.c.command_id)
            .where(_t.c.status.in_(unfinished))
            .where(_t.c.expires_at <= now)
            .order_by(_t.c.expires_at)
            .limit(limit)
        )
        async with self._reader.connect() as conn:
            return [str(command_id) for command_id in (await conn.scalars(query)).all()]

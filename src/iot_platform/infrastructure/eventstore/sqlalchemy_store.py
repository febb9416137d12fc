"""The event store on SQLAlchemy 2 async: SQLite (aiosqlite) or PostgreSQL (asyncpg).

An append takes, in this order, the stream row (optimistic check on its version) and then the
single position-counter row. Holding the counter row to commit serializes appenders for the
length of one short transaction; in exchange the global order is gap-free and positions become
visible in order, which is what lets a subscriber keep a single number as its checkpoint.

Round trips, not rows, are what an append costs (see tools/bench_eventstore.py), so on
PostgreSQL the stream check and the counter bump are one statement, and the outbox rows are
copied from the new events by one INSERT ... SELECT on both backends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iot_platform.application.clock import utcnow
from iot_platform.application.errors import ConcurrencyError
from iot_platform.application.ports import AppendResult, RecordedEvent, UnreadableEvent
from iot_platform.domain.aggregate import Snapshot
from iot_platform.domain.events import DomainEvent
from iot_platform.infrastructure.eventstore.serialization import EventSerializer
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import (
    events,
    outbox,
    position_counter,
    snapshots,
    streams,
)


def stream_id_of(stream_type: str, aggregate_id: str) -> str:
    return f"{stream_type}:{aggregate_id}"


# PostgreSQL: take the stream (compare-and-set, or create) and then the counter in one round
# trip. No row back means the stream was not at the expected version.
_PG_CLAIM_EXISTING = text(
    """
    WITH stream AS (
        UPDATE event_streams SET version = :new_version
        WHERE stream_id = :stream_id AND version = :expected_version
        RETURNING 1
    )
    UPDATE event_position_counter SET last_position = last_position + :count
    WHERE id = 1 AND EXISTS (SELECT 1 FROM stream)
    RETURNING last_position
    """
)
_PG_CLAIM_NEW = text(
    """
    WITH stream AS (
        INSERT INTO event_streams (stream_id, stream_type, version)
        VALUES (:stream_id, :stream_type, :new_version)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING 1
    )
    UPDATE event_position_counter SET last_position = last_position + :count
    WHERE id = 1 AND EXISTS (SELECT 1 FROM stream)
    RETURNING last_position
    """
)


class SqlAlchemyEventStore:
    def __init__(self, engine: AsyncEngine, serializer: EventSerializer) -> None:
        self._engine = engine
        self._reader = reader(engine)
        self._serializer = serializer
        self._listeners: list[Callable[[int], None]] = []

    def on_append(self, listener: Callable[[int], None]) -> None:
        """In-process wake-up for subscribers; they still poll for other processes' writes."""
        self._listeners.append(listener)

    async def append(
        self,
        stream_type: str,
        aggregate_id: str,
        events_: Sequence[DomainEvent],
        expected_version: int,
        snapshot: Snapshot | None = None,
    ) -> AppendResult:
        if not events_:
            raise ValueError("nothing to append")
        stream_id = stream_id_of(stream_type, aggregate_id)
        count = len(events_)
        new_version = expected_version + count
        recorded_at = utcnow()
        # Serialize before taking any lock: the lock is held only for the writes.
        rows: list[dict[str, Any]] = [
            {
                "stream_id": stream_id,
                "version": expected_version + i + 1,
                "event_type": event.event_type(),
                "schema_version": event.schema_version,
                "occurred_at": event.occurred_at,
                "recorded_at": recorded_at,
                "correlation_id": event.correlation_id,
                "data": self._serializer.serialize(event),
            }
            for i, event in enumerate(events_)
        ]
        claim = {
            "stream_id": stream_id,
            "stream_type": stream_type,
            "expected_version": expected_version,
            "new_version": new_version,
            "count": count,
        }
        try:
            async with self._engine.begin() as conn:
                last = await self._claim(conn, claim)
                first = last - count + 1
                for i, row in enumerate(rows):
                    row["position"] = first + i
                await conn.execute(insert(events), rows if count > 1 else rows[0])
                await conn.execute(
                    insert(outbox).from_select(
                        ["position"],
                        select(events.c.position).where(events.c.position.between(first, last)),
                    )
                )
                if snapshot is not None:
                    await self._write_snapshot(conn, stream_id, snapshot, recorded_at)
        except IntegrityError:
            # Only a concurrent first append to the same stream gets here (duplicate stream id).
            raise ConcurrencyError(stream_id, expected_version, None) from None
        for listener in self._listeners:
            listener(last)
        return AppendResult(version=new_version, first_position=first, last_position=last)

    async def _claim(self, conn: AsyncConnection, claim: dict[str, Any]) -> int:
        """Moves the stream to its new version and reserves positions; returns the last one."""
        stream_id, expected = claim["stream_id"], claim["expected_version"]
        if conn.dialect.name == "postgresql":
            statement = _PG_CLAIM_NEW if expected == 0 else _PG_CLAIM_EXISTING
            last = (await conn.execute(statement, claim)).scalar()
            if last is None:
                raise ConcurrencyError(stream_id, expected, await self._version(conn, stream_id))
            return int(last)
        if expected == 0:
            await conn.execute(
                insert(streams).values(
                    stream_id=stream_id,
                    stream_type=claim["stream_type"],
                    version=claim["new_version"],
                )
            )
        else:
            moved = await conn.execute(
                update(streams)
                .where(streams.c.stream_id == stream_id)
                .where(streams.c.version == expected)
                .values(version=claim["new_version"])
            )
            if moved.rowcount != 1:
                raise ConcurrencyError(stream_id, expected, await self._version(conn, stream_id))
        bumped = await conn.execute(
            update(position_counter)
            .where(position_counter.c.id == 1)
            .values(last_position=position_counter.c.last_position + claim["count"])
            .returning(position_counter.c.last_position)
        )
        return int(bumped.scalar_one())

    @staticmethod
    async def _version(conn: AsyncConnection, stream_id: str) -> int:
        version = await conn.scalar(select(streams.c.version).where(streams.c.stream_id == stream_id))
        return int(version or 0)

    @staticmethod
    async def _write_snapshot(conn: Any, stream_id: str, snapshot: Snapshot, at: Any) -> None:
        await conn.execute(delete(snapshots).where(snapshots.c.stream_id == stream_id))
        await conn.execute(
            insert(snapshots).values(
                stream_id=stream_id,
                version=snapshot.version,
                schema_version=snapshot.schema_version,
                state=json.dumps(snapshot.state),
                taken_at=at,
            )
        )

    async def read_stream(
        self, stream_type: str, aggregate_id: str, after_version: int = 0
    ) -> list[RecordedEvent]:
        query = (
            select(events)
            .where(events.c.stream_id == stream_id_of(stream_type, aggregate_id))
            .where(events.c.version > after_version)
            .order_by(events.c.version)
        )
        async with self._reader.connect() as conn:
            result = await conn.execute(query)
            return [self._recorded(row) for row in result.mappings()]

    async def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        query = (
            select(events)
            .where(events.c.position > after_position)
            .order_by(events.c.position)
            .limit(limit)
        )
        async with self._reader.connect() as conn:
            result = await conn.execute(query)
            return [self._recorded(row) for row in result.mappings()]

    async def latest_snapshot(self, stream_type: str, aggregate_id: str) -> Snapshot | None:
        query = select(snapshots).where(
            snapshots.c.stream_id == stream_id_of(stream_type, aggregate_id)
        )
        async with self._reader.connect() as conn:
            return await self._snapshot(conn, query, aggregate_id)

    async def read_from_snapshot(
        self, stream_type: str, aggregate_id: str
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        stream_id = stream_id_of(stream_type, aggregate_id)
        async with self._reader.connect() as conn:
            snapshot = await self._snapshot(
                conn, select(snapshots).where(snapshots.c.stream_id == stream_id), aggregate_id
            )
            result = await conn.execute(
                select(events)
                .where(events.c.stream_id == stream_id)
                .where(events.c.version > (snapshot.version if snapshot else 0))
                .order_by(events.c.version)
            )
            return snapshot, [self._recorded(row) for row in result.mappings()]

    @staticmethod
    async def _snapshot(conn: AsyncConnection, query: Any, aggregate_id: str) -> Snapshot | None:
        row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return Snapshot(aggregate_id, row["version"], row["schema_version"], json.loads(row["state"]))

    async def pending_outbox(self, limit: int) -> list[RecordedEvent]:
        query = (
            select(events)
            .join(outbox, outbox.c.position == events.c.position)
            .order_by(events.c.position)
            .limit(limit)
        )
        async with self._reader.connect() as conn:
            result = await conn.execute(query)
            return [self._recorded(row) for row in result.mappings()]

    async def mark_published(self, positions: Sequence[int]) -> None:
        if not positions:
            return
        async with self._engine.begin() as conn:
            await conn.execute(delete(outbox).where(outbox.c.position.in_(list(positions))))

    async def last_position(self) -> int:
        async with self._reader.connect() as conn:
            value = await conn.scalar(select(position_counter.c.last_position))
        return int(value or 0)

    async def check(self) -> None:
        """Raises unless the database answers; the readiness probe."""
        async with self._reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def _recorded(self, row: Any) -> RecordedEvent:
        stream_type, _, aggregate_id = row["stream_id"].partition(":")
        event: DomainEvent
        try:
            event = self._serializer.deserialize(row["event_type"], row["schema_version"], row["data"])
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is this one event's problem
            # One unreadable event must not fail every read of the log: it is handed out as
            # what it is, and each reader decides (a projection stalls, a load refuses).
            event = UnreadableEvent(
                aggregate_id=aggregate_id,
                occurred_at=row["occurred_at"],
                correlation_id=row["correlation_id"],
                stored_type=row["event_type"],
                stored_schema_version=row["schema_version"],
                data=row["data"],
                error=_describe(exc),
            )
        return RecordedEvent(
            position=row["position"],
            stream_type=stream_type,
            aggregate_id=aggregate_id,
            version=row["version"],
            event=event,
            recorded_at=row["recorded_at"],
        )


def _describe(exc: Exception) -> str:
    """One line: the exception's type and its first line (a ValidationError names the field)."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"ValidationError: {where}: {first['msg']} ({exc.error_count()} errors)"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:500]

"""The event store on SQLAlchemy 2 async: SQLite (aiosqlite) or PostgreSQL (asyncpg).

An append takes, in this order, the stream row (optimistic check on its version) and then the
single position-counter row. Holding the counter row to commit serializes appenders for the
length of one short transaction; in exchange the global order is gap-free and positions become
visible in order, which is what lets a subscriber keep a single number as its checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.errors import ConcurrencyError
from iot_platform.application.ports import AppendResult, RecordedEvent
from iot_platform.domain.aggregate import Snapshot
from iot_platform.domain.events import DomainEvent, utcnow
from iot_platform.infrastructure.eventstore.serialization import EventSerializer
from iot_platform.infrastructure.persistence.schema import (
    events,
    outbox,
    position_counter,
    snapshots,
    streams,
)


def stream_id_of(stream_type: str, aggregate_id: str) -> str:
    return f"{stream_type}:{aggregate_id}"


class SqlAlchemyEventStore:
    def __init__(self, engine: AsyncEngine, serializer: EventSerializer) -> None:
        self._engine = engine
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
        try:
            async with self._engine.begin() as conn:
                if expected_version == 0:
                    await conn.execute(
                        insert(streams).values(
                            stream_id=stream_id, stream_type=stream_type, version=new_version
                        )
                    )
                else:
                    moved = await conn.execute(
                        update(streams)
                        .where(streams.c.stream_id == stream_id)
                        .where(streams.c.version == expected_version)
                        .values(version=new_version)
                    )
                    if moved.rowcount != 1:
                        actual = await conn.scalar(
                            select(streams.c.version).where(streams.c.stream_id == stream_id)
                        )
                        raise ConcurrencyError(stream_id, expected_version, actual or 0)
                last = (
                    await conn.execute(
                        update(position_counter)
                        .where(position_counter.c.id == 1)
                        .values(last_position=position_counter.c.last_position + count)
                        .returning(position_counter.c.last_position)
                    )
                ).scalar_one()
                first = last - count + 1
                for i, row in enumerate(rows):
                    row["position"] = first + i
                await conn.execute(insert(events), rows)
                await conn.execute(insert(outbox), [{"position": r["position"]} for r in rows])
                if snapshot is not None:
                    await self._write_snapshot(conn, stream_id, snapshot, recorded_at)
        except IntegrityError:
            # Only a concurrent first append to the same stream gets here (duplicate stream id).
            raise ConcurrencyError(stream_id, expected_version, None) from None
        for listener in self._listeners:
            listener(last)
        return AppendResult(version=new_version, first_position=first, last_position=last)

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
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [self._recorded(row) for row in result.mappings()]

    async def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        query = (
            select(events)
            .where(events.c.position > after_position)
            .order_by(events.c.position)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            result = await conn.execute(query)
            return [self._recorded(row) for row in result.mappings()]

    async def latest_snapshot(self, stream_type: str, aggregate_id: str) -> Snapshot | None:
        query = select(snapshots).where(
            snapshots.c.stream_id == stream_id_of(stream_type, aggregate_id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return Snapshot(aggregate_id, row["version"], row["schema_version"], json.loads(row["state"]))

    async def last_position(self) -> int:
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(position_counter.c.last_position))
        return int(value or 0)

    async def check(self) -> None:
        """Raises unless the database answers; the readiness probe."""
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def _recorded(self, row: Any) -> RecordedEvent:
        stream_type, _, aggregate_id = row["stream_id"].partition(":")
        return RecordedEvent(
            position=row["position"],
            stream_type=stream_type,
            aggregate_id=aggregate_id,
            version=row["version"],
            event=self._serializer.deserialize(
                row["event_type"], row["schema_version"], row["data"]
            ),
            recorded_at=row["recorded_at"],
        )

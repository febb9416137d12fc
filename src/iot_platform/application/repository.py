"""Loads aggregates from their streams (snapshot + tail) and saves their pending events."""

from __future__ import annotations

from typing import Generic, TypeVar

from iot_platform.application.errors import ConcurrencyError, UnreadableHistory
from iot_platform.application.ports import AppendResult, EventStore, UnreadableEvent
from iot_platform.domain.aggregate import Aggregate

A = TypeVar("A", bound=Aggregate)


class EventSourcedRepository(Generic[A]):
    def __init__(self, store: EventStore, aggregate_type: type[A], snapshot_every: int) -> None:
        self._store = store
        self._type = aggregate_type
        self._snapshot_every = snapshot_every

    async def load(self, aggregate_id: str) -> A:
        """The aggregate at its current version; a blank one (version 0) if it has no stream."""
        stream_type = self._type.stream_type
        snapshot, tail = await self._store.read_from_snapshot(stream_type, aggregate_id)
        if snapshot is not None and not self._type.accepts_snapshot(snapshot):
            # Taken under an older state layout: replay the whole stream instead.
            snapshot = None
            tail = await self._store.read_stream(stream_type, aggregate_id)
        for recorded in tail:
            if isinstance(recorded.event, UnreadableEvent):
                raise UnreadableHistory(recorded.stream_id, recorded.position,
                                        recorded.event.stored_type, recorded.event.error)
        return self._type.rehydrate(aggregate_id, (r.event for r in tail), snapshot)

    async def save(self, aggregate: A, expected_version: int | None = None) -> AppendResult | None:
        """Appends what the aggregate decided; ``expected_version`` is a client's If-Match.

        Returns None when the command decided nothing (an update that changed nothing).
        """
        pending = aggregate.pending_events
        loaded_version = aggregate.version - len(pending)
        if expected_version is not None and expected_version != loaded_version:
            raise ConcurrencyError(
                f"{self._type.stream_type}:{aggregate.id}", expected_version, loaded_version
            )
        if not pending:
            return None
        every = self._snapshot_every
        crossed = every > 0 and aggregate.version // every > loaded_version // every
        result = await self._store.append(
            self._type.stream_type,
            aggregate.id,
            pending,
            expected_version=loaded_version,
            snapshot=aggregate.snapshot() if crossed else None,
        )
        aggregate.mark_committed()
        return result

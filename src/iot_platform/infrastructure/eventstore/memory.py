"""The event store in process memory: the same contract as the SQL store, with nothing to run.

For a platform whose history may die with it (a demo, a test of the layers above the store).
Appends are atomic because nothing in ``append`` awaits: on one event loop no other writer can
come between the version check and the write, so the optimistic check and the gap-free global
order hold exactly as they do in the database. Snapshots are kept as JSON text, as the SQL store
keeps them, so a state that would not survive storage fails here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from iot_platform.application.clock import utcnow
from iot_platform.application.errors import ConcurrencyError
from iot_platform.application.ports import AppendResult, RecordedEvent
from iot_platform.domain.aggregate import Snapshot
from iot_platform.domain.events import DomainEvent


class InMemoryEventStore:
    """``EventStore`` and ``Outbox`` over lists; positions are indexes into the log plus one."""

    def __init__(self) -> None:
        self._log: list[RecordedEvent] = []
        self._streams: dict[tuple[str, str], list[RecordedEvent]] = {}
        self._snapshots: dict[tuple[str, str], tuple[int, int, str]] = {}
        self._outbox: set[int] = set()
        self._listeners: list[Callable[[int], None]] = []

    @property
    def events(self) -> Sequence[RecordedEvent]:
        """The whole log in position order: a reader in the same process needs no paging."""
        return tuple(self._log)

    def on_append(self, listener: Callable[[int], None]) -> None:
        """Called with the last position of every append, as the SQL store's listeners are."""
        self._listeners.append(listener)

    async def append(
        self,
        stream_type: str,
        aggregate_id: str,
        events: Sequence[DomainEvent],
        expected_version: int,
        snapshot: Snapshot | None = None,
    ) -> AppendResult:
        if not events:
            raise ValueError("nothing to append")
        key = (stream_type, aggregate_id)
        stream = self._streams.get(key, [])
        if len(stream) != expected_version:
            raise ConcurrencyError(f"{stream_type}:{aggregate_id}", expected_version, len(stream))
        recorded_at = utcnow()
        first = len(self._log) + 1
        added = [
            RecordedEvent(first + i, stream_type, aggregate_id, expected_version + i + 1, event, recorded_at)
            for i, event in enumerate(events)
        ]
        self._streams[key] = stream + added
        self._log.extend(added)
        self._outbox.update(r.position for r in added)
        if snapshot is not None:
            self._snapshots[key] = (snapshot.version, snapshot.schema_version, json.dumps(snapshot.state))
        last = added[-1].position
        for listener in self._listeners:
            listener(last)
        return AppendResult(version=expected_version + len(events), first_position=first, last_position=last)

    async def read_stream(
        self, stream_type: str, aggregate_id: str, after_version: int = 0
    ) -> list[RecordedEvent]:
        return self._streams.get((stream_type, aggregate_id), [])[after_version:]

    async def latest_snapshot(self, stream_type: str, aggregate_id: str) -> Snapshot | None:
        kept = self._snapshots.get((stream_type, aggregate_id))
        if kept is None:
            return None
        version, schema_version, state = kept
        return Snapshot(aggregate_id, version, schema_version, json.loads(state))

    async def read_from_snapshot(
        self, stream_type: str, aggregate_id: str
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        snapshot = await self.latest_snapshot(stream_type, aggregate_id)
        tail = await self.read_stream(stream_type, aggregate_id, snapshot.version if snapshot else 0)
        return snapshot, tail

    async def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        return self._log[after_position : after_position + limit]

    async def last_position(self) -> int:
        return len(self._log)

    async def pending_outbox(self, limit: int) -> list[RecordedEvent]:
        return [self._log[position - 1] for position in sorted(self._outbox)[:limit]]

    async def mark_published(self, positions: Sequence[int]) -> None:
        self._outbox.difference_update(positions)

    async def check(self) -> None:
        """Always answers: the readiness probe of a store that is this process."""

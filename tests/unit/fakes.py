"""Fakes behind the application ports, for unit tests only."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from iot_platform.application.errors import ConcurrencyError
from iot_platform.application.ports import AppendResult, RecordedEvent
from iot_platform.domain.aggregate import Snapshot
from iot_platform.domain.events import DomainEvent


class InMemoryEventStore:
    def __init__(self) -> None:
        self.events: list[RecordedEvent] = []
        self.snapshots: dict[tuple[str, str], Snapshot] = {}
        self.outbox: list[int] = []

    async def append(
        self,
        stream_type: str,
        aggregate_id: str,
        events: Sequence[DomainEvent],
        expected_version: int,
        snapshot: Snapshot | None = None,
    ) -> AppendResult:
        current = len([r for r in self.events if (r.stream_type, r.aggregate_id) == (stream_type, aggregate_id)])
        if current != expected_version:
            raise ConcurrencyError(f"{stream_type}:{aggregate_id}", expected_version, current)
        first = len(self.events) + 1
        for i, event in enumerate(events):
            self.events.append(
                RecordedEvent(first + i, stream_type, aggregate_id, current + i + 1, event, datetime.now(UTC))
            )
            self.outbox.append(first + i)
        if snapshot is not None:
            self.snapshots[(stream_type, aggregate_id)] = snapshot
        return AppendResult(current + len(events), first, len(self.events))

    async def read_stream(
        self, stream_type: str, aggregate_id: str, after_version: int = 0
    ) -> list[RecordedEvent]:
        return [
            r
            for r in self.events
            if (r.stream_type, r.aggregate_id) == (stream_type, aggregate_id) and r.version > after_version
        ]

    async def latest_snapshot(self, stream_type: str, aggregate_id: str) -> Snapshot | None:
        return self.snapshots.get((stream_type, aggregate_id))

    async def read_from_snapshot(
        self, stream_type: str, aggregate_id: str
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        snapshot = await self.latest_snapshot(stream_type, aggregate_id)
        after = snapshot.version if snapshot else 0
        return snapshot, await self.read_stream(stream_type, aggregate_id, after)

    async def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]:
        return self.events[after_position : after_position + limit]

    async def pending_outbox(self, limit: int) -> list[RecordedEvent]:
        waiting = set(self.outbox)
        return [r for r in self.events if r.position in waiting][:limit]

    async def mark_published(self, positions: Sequence[int]) -> None:
        done = set(positions)
        self.outbox = [p for p in self.outbox if p not in done]

    async def last_position(self) -> int:
        return len(self.events)


class RecordingReadModel:
    """A ReadModelSync that remembers what it was asked to wait for."""

    def __init__(self) -> None:
        self.waited_for: list[int] = []

    async def wait_for(self, position: int, timeout: float) -> bool:
        self.waited_for.append(position)
        return True

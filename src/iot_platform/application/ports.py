"""Ports of the write side and the projection machinery.

Adapters: ``SqlAlchemyEventStore`` (SQLite and PostgreSQL); the unit tests' in-memory fake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from iot_platform.domain.aggregate import Snapshot
from iot_platform.domain.events import DomainEvent


@dataclass(frozen=True, kw_only=True)
class UnreadableEvent(DomainEvent):
    """Stands in for a stored event this release cannot read (no class or upcaster for its type
    and schema version, or data that does not fit the class). The store hands it out instead of
    failing the whole read, so one bad event holds back only what needs it: the projections
    that read its stream stall on it (see the projection runner) and loading its aggregate
    raises ``UnreadableHistory``; everything else goes on."""

    stored_type: str
    stored_schema_version: int
    data: str
    error: str


@dataclass(frozen=True)
class RecordedEvent:
    """A domain event as stored: its place in its stream and in the global order."""

    position: int
    stream_type: str
    aggregate_id: str
    version: int
    event: DomainEvent
    recorded_at: datetime

    @property
    def stream_id(self) -> str:
        return f"{self.stream_type}:{self.aggregate_id}"


@dataclass(frozen=True)
class AppendResult:
    version: int
    first_position: int
    last_position: int


class EventStore(Protocol):
    """An append-only log of streams with one global, gap-free order over all of them.

    ``append`` writes a batch to one stream atomically, together with one outbox row per event
    and, if given, a snapshot. It raises ``ConcurrencyError`` unless the stream is at
    ``expected_version`` (0 = the stream must not exist). Positions are assigned in commit
    order, so a reader that has seen position N will never later find an event below N.
    """

    async def append(
        self,
        stream_type: str,
        aggregate_id: str,
        events: Sequence[DomainEvent],
        expected_version: int,
        snapshot: Snapshot | None = None,
    ) -> AppendResult: ...

    async def read_stream(
        self, stream_type: str, aggregate_id: str, after_version: int = 0
    ) -> list[RecordedEvent]: ...

    async def latest_snapshot(self, stream_type: str, aggregate_id: str) -> Snapshot | None: ...

    async def read_from_snapshot(
        self, stream_type: str, aggregate_id: str
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """The latest snapshot and the events after it, read consistently in one go."""
        ...

    async def read_all(self, after_position: int, limit: int) -> list[RecordedEvent]: ...

    async def last_position(self) -> int: ...


class ReadModelSync(Protocol):
    """Lets a command's caller read its own write: wait until projections reach a position."""

    async def wait_for(self, position: int, timeout: float) -> bool: ...


class Outbox(Protocol):
    """The event store's outbox: events appended but not yet published to the broker."""

    async def pending_outbox(self, limit: int) -> list[RecordedEvent]:
        """The oldest unpublished events, in position order."""
        ...

    async def mark_published(self, positions: Sequence[int]) -> None: ...


class DomainEventPublisher(Protocol):
    """Publishes recorded events to the domain-events topic, in the order given."""

    async def publish(self, events: Sequence[RecordedEvent]) -> None:
        """Returns once the broker has acknowledged every event; raises if it could not."""
        ...


class PlatformEventStore(EventStore, Outbox, Protocol):
    """The event store a running platform stands on: besides the log and its outbox, it wakes
    in-process readers (projections, the relay) as soon as it appends, rather than at their
    next poll, and answers the readiness probe."""

    def on_append(self, listener: Callable[[int], None]) -> None: ...

    async def check(self) -> None:
        """Raises unless the store answers."""
        ...


class EventEncoder(Protocol):
    """Turns a domain event into the JSON object a device's history shows."""

    def to_jsonable(self, event: DomainEvent) -> dict[str, Any]: ...


class StalledProjection(Protocol):
    """A projection stopped just before ``position``, at an event it could not apply."""

    @property
    def projection(self) -> str: ...

    @property
    def position(self) -> int: ...

    @property
    def event_type(self) -> str: ...

    @property
    def error(self) -> str: ...


class ProjectionHealth(Protocol):
    async def stalled(self) -> Sequence[StalledProjection]:
        """Every stalled projection, whichever process runs it."""
        ...

"""The aggregate base: decide by triggering events, change state only by applying them.

An aggregate method checks its invariants and calls ``_trigger``; ``_trigger`` applies the event
(the only place state changes) and queues it for the repository. Rehydration is the same fold
over stored events, optionally starting from a snapshot of an earlier version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Self

from iot_platform.domain.events import DomainEvent


@dataclass(frozen=True)
class Snapshot:
    """An aggregate's state at ``version``; ``schema_version`` guards against stale layouts."""

    aggregate_id: str
    version: int
    schema_version: int
    state: dict[str, Any]


@dataclass(frozen=True)
class EventContext:
    """Who asked for a change, under which correlation id and when; stamped on every event it
    causes. ``at`` comes from the application's clock: the domain reads none."""

    actor: str = "system"
    correlation_id: str | None = None
    at: datetime | None = None

    def stamped(self, now: datetime) -> EventContext:
        """This context with ``now`` as its time, unless it already has one."""
        return self if self.at is not None else replace(self, at=now)


class Aggregate:
    """Base class. Subclasses define ``stream_type`` and ``_apply``, a ``singledispatchmethod``
    with one handler per event type (an event it has no handler for is a TypeError, never
    silently skipped)."""

    stream_type: ClassVar[str]
    snapshot_schema_version: ClassVar[int] = 1

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self._pending: list[DomainEvent] = []

    # -- decide -------------------------------------------------------------------------
    def _trigger(self, event: DomainEvent) -> None:
        self._apply(event)
        self.version += 1
        self._pending.append(event)

    def _apply(self, event: DomainEvent) -> None:
        raise NotImplementedError

    def _meta(self, context: EventContext, now: datetime | None = None) -> dict[str, Any]:
        """The fields every event of this aggregate carries: its id, who caused it, under which
        correlation id, and when (``now`` if given, else the context's time; one of them must be
        set, since the domain reads no clock)."""
        occurred_at = now if now is not None else context.at
        if occurred_at is None:
            raise ValueError(
                f"{type(self).__name__} {self.id}: an event needs a time; stamp the context "
                "with the application's clock"
            )
        meta: dict[str, Any] = {"aggregate_id": self.id, "actor": context.actor, "occurred_at": occurred_at}
        if context.correlation_id:
            meta["correlation_id"] = context.correlation_id
        return meta

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        return tuple(self._pending)

    def mark_committed(self) -> None:
        self._pending.clear()

    # -- rehydrate ----------------------------------------------------------------------
    @classmethod
    def _blank(cls, aggregate_id: str) -> Self:
        return cls(aggregate_id)

    @classmethod
    def rehydrate(
        cls, aggregate_id: str, events: Iterable[DomainEvent], snapshot: Snapshot | None = None
    ) -> Self:
        aggregate = cls._blank(aggregate_id)
        if snapshot is not None:
            if not cls.accepts_snapshot(snapshot):
                raise ValueError(f"snapshot schema {snapshot.schema_version} is not current")
            aggregate._restore(snapshot.state)
            aggregate.version = snapshot.version
        for event in events:
            aggregate._apply(event)
            aggregate.version += 1
        return aggregate

    @classmethod
    def accepts_snapshot(cls, snapshot: Snapshot) -> bool:
        """A snapshot taken under an older state layout is ignored and the stream replayed."""
        return snapshot.schema_version == cls.snapshot_schema_version

    def snapshot(self) -> Snapshot:
        return Snapshot(self.id, self.version, self.snapshot_schema_version, self._state())

    def _state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

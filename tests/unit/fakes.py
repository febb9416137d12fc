"""Fakes behind the application ports, for unit tests only."""

from __future__ import annotations

# The unit tests' event store is the real in-memory adapter: it passes the same contract suite
# as the SQL store, so no fake of it can drift from what the platform runs on.
from iot_platform.infrastructure.eventstore.memory import InMemoryEventStore

__all__ = ["InMemoryEventStore", "RecordingReadModel"]


class RecordingReadModel:
    """A ReadModelSync that remembers what it was asked to wait for."""

    def __init__(self) -> None:
        self.waited_for: list[int] = []

    async def wait_for(self, position: int, timeout: float) -> bool:
        self.waited_for.append(position)
        return True

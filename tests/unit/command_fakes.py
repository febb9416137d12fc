"""Fakes behind the device-command ports, for unit tests only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from iot_platform.application.commands.commands import CommandMessage
from iot_platform.application.commands.ports import CommandView, DeliveryFailed
from iot_platform.domain.commands import CommandStatus, DeviceCommand
from tests.unit.fakes import InMemoryEventStore

T0 = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class RecordingPublisher:
    """A CommandPublisher that remembers what it sent; ``down`` makes it fail like a lost broker."""

    def __init__(self) -> None:
        self.sent: list[CommandMessage] = []
        self.down = False

    async def publish(self, message: CommandMessage) -> None:
        if self.down:
            raise DeliveryFailed("broker unreachable")
        self.sent.append(message)


class InMemoryCommandQueries:
    """CommandQueries folded straight from the fake store's streams (no projection lag)."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self._store = store

    def _all(self) -> list[CommandView]:
        ids = dict.fromkeys(r.aggregate_id for r in self._store.events if r.stream_type == "device_command")
        views = []
        for command_id in ids:
            c = DeviceCommand.rehydrate(
                command_id,
                (r.event for r in self._store.events if (r.stream_type, r.aggregate_id) == ("device_command", command_id)),
            )
            assert c.status is not None and c.issued_at is not None and c.expires_at is not None
            sends = [r.event.occurred_at for r in self._store.events
                     if r.aggregate_id == command_id and r.event.event_type() == "CommandSent"]
            views.append(CommandView(c.id, c.device_id, c.command, c.parameters, c.status, c.result, "test",
                                     c.issued_at, c.expires_at, sends[-1] if sends else None, None, None, c.version))
        return views

    async def get(self, command_id: str) -> CommandView | None:
        return next((v for v in self._all() if v.command_id == command_id), None)

    async def for_device(
        self, device_id: str, status: CommandStatus | None = None, limit: int = 50
    ) -> list[CommandView]:
        views = [v for v in self._all() if v.device_id == device_id and status in (None, v.status)]
        return list(reversed(views))[:limit]

    async def pending(self, device_id: str, now: datetime) -> list[CommandView]:
        return [v for v in self._all() if v.device_id == device_id and v.status.pending and v.expires_at > now]

    async def due(self, now: datetime, limit: int) -> list[str]:
        return [v.command_id for v in self._all() if not v.status.final and v.expires_at <= now][:limit]

"""Ports of the command use cases: the clock, the channel to devices, and the status read model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from iot_platform.application.commands.commands import CommandMessage
from iot_platform.domain.commands import CommandStatus


class Clock(Protocol):
    """The current time, timezone-aware UTC. Tests pass one they can move."""

    def now(self) -> datetime: ...


class DeliveryFailed(Exception):
    """The channel could not hand the command on; it stays pending and is retried later."""


class CommandPublisher(Protocol):
    """Pushes a command to its device (MQTT ``devices/{id}/commands``, QoS 1).

    Returns once the transport has accepted the message (the broker's PUBACK); raises
    ``DeliveryFailed`` otherwise. It says nothing about the device having it: that is the
    device's acknowledgement.
    """

    async def publish(self, message: CommandMessage) -> None: ...


@dataclass(frozen=True)
class CommandView:
    command_id: str
    device_id: str
    command: str
    parameters: dict[str, Any]
    status: CommandStatus
    result: Any
    issued_by: str
    issued_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    completed_at: datetime | None
    version: int

    def message(self) -> CommandMessage:
        return CommandMessage(
            self.command_id,
            self.device_id,
            self.command,
            self.parameters,
            self.issued_at,
            self.expires_at,
        )


class CommandQueries(Protocol):
    """The command-status read model."""

    async def get(self, command_id: str) -> CommandView | None: ...

    async def for_device(
        self, device_id: str, status: CommandStatus | None = None, limit: int = 50
    ) -> list[CommandView]:
        """Newest first."""
        ...

    async def pending(self, device_id: str, now: datetime) -> list[CommandView]:
        """Issued or sent, not yet expired; oldest first (the order to execute them in)."""
        ...

    async def due(self, now: datetime, limit: int) -> list[str]:
        """Ids of unfinished commands whose expiry time has passed."""
        ...

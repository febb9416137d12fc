"""What a caller asks of device commands, already parsed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.commands import CommandStatus


@dataclass(frozen=True)
class IssueCommand:
    device_id: str
    command: str
    parameters: dict[str, Any] = field(default_factory=dict)
    ttl_seconds: float | None = None
    """None: the configured default."""
    context: EventContext = EventContext()


@dataclass(frozen=True)
class AcknowledgeCommand:
    device_id: str
    command_id: str
    status: CommandStatus
    result: Any = None
    context: EventContext = EventContext(actor="device")


@dataclass(frozen=True)
class CommandMessage:
    """What a device receives, whatever the channel (MQTT push or HTTP poll)."""

    command_id: str
    device_id: str
    command: str
    parameters: dict[str, Any]
    issued_at: datetime
    expires_at: datetime

    def payload(self) -> dict[str, object]:
        """The device contract's JSON object (MQTT, CoAP, Kafka): ISO 8601 UTC times."""
        return {
            "command_id": self.command_id,
            "command": self.command,
            "parameters": self.parameters,
            "issued_at": _iso_utc(self.issued_at),
            "expires_at": _iso_utc(self.expires_at),
        }


def _iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class IssuedCommand:
    command_id: str
    device_id: str
    push: bool
    """The device should be pushed the command now (an MQTT device not known to be offline)."""
    position: int

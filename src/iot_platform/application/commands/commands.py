"""What a caller asks of device commands, already parsed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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


@dataclass(frozen=True)
class IssuedCommand:
    command_id: str
    device_id: str
    push: bool
    """The device should be pushed the command now (an MQTT device not known to be offline)."""
    position: int

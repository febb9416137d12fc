"""What can happen to a device command. The command-status read model is built from these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from iot_platform.domain.events import DomainEvent


@dataclass(frozen=True, kw_only=True)
class CommandIssued(DomainEvent):
    device_id: str
    command: str
    parameters: dict[str, Any] = field(default_factory=dict)
    ttl_seconds: float
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class CommandSent(DomainEvent):
    """Handed to the device's channel: published over MQTT, or returned to an HTTP poll."""

    channel: str
    attempt: int = 1


@dataclass(frozen=True, kw_only=True)
class CommandDelivered(DomainEvent):
    """The device confirmed it has the command."""


@dataclass(frozen=True, kw_only=True)
class CommandSucceeded(DomainEvent):
    result: Any = None


@dataclass(frozen=True, kw_only=True)
class CommandFailed(DomainEvent):
    """The device tried and failed; ``result`` is what it said about it."""

    result: Any = None


@dataclass(frozen=True, kw_only=True)
class CommandExpired(DomainEvent):
    """Its time to live ran out before it reached a final state."""

    status_at_expiry: str


COMMAND_EVENTS: tuple[type[DomainEvent], ...] = (
    CommandIssued,
    CommandSent,
    CommandDelivered,
    CommandSucceeded,
    CommandFailed,
    CommandExpired,
)

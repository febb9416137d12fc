"""The DeviceCommand aggregate, its events and its status."""

from iot_platform.domain.commands.command import DeviceCommand
from iot_platform.domain.commands.events import (
    COMMAND_EVENTS,
    CommandDelivered,
    CommandExpired,
    CommandFailed,
    CommandIssued,
    CommandSent,
    CommandSucceeded,
)
from iot_platform.domain.commands.values import (
    ACK_STATUSES,
    FINAL_STATUSES,
    PENDING_STATUSES,
    CommandStatus,
    validate_command_name,
)

__all__ = [
    "ACK_STATUSES",
    "COMMAND_EVENTS",
    "FINAL_STATUSES",
    "PENDING_STATUSES",
    "CommandDelivered",
    "CommandExpired",
    "CommandFailed",
    "CommandIssued",
    "CommandSent",
    "CommandStatus",
    "CommandSucceeded",
    "DeviceCommand",
    "validate_command_name",
]

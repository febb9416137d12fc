"""Value objects of a device command."""

from __future__ import annotations

import re
from enum import StrEnum

from iot_platform.domain.errors import InvalidValue

# Command names travel to firmware that dispatches on them: an identifier, not free text.
_COMMAND_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$")


class CommandStatus(StrEnum):
    ISSUED = "issued"
    SENT = "sent"
    DELIVERED = "delivered"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def final(self) -> bool:
        return self in (CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.EXPIRED)

    @property
    def pending(self) -> bool:
        """Still to reach the device: issued, or sent without the device confirming it."""
        return self in (CommandStatus.ISSUED, CommandStatus.SENT)


FINAL_STATUSES = frozenset(s for s in CommandStatus if s.final)
PENDING_STATUSES = frozenset(s for s in CommandStatus if s.pending)

ACK_STATUSES = frozenset({CommandStatus.DELIVERED, CommandStatus.SUCCEEDED, CommandStatus.FAILED})
"""What a device may report back."""


def validate_command_name(name: str) -> str:
    if not _COMMAND_NAME.match(name):
        raise InvalidValue(
            "command must be 1-100 characters of letters, digits and _ . : - "
            "starting with a letter or _",
            field="command",
        )
    return name

"""The DeviceCommand aggregate: one instruction to one device, and what became of it.

issued -> sent -> delivered -> succeeded | failed, and expired when its time to live runs out
before a final state. A device may skip steps (``succeeded`` straight after ``sent``, or even
before the platform recorded the send: the device can answer faster than the record is
written). Devices acknowledge at least once, so repeating the acknowledgement that finished a
command changes nothing; a different answer to a finished or expired command is refused.
Time is always given: the domain reads no clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import singledispatchmethod
from typing import Any, ClassVar

from iot_platform.domain.aggregate import Aggregate, EventContext
from iot_platform.domain.commands.events import (
    CommandDelivered,
    CommandExpired,
    CommandFailed,
    CommandIssued,
    CommandSent,
    CommandSucceeded,
)
from iot_platform.domain.commands.values import ACK_STATUSES, CommandStatus, validate_command_name
from iot_platform.domain.errors import AlreadyExists, InvalidTransition, InvalidValue
from iot_platform.domain.events import DomainEvent
from iot_platform.domain.validation import require_json


class DeviceCommand(Aggregate):
    stream_type: ClassVar[str] = "device_command"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status: CommandStatus | None = None
        self.device_id = ""
        self.command = ""
        self.parameters: dict[str, Any] = {}
        self.issued_at: datetime | None = None
        self.expires_at: datetime | None = None
        self.attempts = 0
        self.result: Any = None

    @property
    def exists(self) -> bool:
        return self.status is not None

    def is_due(self, now: datetime) -> bool:
        """Unfinished and past its time to live: the sweeper should expire it."""
        return (
            self.status is not None
            and not self.status.final
            and self.expires_at is not None
            and now >= self.expires_at
        )

    def deliverable(self, now: datetime) -> bool:
        """Worth (re)sending: not yet confirmed by the device, and still alive."""
        return self.status is not None and self.status.pending and not self.is_due(now)

    # -- commands -----------------------------------------------------------------------
    def issue(
        self,
        *,
        device_id: str,
        command: str,
        parameters: dict[str, Any],
        ttl: timedelta,
        now: datetime,
        context: EventContext = EventContext(),
    ) -> None:
        if self.exists:
            raise AlreadyExists(f"command {self.id!r} was already issued", field="command_id")
        if ttl <= timedelta(0):
            raise InvalidValue("ttl_seconds must be positive", field="ttl_seconds")
        if not isinstance(parameters, dict):
            raise InvalidValue("parameters must be an object", field="parameters")
        require_json(parameters, "parameters")
        self._trigger(
            CommandIssued(
                **self._meta(context, now),
                device_id=device_id,
                command=validate_command_name(command),
                parameters=dict(parameters),
                ttl_seconds=ttl.total_seconds(),
                expires_at=now + ttl,
            )
        )

    def mark_sent(self, channel: str, now: datetime, context: EventContext = EventContext()) -> None:
        """Records a (re)send. After the device confirmed delivery a late record is moot."""
        status = self._require_issued()
        if status is CommandStatus.DELIVERED:
            return
        self._require_unfinished("send", now)
        self._trigger(
            CommandSent(**self._meta(context, now), channel=channel, attempt=self.attempts + 1)
        )

    def acknowledge(
        self,
        status: CommandStatus,
        now: datetime,
        result: Any = None,
        context: EventContext = EventContext(),
    ) -> None:
        current = self._require_issued()
        if status not in ACK_STATUSES:
            raise InvalidValue(
                "status must be one of delivered, succeeded, failed", field="status"
            )
        require_json(result, "result")
        if current.final and current is status and self.result == result:
            return  # the same acknowledgement again (QoS 1 redelivery): already recorded
        if current is CommandStatus.DELIVERED and status is CommandStatus.DELIVERED:
            return
        self._require_unfinished("acknowledge", now)
        meta = self._meta(context, now)
        if status is CommandStatus.DELIVERED:
            self._trigger(CommandDelivered(**meta))
        elif status is CommandStatus.SUCCEEDED:
            self._trigger(CommandSucceeded(**meta, result=result))
        else:
            self._trigger(CommandFailed(**meta, result=result))

    def expire(self, now: datetime, context: EventContext = EventContext()) -> None:
        current = self._require_issued()
        if current.final:
            raise InvalidTransition(f"command {self.id!r} is already {current}")
        if not self.is_due(now):
            raise InvalidTransition(f"command {self.id!r} has not reached its expiry time")
        self._trigger(CommandExpired(**self._meta(context, now), status_at_expiry=current.value))

    def _require_issued(self) -> CommandStatus:
        if self.status is None:
            raise InvalidTransition(f"command {self.id!r} was never issued")
        return self.status

    def _require_unfinished(self, action: str, now: datetime) -> None:
        assert self.status is not None
        if self.status is CommandStatus.EXPIRED or (not self.status.final and self.is_due(now)):
            raise InvalidTransition(f"cannot {action} command {self.id!r}: it has expired")
        if self.status.final:
            raise InvalidTransition(f"cannot {action} command {self.id!r}: it already {self.status}")

    # -- state changes: only here -------------------------------------------------------
    @singledispatchmethod
    def _apply(self, event: DomainEvent) -> None:
        raise TypeError(f"DeviceCommand cannot apply {type(event).__name__}")

    @_apply.register
    def _(self, event: CommandIssued) -> None:
        self.status = CommandStatus.ISSUED
        self.device_id = event.device_id
        self.command = event.command
        self.parameters = dict(event.parameters)
        self.issued_at = event.occurred_at
        self.expires_at = event.expires_at

    @_apply.register
    def _(self, event: CommandSent) -> None:
        self.status = CommandStatus.SENT
        self.attempts = event.attempt

    @_apply.register
    def _(self, event: CommandDelivered) -> None:
        self.status = CommandStatus.DELIVERED

    @_apply.register
    def _(self, event: CommandSucceeded) -> None:
        self.status = CommandStatus.SUCCEEDED
        self.result = event.result

    @_apply.register
    def _(self, event: CommandFailed) -> None:
        self.status = CommandStatus.FAILED
        self.result = event.result

    @_apply.register
    def _(self, event: CommandExpired) -> None:
        self.status = CommandStatus.EXPIRED

    # -- snapshots ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "status": self.status.value if self.status else None,
            "device_id": self.device_id,
            "command": self.command,
            "parameters": dict(self.parameters),
            "issued_at": self.issued_at.isoformat() if self.issued_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "attempts": self.attempts,
            "result": self.result,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.status = CommandStatus(state["status"]) if state["status"] else None
        self.device_id = state["device_id"]
        self.command = state["command"]
        self.parameters = dict(state["parameters"])
        self.issued_at = datetime.fromisoformat(state["issued_at"]) if state["issued_at"] else None
        self.expires_at = (
            datetime.fromisoformat(state["expires_at"]) if state["expires_at"] else None
        )
        self.attempts = state["attempts"]
        self.result = state["result"]

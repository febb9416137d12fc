"""The command handler: load, decide, save, then wait for the status read model and tell waiters.

Recording a send happens after the transport accepted the message, and a device may answer
before that record is written; the record is then retried on the newer version (and is moot if
the device already confirmed delivery). The transmission itself is never repeated by a retry.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from uuid import uuid4

from iot_platform.application.commands.changes import CommandChanges
from iot_platform.application.commands.commands import (
    AcknowledgeCommand,
    CommandMessage,
    IssueCommand,
    IssuedCommand,
)
from iot_platform.application.commands.ports import Clock, CommandQueries
from iot_platform.application.errors import ConcurrencyError, NotFound, UnreadableHistory
from iot_platform.application.ports import AppendResult, ReadModelSync
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.commands import DeviceCommand
from iot_platform.domain.devices import Device, DeviceStatus, Protocol
from iot_platform.domain.errors import InvalidTransition, InvalidValue

log = logging.getLogger(__name__)

Transmit = Callable[[CommandMessage], Awaitable[None]]


@dataclass(frozen=True)
class CommandLimits:
    default_ttl_seconds: float = 3600.0
    max_ttl_seconds: float = 7 * 86_400.0


class CommandHandler:
    def __init__(
        self,
        commands: EventSourcedRepository[DeviceCommand],
        devices: EventSourcedRepository[Device],
        queries: CommandQueries,
        clock: Clock,
        limits: CommandLimits = CommandLimits(),
        read_model: ReadModelSync | None = None,
        changes: CommandChanges | None = None,
        read_your_writes_timeout: float = 5.0,
        new_id: Callable[[], str] = lambda: uuid4().hex,
    ) -> None:
        self._commands = commands
        self._devices = devices
        self._queries = queries
        self._clock = clock
        self._limits = limits
        self._read_model = read_model
        self._changes = changes or CommandChanges()
        self._timeout = read_your_writes_timeout
        self._new_id = new_id

    async def issue(self, request: IssueCommand) -> IssuedCommand:
        device = await self._devices.load(request.device_id)
        if not device.exists:
            raise NotFound(f"device {request.device_id!r} is not registered")
        if device.status is DeviceStatus.DECOMMISSIONED:
            raise InvalidTransition(
                f"cannot send commands to device {request.device_id!r}: it is decommissioned"
            )
        ttl = self._limits.default_ttl_seconds if request.ttl_seconds is None else request.ttl_seconds
        if ttl > self._limits.max_ttl_seconds:
            raise InvalidValue(
                f"must be at most {self._limits.max_ttl_seconds:g}", field="ttl_seconds"
            )
        command = DeviceCommand(self._new_id())
        command.issue(
            device_id=request.device_id,
            command=request.command,
            parameters=request.parameters,
            ttl=timedelta(seconds=ttl),
            now=self._clock.now(),
            context=request.context,
        )
        result = await self._save(command)
        assert result is not None
        return IssuedCommand(
            command_id=command.id,
            device_id=request.device_id,
            push=device.protocol is Protocol.MQTT and device.connected is not False,
            position=result.last_position,
        )

    async def send(
        self, command_id: str, channel: str, transmit: Transmit | None = None
    ) -> CommandMessage | None:
        """Transmits the command (if ``transmit``) and records the send.

        None when it is no longer worth sending (confirmed, finished or expired). A failed
        transmission (``DeliveryFailed``) records nothing, so the command stays pending.
        """
        command = await self._existing(command_id)
        if not command.deliverable(self._clock.now()):
            return None
        message = _message(command)
        if transmit is not None:
            await transmit(message)

        def record(current: DeviceCommand) -> None:
            now = self._clock.now()
            if current.status is not None and current.status.pending and not current.is_due(now):
                current.mark_sent(channel, now)

        await self._retrying(command_id, record)
        return message

    async def acknowledge(self, request: AcknowledgeCommand) -> None:
        command = await self._existing(request.command_id)
        if command.device_id != request.device_id:
            raise NotFound(
                f"command {request.command_id!r} is not a command of device {request.device_id!r}"
            )
        await self._retrying(
            request.command_id,
            lambda c: c.acknowledge(
                request.status,
                self._clock.now(),
                result=request.result,
                context=request.context,
            ),
        )

    async def expire_due(self, limit: int = 500) -> int:
        """Expires commands past their time to live; returns how many. A command that changed
        meanwhile (acknowledged, or expired by another process) is left as it is."""
        expired = 0
        for command_id in await self._queries.due(self._clock.now(), limit):
            try:
                command = await self._commands.load(command_id)
            except UnreadableHistory as exc:  # that command only; the others still expire
                log.warning("command %s not expired: %s", command_id, exc)
                continue
            now = self._clock.now()
            if not command.is_due(now):
                continue
            command.expire(now)
            try:
                await self._save(command)
            except ConcurrencyError:
                log.info("command %s changed while expiring; the next sweep looks again", command_id)
                continue
            expired += 1
        return expired

    async def _retrying(self, command_id: str, decide: Callable[[DeviceCommand], None]) -> None:
        for attempt in range(3):
            command = await self._existing(command_id)
            decide(command)
            try:
                await self._save(command)
                return
            except ConcurrencyError:
                if attempt == 2:
                    raise

    async def _existing(self, command_id: str) -> DeviceCommand:
        command = await self._commands.load(command_id)
        if not command.exists:
            raise NotFound(f"command {command_id!r} does not exist")
        return command

    async def _save(self, command: DeviceCommand) -> AppendResult | None:
        result = await self._commands.save(command)
        if result is None:
            return None
        if self._read_model is not None:
            await self._read_model.wait_for(result.last_position, self._timeout)
        self._changes.changed()
        return result


def _message(command: DeviceCommand) -> CommandMessage:
    assert command.issued_at is not None and command.expires_at is not None
    return CommandMessage(
        command_id=command.id,
        device_id=command.device_id,
        command=command.command,
        parameters=dict(command.parameters),
        issued_at=command.issued_at,
        expires_at=command.expires_at,
    )



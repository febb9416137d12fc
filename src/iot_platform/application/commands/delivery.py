"""Getting commands to devices: pushed over MQTT, or taken by HTTP devices that poll.

A command is pushed when issued if its device speaks MQTT and is online or its connectivity is
unknown (a device that never reported its status may well be listening). When a device says it
is online, its pending commands (issued, or sent without a confirmation) are pushed again: a
device that was away may have missed them. Devices must therefore tolerate a repeat of a
command id they have already executed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from iot_platform.application.commands.changes import CommandChanges
from iot_platform.application.commands.commands import CommandMessage, IssueCommand, IssuedCommand
from iot_platform.application.commands.handlers import CommandHandler
from iot_platform.application.commands.ports import (
    Clock,
    CommandPublisher,
    CommandQueries,
    DeliveryFailed,
)
from iot_platform.application.errors import ApplicationError
from iot_platform.domain.commands import CommandStatus
from iot_platform.domain.errors import DomainError

log = logging.getLogger(__name__)


class CommandDelivery:
    def __init__(
        self,
        handler: CommandHandler,
        queries: CommandQueries,
        clock: Clock,
        publisher: CommandPublisher | None,
        changes: CommandChanges,
        poll_interval: float = 0.5,
    ) -> None:
        self._handler = handler
        self._queries = queries
        self._clock = clock
        self._publisher = publisher
        self._changes = changes
        self._poll_interval = poll_interval

    async def issue(self, request: IssueCommand) -> IssuedCommand:
        """Issues the command and, for a reachable MQTT device, pushes it at once."""
        issued = await self._handler.issue(request)
        if issued.push:
            await self._push(issued.command_id)
        return issued

    async def device_online(self, device_id: str) -> int:
        """Pushes the device's pending, unexpired commands; returns how many were sent."""
        sent = 0
        for view in await self._queries.pending(device_id, self._clock.now()):
            sent += await self._push(view.command_id)
        return sent

    async def poll(
        self, device_id: str, wait: float, channel: str = "http", exclude: Collection[str] = ()
    ) -> list[CommandMessage]:
        """A polling device's long poll (HTTP, or a CoAP observation): its pending commands,
        marked sent on ``channel``, as soon as there are any, or an empty list after ``wait``
        seconds. ``exclude``: commands this client was already given (an observation is pushed
        each command once; a poll without it is given every unconfirmed command again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            mark = self._changes.mark()
            messages: list[CommandMessage] = []
            for view in await self._queries.pending(device_id, self._clock.now()):
                if view.command_id in exclude:
                    continue
                message = await self._handler.send(view.command_id, channel)
                if message is not None:
                    messages.append(message)
            remaining = deadline - loop.time()
            if messages or remaining <= 0:
                return messages
            await self._changes.wait(min(remaining, self._poll_interval), mark)

    async def take(self, device_id: str, channel: str) -> CommandMessage | None:
        """The device's oldest pending command, marked sent on ``channel``: for devices that
        can be given one command per chance to receive (a LoRaWAN class A receive window)."""
        for view in await self._queries.pending(device_id, self._clock.now()):
            message = await self._handler.send(view.command_id, channel)
            if message is not None:
                return message
        return None

    async def last_sent(self, device_id: str, confirmed_only: bool = False) -> str | None:
        """The command most recently sent to the device and not yet confirmed: what a
        LoRaWAN ACK bit acknowledges when the process that sent it is gone (restarted, or
        another one heard the ACK). ``confirmed_only``: among those whose ``confirmed``
        parameter is not false (an unconfirmed downlink draws no ACK)."""
        sent = [view for view in await self._queries.pending(device_id, self._clock.now())
                if view.status is CommandStatus.SENT and view.sent_at is not None
                and not (confirmed_only and view.parameters.get("confirmed", True) is False)]
        return max(sent, key=lambda view: view.sent_at or view.issued_at).command_id if sent else None

    async def _push(self, command_id: str) -> bool:
        if self._publisher is None:
            return False
        try:
            return await self._handler.send(command_id, "mqtt", self._publisher.publish) is not None
        except DeliveryFailed as exc:
            log.warning("command %s not pushed (%s); it stays pending", command_id, exc)
        except (ApplicationError, DomainError) as exc:
            log.info("command %s not pushed: %s", command_id, exc)
        return False

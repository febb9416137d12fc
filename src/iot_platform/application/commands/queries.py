"""Reading command status, optionally waiting for an outcome (``?wait=``)."""

from __future__ import annotations

import asyncio

from iot_platform.application.commands.changes import CommandChanges
from iot_platform.application.commands.ports import CommandQueries, CommandView
from iot_platform.application.errors import NotFound


class CommandStatusReader:
    def __init__(
        self, queries: CommandQueries, changes: CommandChanges, poll_interval: float = 0.5
    ) -> None:
        self._queries = queries
        self._changes = changes
        self._poll_interval = poll_interval

    async def get(self, device_id: str, command_id: str, wait: float = 0.0) -> CommandView:
        """The command's view, once it is final or ``wait`` seconds have passed.

        Woken by this process's changes; polls for other processes' changes.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            mark = self._changes.mark()
            view = await self._queries.get(command_id)
            if view is None or view.device_id != device_id:
                raise NotFound(f"device {device_id!r} has no command {command_id!r}")
            remaining = deadline - loop.time()
            if view.status.final or remaining <= 0:
                return view
            await self._changes.wait(min(remaining, self._poll_interval), mark)

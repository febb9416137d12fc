"""What every outbound alert channel shares: ``send`` queues and returns at once, one background
worker delivers in order. A full queue drops the newest notice and counts it, so a slow or dead
destination never blocks the rule engine or ingestion; ``stop`` drains for a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Generic, TypeVar

from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.domain.alerts import RuleDefinition

log = logging.getLogger(__name__)

Target = TypeVar("Target")


class QueuedChannel(Generic[Target]):
    name = "channel"

    def __init__(self, queue_size: int) -> None:
        self._queue: asyncio.Queue[tuple[Target, AlertNotice]] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def outcomes(self) -> dict[str, float]:
        return {"delivered": self.delivered, "failed": self.failed, "dropped": self.dropped}

    def route(self, notice: AlertNotice, rule: RuleDefinition | None) -> Target | None:
        """Where this notice goes on this channel, or None if not here."""
        raise NotImplementedError

    async def deliver(self, target: Target, notice: AlertNotice) -> None:
        """Sends one notice (retrying as the channel sees fit); raises to count it failed."""
        raise NotImplementedError

    async def close(self) -> None:
        """Releases the channel's connections once the worker has stopped."""

    def send(self, notice: AlertNotice, rule: RuleDefinition | None) -> None:
        target = self.route(notice, rule)
        if target is None:
            return
        try:
            self._queue.put_nowait((target, notice))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("%s queue full: notice of alert %s dropped", self.name, notice.alert_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"alerts-{self.name}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Delivers what is queued (for at most ``timeout`` seconds), then stops."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self.close()

    async def _run(self) -> None:
        while True:
            target, notice = await self._queue.get()
            try:
                await self.deliver(target, notice)
                self.delivered += 1
            except Exception as exc:  # one notice failed for good: count it, carry on
                self.failed += 1
                log.warning("%s gave up on alert %s: %s", self.name, notice.alert_id, exc)
            finally:
                self._queue.task_done()

"""The outbox relay: every appended domain event reaches the domain-events topic, in order.

An event is marked published only after the broker has acknowledged it, so a relay stopped
between the two publishes it again on its next round: delivery is at least once, and consumers
drop a repeat by its global position. Events go out in position order; one relay per
deployment keeps the topic in that order (a second one only adds repeats, which consumers drop).
"""

from __future__ import annotations

import asyncio
import logging

from iot_platform.application.ports import DomainEventPublisher, Outbox

log = logging.getLogger(__name__)


class OutboxRelay:
    name = "relay"

    def __init__(
        self,
        outbox: Outbox,
        publisher: DomainEventPublisher,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._wake = asyncio.Event()
        self.relayed = 0
        """Events published and marked (for metrics and tests)."""

    def wake(self, _position: int = 0) -> None:
        """Called after an in-process append, so the relay need not wait for its next poll."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publishes one batch of pending events and marks it; returns how many."""
        batch = await self._outbox.pending_outbox(self._batch_size)
        if not batch:
            return 0
        await self._publisher.publish(batch)
        await self._outbox.mark_published([r.position for r in batch])
        self.relayed += len(batch)
        return len(batch)

    async def run(self) -> None:
        """Relays until cancelled; a broker or database that is away is retried with back-off."""
        delay = self._retry_initial
        while True:
            self._wake.clear()  # an append from now on wakes the wait below at once
            try:
                sent = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay failed (%s: %s); retrying in %.1fs",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            delay = self._retry_initial
            if sent < self._batch_size:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                except TimeoutError:
                    pass

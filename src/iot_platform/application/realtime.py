"""The live feed: readings and alert notices fanned out to SSE and WebSocket clients.

Each subscriber has a bounded buffer. Publishing never waits: a subscriber whose buffer is full
is dropped (its stream ends with a ``dropped`` message), so a slow client never slows ingestion
or the other clients. The feed is also a telemetry sink (``live``) and an alert channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.application.telemetry.model import Reading
from iot_platform.domain.alerts import RuleDefinition

Message = tuple[str, dict[str, Any]]
"""(kind, payload): kind is "alert" or "reading"."""


@dataclass(frozen=True)
class AlertFilter:
    severities: frozenset[str] = frozenset()
    """Empty: every severity."""
    device_id: str | None = None
    rule_id: str | None = None

    def accepts(self, notice: AlertNotice) -> bool:
        return (
            (not self.severities or notice.severity in self.severities)
            and (self.device_id is None or notice.device_id == self.device_id)
            and (self.rule_id is None or notice.rule_id == self.rule_id)
        )


@dataclass(eq=False)
class Subscription:
    alerts: AlertFilter | None
    devices: frozenset[str]
    metrics: frozenset[str]
    """Empty: every metric of the devices' readings."""
    buffer: int
    queue: asyncio.Queue[Message | None] = field(init=False)
    dropped: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.buffer + 1)  # +1: room for the end marker

    def offer(self, message: Message) -> None:
        if self.dropped:
            return
        if self.queue.qsize() >= self.buffer:
            self.dropped = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(message)

    async def next(self) -> Message | None:
        """The next message; None once this subscriber was dropped for being slow."""
        return await self.queue.get()


class LiveFeed:
    name = "live"

    def __init__(self, buffer: int = 1000) -> None:
        self._buffer = buffer
        self._alert_subscribers: set[Subscription] = set()
        self._by_device: dict[str, set[Subscription]] = {}
        self.dropped = 0

    def subscribe(
        self,
        *,
        alerts: AlertFilter | None = None,
        devices: Sequence[str] = (),
        metrics: Sequence[str] = (),
    ) -> Subscription:
        subscription = Subscription(alerts, frozenset(devices), frozenset(metrics), self._buffer)
        if alerts is not None:
            self._alert_subscribers.add(subscription)
        for device_id in subscription.devices:
            self._by_device.setdefault(device_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._alert_subscribers.discard(subscription)
        for device_id in subscription.devices:
            subscribers = self._by_device.get(device_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._by_device[device_id]

    @property
    def subscribers(self) -> int:
        return len(self._alert_subscribers | {s for group in self._by_device.values() for s in group})

    def send(self, notice: AlertNotice, rule: RuleDefinition | None = None) -> None:
        """The SSE/WebSocket alert channel (every alert goes here, whatever the rule's channels)."""
        if not self._alert_subscribers:
            return
        payload = notice.as_json()
        for subscription in list(self._alert_subscribers):
            if subscription.alerts is not None and subscription.alerts.accepts(notice):
                self._offer(subscription, ("alert", payload))

    async def handle(self, readings: Sequence[Reading]) -> None:
        """The telemetry sink: costs a dict lookup per reading while nobody watches."""
        if not self._by_device:
            return
        for reading in readings:
            subscribers = self._by_device.get(reading.device_id)
            if not subscribers:
                continue
            for subscription in list(subscribers):
                metrics = {
                    k: v for k, v in reading.metrics.items()
                    if not subscription.metrics or k in subscription.metrics
                }
                if metrics:
                    self._offer(subscription, ("reading", {
                        "device_id": reading.device_id,
                        "timestamp_ns": reading.timestamp_ns,
                        "metrics": metrics,
                        "tags": dict(reading.tags),
                    }))

    def _offer(self, subscription: Subscription, message: Message) -> None:
        subscription.offer(message)
        if subscription.dropped:
            self.dropped += 1
            self.unsubscribe(subscription)

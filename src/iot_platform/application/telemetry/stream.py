"""The telemetry stream: how accepted readings reach their consumers.

Adapters: ``InProcessTelemetryStream`` (embedded default) and, with streaming.backend kafka, a
Kafka topic keyed by device id. Consumers (storage writer, latest-state updater, rule engine)
are ``TelemetrySink``s; each must be idempotent because delivery is at-least-once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from iot_platform.application.telemetry.model import Reading


class TelemetryStream(Protocol):
    async def publish(
        self, readings: Sequence[Reading], on_queued: Callable[[], None] | None = None
    ) -> None:
        """Returns once the readings are durably handed on (stored, or acknowledged by the
        broker); raises if that cannot be done, and the caller must not acknowledge its source.

        ``on_queued`` is called once the readings hold their place in the stream's order, before
        the wait for durability: what is published after that comes after them.
        """
        ...


class TelemetrySink(Protocol):
    """A consumer of the stream. ``handle`` raises to have the batch retried."""

    name: str

    async def handle(self, readings: Sequence[Reading]) -> None: ...

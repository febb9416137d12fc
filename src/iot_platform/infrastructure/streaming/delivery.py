"""Handing one batch to one sink, as every telemetry stream does: retried, poison isolated.

A batch that fails is retried with back-off up to ``max_attempts`` times. Then it is halved
until the readings that fail on their own are found: those are poison, returned to the caller
(the Kafka stream dead-letters them to a topic; the in-process one logs and counts them), and
the rest is handled. If every try fails before any succeeds, for longer than finding a poison
reading down one path of halves would take, no reading is at fault: the sink is down, and the
whole batch is retried with back-off for as long as it takes. Nothing is dropped for an outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from iot_platform.application.telemetry.model import Reading
from iot_platform.application.telemetry.stream import TelemetrySink
from iot_platform.infrastructure.observability import PlatformMetrics

log = logging.getLogger(__name__)

Source = TypeVar("Source")
"""What a reading came from (a Kafka record; nothing in process), carried to its dead letter."""


@dataclass(frozen=True)
class Poison(Generic[Source]):
    reading: Reading
    source: Source
    error: str


class _SinkDown(Exception):
    pass


class BatchDelivery(Generic[Source]):
    """``sources`` run beside ``readings`` (the Kafka records they came from), so that the
    readings themselves go to the sink without being copied out of pairs on every batch."""

    def __init__(
        self,
        sink: TelemetrySink,
        metrics: PlatformMetrics,
        *,
        max_attempts: int,
        retry_initial: float,
        retry_max: float,
        around: Callable[[Sequence[Reading], Sequence[Source]], Callable[[], None]] | None = None,
    ) -> None:
        self.sink = sink
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._around = around
        self._last_error = ""
        self._proven = False
        self._fails = 0
        self._patience = 0

    async def deliver(self, readings: Sequence[Reading], sources: Sequence[Source] = ()) -> list[Poison[Source | None]]:
        """Returns once every reading is handled, except the poison ones, which it returns."""
        name = self.sink.name
        delay = self._retry_initial
        whole = (0, len(readings))
        for _attempt in range(self._max_attempts):
            if await self._try(readings, sources, *whole):
                return []
            self._metrics.sink_retries.labels(name).inc()
            log.warning("%s: handling %d readings failed (%s); retrying in %.1fs",
                        name, len(readings), self._last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)
        while True:
            self._proven, self._fails = False, 0
            self._patience = 2 * len(readings).bit_length() + 2
            try:
                return await self._split(readings, sources, *whole)
            except _SinkDown:
                log.warning("%s: no reading of a batch of %d can be handled (%s); retrying in %.1fs",
                            name, len(readings), self._last_error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    async def _split(
        self, readings: Sequence[Reading], sources: Sequence[Source], lo: int, hi: int
    ) -> list[Poison[Source | None]]:
        if await self._try(readings, sources, lo, hi):
            self._proven = True
            return []
        if not self._proven:
            self._fails += 1
            if self._fails > self._patience:
                raise _SinkDown()
        if hi - lo == 1:
            return [Poison(readings[lo], sources[lo] if sources else None, self._last_error)]
        middle = (lo + hi) // 2
        return await self._split(readings, sources, lo, middle) + await self._split(readings, sources, middle, hi)

    async def _try(self, readings: Sequence[Reading], sources: Sequence[Source], lo: int, hi: int) -> bool:
        name = self.sink.name
        part = readings if (lo, hi) == (0, len(readings)) else readings[lo:hi]
        undo = self._around(part, sources[lo:hi]) if self._around is not None else None
        try:
            await self.sink.handle(part)
        except Exception as exc:  # any failure of the sink: the caller decides what follows
            self._metrics.sink_errors.labels(name).inc()
            self._last_error = f"{type(exc).__name__}: {exc}"
            return False
        finally:
            if undo is not None:
                undo()
        self._metrics.sink_readings.labels(name).inc(len(part))
        return True

"""The in-process telemetry stream: one batching worker per sink, all in this event loop.

Each sink gets its own bounded queue. Its worker writes a batch when ``batch_size`` readings are
waiting or ``flush_interval`` has passed since the first of them; a failed batch is retried with
exponential back-off and its poison readings set aside (see delivery.py). ``publish`` waits for room in every queue
(back-pressure instead of unbounded memory) and then for the *durable* sinks (the time-series
writer) to have written its readings, which is what lets a protocol adapter acknowledge a
message only once it is stored. ``stop`` drains every queue, so a clean stop loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from iot_platform.application.telemetry.model import Reading
from iot_platform.application.telemetry.stream import TelemetrySink
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.streaming.delivery import BatchDelivery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkOptions:
    durable: bool
    batch_size: int = 5000
    flush_interval: float = 0.1
    max_pending: int = 100_000
    retry_initial: float = 0.2
    retry_max: float = 10.0
    max_attempts: int = 5
    """Tries of a failing batch before its poison readings are looked for (see delivery.py)."""


class StreamStopped(RuntimeError):
    pass


@dataclass
class _Item:
    readings: Sequence[Reading]
    done: asyncio.Future[None]


class _SinkWorker:
    def __init__(self, sink: TelemetrySink, options: SinkOptions, metrics: PlatformMetrics) -> None:
        self.sink = sink
        self.options = options
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        self._queued = 0
        self._changed = asyncio.Condition()
        self._stopping = False
        self._delivery: BatchDelivery[None] = BatchDelivery(
            sink, metrics, max_attempts=options.max_attempts, retry_initial=options.retry_initial,
            retry_max=options.retry_max,
        )

    async def submit(self, readings: Sequence[Reading]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._changed:
            # An over-sized batch still goes in alone, rather than waiting forever.
            await self._changed.wait_for(
                lambda: self._stopping
                or self._queued == 0
                or self._queued + len(readings) <= self.options.max_pending
            )
            if self._stopping:
                raise StreamStopped("the telemetry stream is stopping")
            self._queue.append(_Item(readings, done))
            self._queued += len(readings)
            self._metrics.stream_queue_depth.labels(self.sink.name).set(self._queued)
            self._changed.notify_all()
        return done

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._queue) or self._stopping)
                if not self._queue:
                    return
                deadline = loop.time() + self.options.flush_interval
                while self._queued < self.options.batch_size and not self._stopping:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), remaining)
                items = self._take()
            await self._write(items)
            async with self._changed:
                self._queued -= sum(len(i.readings) for i in items)
                self._metrics.stream_queue_depth.labels(self.sink.name).set(self._queued)
                self._changed.notify_all()

    def _take(self) -> list[_Item]:
        items: list[_Item] = []
        count = 0
        while self._queue and (not items or count + len(self._queue[0].readings) <= self.options.batch_size):
            item = self._queue.popleft()
            items.append(item)
            count += len(item.readings)
        return items

    async def _write(self, items: list[_Item]) -> None:
        batch = [r for item in items for r in item.readings]
        started = time.perf_counter()
        for poison in await self._delivery.deliver(batch):
            # No dead-letter topic in process: the reading is logged and counted, never retried.
            log.warning("%s: dropped a reading of %s that fails on its own: %s",
                        self.sink.name, poison.reading.device_id, poison.error)
            self._metrics.sink_poison.labels(self.sink.name).inc()
        self._metrics.sink_batch_seconds.labels(self.sink.name).observe(time.perf_counter() - started)
        for item in items:
            if not item.done.done():
                item.done.set_result(None)

    async def stop(self) -> None:
        async with self._changed:
            self._stopping = True
            self._changed.notify_all()


class InProcessTelemetryStream:
    def __init__(self, metrics: PlatformMetrics) -> None:
        self._metrics = metrics
        self._workers: list[_SinkWorker] = []
        self._tasks: list[asyncio.Task[None]] = []

    def subscribe(self, sink: TelemetrySink, options: SinkOptions) -> None:
        self._workers.append(_SinkWorker(sink, options, self._metrics))

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(w.run(), name=f"sink-{w.sink.name}") for w in self._workers
        ]

    async def publish(self, readings: Sequence[Reading], on_queued: Callable[[], None] | None = None) -> None:
        durable = []
        for worker in self._workers:
            done = await worker.submit(readings)
            if worker.options.durable:
                durable.append(done)
        if on_queued is not None:
            on_queued()
        await asyncio.gather(*durable)

    async def stop(self, timeout: float = 30.0) -> None:
        """Writes what is queued (for at most ``timeout`` seconds), then ends the workers."""
        for worker in self._workers:
            await worker.stop()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            log.error("telemetry sink %s did not drain in %.0fs", task.get_name(), timeout)
            task.cancel()
        for task in done:
            if task.exception() is not None:
                log.error("telemetry sink %s failed", task.get_name(), exc_info=task.exception())
        self._tasks = []

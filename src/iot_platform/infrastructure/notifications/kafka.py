"""The Kafka alert channel: every alert notice to the alerts topic (``iot-alerts``), keyed by
device id so one device's notices stay in order.

On when ``streaming.backend`` is ``kafka``. Like the webhook channel it queues and returns, and a
background sender hands notices to an idempotent producer (acks from all in-sync replicas); a
full queue drops the newest notice and counts it, so a dead broker never blocks the rule engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.domain.alerts import RuleDefinition

log = logging.getLogger(__name__)


class KafkaAlertChannel:
    def __init__(self, brokers: list[str], topic: str, queue_size: int = 10_000) -> None:
        self._brokers = brokers
        self.topic = topic
        self._queue: asyncio.Queue[AlertNotice] = asyncio.Queue(queue_size)
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.dropped = 0

    def send(self, notice: AlertNotice, rule: RuleDefinition | None) -> None:
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("Kafka alert queue full: notice of alert %s dropped", notice.alert_id)

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=",".join(self._brokers),
            enable_idempotence=True,
            acks="all",
            value_serializer=lambda v: json.dumps(v).encode(),
            key_serializer=str.encode,
        )
        self._task = asyncio.create_task(self._run(), name="kafka-alerts")

    async def stop(self, timeout: float = 10.0) -> None:
        """Sends what is queued (for at most ``timeout`` seconds), then closes the producer."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.stop()

    async def _run(self) -> None:
        producer = self._producer
        assert producer is not None
        delay = 0.5
        while True:  # the broker may be down when we start: keep trying, never fail the platform
            try:
                await producer.start()
                break
            except KafkaError as exc:
                log.warning("Kafka at %s unavailable for alerts (%s); retrying in %.0fs",
                            ",".join(self._brokers), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        while True:
            notice = await self._queue.get()
            try:
                await self._deliver(producer, notice)
            finally:
                self._queue.task_done()

    async def _deliver(self, producer: AIOKafkaProducer, notice: AlertNotice) -> None:
        delay = 0.5
        while True:
            try:
                await producer.send_and_wait(
                    self.topic,
                    notice.as_json(),
                    key=notice.device_id,
                    headers=[("kind", notice.kind.encode()), ("severity", notice.severity.encode())],
                )
                self.delivered += 1
                return
            except KafkaError as exc:
                log.warning("publishing alert %s to Kafka failed (%s); retrying in %.1fs",
                            notice.alert_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

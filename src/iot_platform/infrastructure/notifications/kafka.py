"""The Kafka alert channel: every alert notice to the alerts topic (``iot-alerts``), keyed by
device id so one device's notices stay in order, with ``kind`` and ``severity`` headers.

On when ``streaming.backend`` is ``kafka``. An idempotent producer (acks from all in-sync
replicas) is started on the first notice and retried with back-off while the broker is away, so
a broker that is down at start-up neither fails the platform nor loses the queued notices.
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
from iot_platform.infrastructure.notifications.queued import QueuedChannel

log = logging.getLogger(__name__)


class KafkaAlertChannel(QueuedChannel[str]):
    name = "kafka"

    def __init__(self, brokers: list[str], topic: str, queue_size: int = 10_000) -> None:
        super().__init__(queue_size)
        self._brokers = ",".join(brokers)
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None

    def route(self, notice: AlertNotice, rule: RuleDefinition | None) -> str | None:
        return self.topic

    async def _started(self) -> AIOKafkaProducer:
        delay = 0.5
        while self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._brokers, enable_idempotence=True, acks="all"
            )
            try:
                await producer.start()
                self._producer = producer
            except KafkaError as exc:
                with contextlib.suppress(KafkaError):
                    await producer.stop()
                log.warning("Kafka at %s unavailable for alerts (%s); retrying in %.1fs",
                            self._brokers, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        return self._producer

    async def deliver(self, target: str, notice: AlertNotice) -> None:
        delay = 0.5
        while True:  # the queue is bounded, so waiting here drops new notices rather than growing
            producer = await self._started()
            try:
                await producer.send_and_wait(
                    target,
                    json.dumps(notice.as_json()).encode(),
                    key=notice.device_id.encode(),
                    headers=[("kind", notice.kind.encode()), ("severity", notice.severity.encode())],
                )
                return
            except KafkaError as exc:
                log.warning("publishing alert %s to Kafka failed (%s); retrying in %.1fs",
                            notice.alert_id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.stop()
            self._producer = None

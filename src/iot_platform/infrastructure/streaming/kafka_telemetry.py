"""The telemetry stream on Kafka: readings to ``sensor-readings``, each sink its own consumer group.

``publish`` returns once the broker has acknowledged every reading (an idempotent producer,
acks from every in-sync replica, gzip-compressed batches), which is what lets a protocol
adapter acknowledge its device only then: QoS 1 end to end. Records are keyed by device id, so
one device's readings stay in one partition, in order, and several processes of one consumer
group split the partitions between them.

A sink consumer commits its offsets only after the sink has handled the batch (at least once;
the sinks are idempotent, so a batch handled twice after a crash counts once). A batch that
keeps failing is split until the readings that fail on their own are found; those go to the
dead-letter topic with headers naming why and where from, and the rest is handled. A batch of
which nothing at all can be handled is the sink being down, not poison: it is retried, with
back-off, for as long as it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from iot_platform.application.telemetry.model import Reading
from iot_platform.application.telemetry.stream import TelemetrySink
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.streaming.delivery import BatchDelivery
from iot_platform.infrastructure.streaming.inprocess import SinkOptions
from iot_platform.infrastructure.streaming.kafka_producer import LazyProducer

log = logging.getLogger(__name__)

_ERROR_LIMIT = 500  # characters of an error kept in a dead letter's header


def encode_reading(reading: Reading) -> bytes:
    return json.dumps({
        "device_id": reading.device_id,
        "timestamp_ns": reading.timestamp_ns,
        "metrics": dict(reading.metrics),
        "tags": dict(reading.tags),
        "message_id": reading.message_id,
        "device_type": reading.device_type,
        "protocol": reading.protocol,
    }, separators=(",", ":")).encode()


def decode_reading(value: bytes | None) -> Reading:
    """Raises ``ValueError`` for anything that is not a reading."""
    try:
        data: dict[str, Any] = json.loads(value or b"")
        metrics = data["metrics"]
        if not isinstance(metrics, dict) or not metrics:
            raise ValueError("no metrics")
        return Reading(
            device_id=str(data["device_id"]),
            timestamp_ns=int(data["timestamp_ns"]),
            metrics=metrics,
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
            message_id=data.get("message_id"),
            device_type=str(data.get("device_type") or ""),
            protocol=str(data.get("protocol") or "http"),
        )
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a reading: {exc!r}") from exc


class KafkaTelemetryStream:
    """The publishing side; the consumers are ``KafkaSinkConsumer``s (in this process or not)."""

    def __init__(self, brokers: list[str], topic: str) -> None:
        self.topic = topic
        self._producer = LazyProducer(",".join(brokers))

    async def start(self) -> None:
        pass

    async def publish(self, readings: Sequence[Reading], on_queued: Callable[[], None] | None = None) -> None:
        producer = await self._producer.get()
        pending = [
            await producer.send(self.topic, encode_reading(r), key=r.device_id.encode())
            for r in readings
        ]
        if on_queued is not None:  # in the producer's batches, in this order
            on_queued()
        await asyncio.gather(*pending)

    async def stop(self, timeout: float = 30.0) -> None:
        await self._producer.close()


# The records behind the batch a sink is handling, so that a sink's own dead letter (the
# storage writer's refused readings) can name its source partition and offset.
_sources: contextvars.ContextVar[tuple[str, dict[int, Any]]] = contextvars.ContextVar("sources")



class KafkaDeadLetters:
    """Writes poison records to the dead-letter topic, the record as it was plus headers:
    ``reason``, ``error``, ``source_topic``, ``source_partition``, ``source_offset``, ``group``,
    ``failed_at``."""

    def __init__(self, brokers: list[str], topic: str) -> None:
        self.topic = topic
        self._producer = LazyProducer(",".join(brokers))
        self.sent = 0
        self._sending: set[asyncio.Task[None]] = set()

    async def send(self, record: Record, reason: str, error: str, group: str) -> None:
        producer = await self._producer.get()
        headers = [
            ("reason", reason.encode()),
            ("error", error[:_ERROR_LIMIT].encode(errors="replace")),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
            ("group", group.encode()),
            ("failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        await producer.send_and_wait(self.topic, record.value, key=record.key, headers=headers)
        self.sent += 1

    async def message(self, mqtt_topic: str, payload: bytes, reason: str, error: str) -> None:
        """A device's MQTT message the platform could not handle, kept as it came. Its topic is
        the ``mqtt_topic`` header, not ``source_topic``: ``dlq replay`` sends letters back to
        their Kafka source topic, and an MQTT message has none (it is listed, not replayed)."""
        producer = await self._producer.get()
        headers = [
            ("reason", reason.encode()),
            ("error", error[:_ERROR_LIMIT].encode(errors="replace")),
            ("mqtt_topic", mqtt_topic.encode(errors="replace")),
            ("failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        await asyncio.wait_for(producer.send_and_wait(self.topic, payload, headers=headers), 10)
        self.sent += 1

    def refused(self, reading: Reading, reason: str) -> None:
        """A sink's own verdict that a reading can never be handled (in the sink's task)."""
        group, records = _sources.get(("", {}))
        record = records.get(id(reading))
        if record is None:
            return
        task = asyncio.get_running_loop().create_task(self.send(record, "refused", reason, group))
        self._sending.add(task)  # held, or the loop may collect it before it ran
        task.add_done_callback(self._sending.discard)

    async def close(self) -> None:
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=5)
        await self._producer.close()


Record: TypeAlias = ConsumerRecord  # [bytes, bytes]; aiokafka is untyped here


class KafkaSinkConsumer:
    """One sink as one member of its consumer group over the readings topic. Without a group
    (the live feed of one process), it follows every partition from the newest record on and
    commits nothing."""

    def __init__(
        self,
        brokers: list[str],
        topic: str,
        group: str | None,
        sink: TelemetrySink,
        options: SinkOptions,
        dead_letters: KafkaDeadLetters,
        metrics: PlatformMetrics,
        max_attempts: int = 5,
        letters_undecodable: bool = False,
    ) -> None:
        """``letters_undecodable``: this consumer (the storage writer's) is the one that
        dead-letters records that are not readings; every group sees them, one letter will do."""
        self._brokers = ",".join(brokers)
        self._topic = topic
        self._letters_undecodable = letters_undecodable
        self._metrics = metrics
        self.group = group
        self._name = group or f"{sink.name} (no group)"
        self.sink = sink
        self._options = options
        self._dead = dead_letters
        self._delivery: BatchDelivery[Record] = BatchDelivery(
            sink, metrics, max_attempts=max_attempts, retry_initial=options.retry_initial,
            retry_max=options.retry_max, around=self._with_sources,
        )
        self.assigned: set[int] = set()
        """Partitions this member holds now (for tests and the logs)."""

    def _with_sources(self, readings: Sequence[Reading], records: Sequence[Record]) -> Callable[[], None]:
        token = _sources.set((self._name, {id(reading): record for reading, record in zip(readings, records)}))
        return lambda: _sources.reset(token)

    async def run(self) -> None:
        delay = self._options.retry_initial
        while True:
            consumer = AIOKafkaConsumer(
                self._topic, bootstrap_servers=self._brokers, group_id=self.group,
                enable_auto_commit=False, auto_offset_reset="earliest" if self.group else "latest",
                max_poll_records=self._options.batch_size,
            )
            try:
                await consumer.start()
                delay = self._options.retry_initial
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka away, a rebalance mid-commit...: never fatal, retried
                log.warning("%s: consuming from Kafka at %s failed (%s: %s); retrying in %.1fs",
                            self._name, self._brokers, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._options.retry_max)
            finally:
                with contextlib.suppress(KafkaError):
                    await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        timeout_ms = max(1, int(self._options.flush_interval * 1000))
        while True:
            fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=self._options.batch_size)
            assigned = {tp.partition for tp in consumer.assignment()}
            if assigned != self.assigned:
                log.info("%s: holds partitions %s of %s", self._name, sorted(assigned), self._topic)
                self.assigned = assigned
            if not fetched:
                continue
            readings: list[Reading] = []
            sources: list[Record] = []
            for records in fetched.values():
                for record in records:
                    try:
                        readings.append(decode_reading(record.value))
                        sources.append(record)
                    except ValueError as exc:
                        self._metrics.sink_poison.labels(self.sink.name).inc()
                        if self._letters_undecodable:
                            await self._dead.send(record, "undecodable", str(exc), self._name)
                        else:
                            log.warning("%s: skipped a record that is not a reading: %s", self._name, exc)
            if readings:
                for poison in await self._delivery.deliver(readings, sources):
                    log.warning("%s: dead-lettered a reading of %s: %s",
                                self._name, poison.reading.device_id, poison.error)
                    await self._dead.send(poison.source, "failed", poison.error, self._name)
            if self.group is not None:
                await consumer.commit()

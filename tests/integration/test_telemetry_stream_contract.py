"""The telemetry stream's contract, for both streams: in process, and Kafka (the harness broker).

Given sinks subscribed to a stream, every published reading reaches every sink; a sink that
fails for a while loses nothing; a reading a sink fails on by itself is set aside (on Kafka: on
the dead-letter topic, headers naming why and where from) while the rest of its batch is
handled; and on Kafka, a record that is not a reading is dead-lettered as undecodable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from iot_platform.application.telemetry.model import Reading
from iot_platform.application.telemetry.ports import PermanentWriteError
from iot_platform.application.telemetry.sinks import StorageWriter
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.streaming.inprocess import InProcessTelemetryStream, SinkOptions
from iot_platform.infrastructure.streaming.kafka_telemetry import (
    KafkaDeadLetters,
    KafkaSinkConsumer,
    KafkaTelemetryStream,
)
from tests.conftest import require_service
from tests.integration.kafka_topics import read_records

pytestmark = pytest.mark.asyncio

OPTIONS = SinkOptions(durable=True, batch_size=50, flush_interval=0.05, retry_initial=0.01,
                      retry_max=0.05, max_attempts=2)


class Collecting:
    """An idempotent sink: a set of (device, timestamp), like the stores' keys."""

    def __init__(self, name: str, fail_first: int = 0, poison: str | None = None) -> None:
        self.name = name
        self.seen: set[tuple[str, int]] = set()
        self.calls = 0
        self._fail_first = fail_first
        self._poison = poison

    async def handle(self, readings: Sequence[Reading]) -> None:
        self.calls += 1
        if self.calls <= self._fail_first:
            raise ConnectionError("the sink's database is away")
        if self._poison and any(r.device_id == self._poison for r in readings):
            raise ValueError(f"cannot store a reading of {self._poison}")
        self.seen.update((r.device_id, r.timestamp_ns) for r in readings)


def readings(n: int, device: str = "sensor", start: int = 0) -> list[Reading]:
    return [Reading(f"{device}-{i % 7}", 1_800_000_000_000_000_000 + start + i, {"temperature": 20.0 + i % 5},
                    device_type="th", message_id=f"m{start + i}") for i in range(n)]


class Harness:
    """A stream with sinks, one backend or the other."""

    def __init__(self, backend: str, metrics: PlatformMetrics) -> None:
        self.backend = backend
        self.metrics = metrics
        self.sinks: list[Collecting] = []
        self._tasks: list[asyncio.Task[None]] = []
        if backend == "kafka":
            self.brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka").split(",")
            run = uuid4().hex[:8]
            self.topic, self.dead_topic, self.group = f"readings-{run}", f"dead-{run}", f"contract-{run}"
            self.stream: Any = KafkaTelemetryStream(self.brokers, self.topic)
            self.dead_letters = KafkaDeadLetters(self.brokers, self.dead_topic)
        else:
            self.stream = InProcessTelemetryStream(metrics)

    def subscribe(self, sink: Collecting) -> None:
        self.sinks.append(sink)
        if self.backend == "kafka":
            consumer = KafkaSinkConsumer(self.brokers, self.topic, f"{self.group}-{sink.name}", sink, OPTIONS,
                                         self.dead_letters, self.metrics, max_attempts=OPTIONS.max_attempts,
                                         letters_undecodable=sink.name == "storage")
            self._tasks.append(asyncio.create_task(consumer.run()))
        else:
            self.stream.subscribe(sink, OPTIONS)

    async def start(self) -> None:
        await self.stream.start()

    async def until(self, done: Any) -> None:
        while not done():
            assert not any(t.done() for t in self._tasks), [t for t in self._tasks if t.done()]
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.stream.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
        if self.backend == "kafka":
            await self.dead_letters.close()

    async def dead(self, count: int) -> list[Any]:
        return await read_records(self.brokers, self.dead_topic, count)


@pytest_asyncio.fixture(params=["inprocess", "kafka"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    given = Harness(request.param, PlatformMetrics())
    yield given
    await given.stop()


def keys(batch: Sequence[Reading]) -> set[tuple[str, int]]:
    return {(r.device_id, r.timestamp_ns) for r in batch}


async def test_every_published_reading_reaches_every_sink(harness: Harness) -> None:
    storage, state = Collecting("storage"), Collecting("state")
    harness.subscribe(storage)
    harness.subscribe(state)
    await harness.start()
    sent = readings(120)
    for i in range(0, len(sent), 30):
        await harness.stream.publish(sent[i:i + 30])
    await harness.until(lambda: storage.seen == state.seen == keys(sent))


async def test_a_sink_that_fails_for_a_while_loses_nothing(harness: Harness) -> None:
    flaky = Collecting("storage", fail_first=3)
    harness.subscribe(flaky)
    await harness.start()
    sent = readings(40)
    await harness.stream.publish(sent)
    await harness.until(lambda: flaky.seen == keys(sent))
    assert flaky.calls > 3


async def test_a_reading_a_sink_fails_on_alone_is_set_aside_and_the_rest_handled(harness: Harness) -> None:
    picky = Collecting("storage", poison="bad-0")
    harness.subscribe(picky)
    await harness.start()
    good, bad = readings(30), readings(1, device="bad", start=1000)
    await harness.stream.publish(good[:15] + bad + good[15:])
    await harness.until(lambda: picky.seen == keys(good))
    if harness.backend == "kafka":
        [letter] = await harness.dead(1)
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["reason"] == "failed" and "cannot store a reading of bad-0" in headers["error"]
        assert headers["source_topic"] == harness.topic and int(headers["source_offset"]) >= 0
        assert json.loads(letter.value)["device_id"] == "bad-0" and letter.key == b"bad-0"
    else:
        await harness.until(lambda: harness.metrics.sink_poison.labels("storage")._value.get() == 1)


async def test_on_kafka_a_record_that_is_not_a_reading_is_dead_lettered_as_undecodable() -> None:
    harness = Harness("kafka", PlatformMetrics())
    sink = Collecting("storage")
    harness.subscribe(sink)
    try:
        await harness.start()
        producer = AIOKafkaProducer(bootstrap_servers=",".join(harness.brokers))
        await producer.start()
        try:
            await producer.send_and_wait(harness.topic, b"\xa1not json", key=b"sensor-1")
        finally:
            await producer.stop()
        sent = readings(5)
        await harness.stream.publish(sent)
        await harness.until(lambda: sink.seen == keys(sent))
        [letter] = await harness.dead(1)
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["reason"] == "undecodable" and letter.value == b"\xa1not json"
        assert headers["source_partition"].isdigit()
    finally:
        await harness.stop()


class RefusingStore:
    """A time-series store that refuses, for good, any reading of one device."""

    def __init__(self) -> None:
        self.written: set[tuple[str, int]] = set()

    async def write(self, batch: Sequence[Reading]) -> None:
        if any(r.device_id == "bad-0" for r in batch):
            raise PermanentWriteError("field type conflict: temperature is float, got string")
        self.written.update(keys(batch))


async def test_on_kafka_a_reading_the_store_refuses_is_dead_lettered_with_its_source() -> None:
    harness = Harness("kafka", PlatformMetrics())
    store = RefusingStore()
    writer = StorageWriter(store, harness.dead_letters.refused)  # type: ignore[arg-type]
    consumer = KafkaSinkConsumer(harness.brokers, harness.topic, f"{harness.group}-storage", writer, OPTIONS,
                                 harness.dead_letters, harness.metrics, letters_undecodable=True)
    task = asyncio.create_task(consumer.run())
    try:
        await harness.start()
        good, bad = readings(20), readings(1, device="bad", start=500)
        await harness.stream.publish(good[:10] + bad + good[10:])
        while store.written != keys(good):
            assert not task.done()
            await asyncio.sleep(0.05)
        [letter] = await harness.dead(1)
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["reason"] == "refused" and "field type conflict" in headers["error"]
        assert headers["source_topic"] == harness.topic and letter.key == b"bad-0"
        assert headers["group"] == f"{harness.group}-storage"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await harness.stop()

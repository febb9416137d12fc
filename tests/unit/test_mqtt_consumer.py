"""The MQTT consumer, specified with fakes behind its ports (the broker client, the stream).

One message whose handling raises an error of its own is dropped (counted, acknowledged), the
rest of its batch is processed; an error of the platform's (the store down) fails the batch
and is noticed at once, whatever batch it hit; a stall shows in ``health()``; the supervisor
restarts a consumer that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import aiomqtt
import pytest

from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.application.telemetry.model import Reading
from iot_platform.composition.runtime import supervised
from iot_platform.config import MqttSettings
from iot_platform.domain.devices import DeviceStatus
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.presentation.mqtt.contract import CommandAck, StatusReport
from iot_platform.presentation.mqtt.ingestion import MqttIngestion, _BatchFailed
from tests.unit.test_ingestion import FakeActivator, FakeDirectory, FakeStream

pytestmark = pytest.mark.asyncio


class FakeMessages:
    """What aiomqtt's ``client.messages`` is: an async iterator with a length."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()

    def __aiter__(self) -> FakeMessages:
        return self

    async def __anext__(self) -> aiomqtt.Message:
        return await self.queue.get()

    def __len__(self) -> int:
        return self.queue.qsize()


class FakeClient:
    def __init__(self) -> None:
        self.messages = FakeMessages()
        self.acked: list[int] = []
        self._client = SimpleNamespace(ack=lambda mid, qos: self.acked.append(mid))

    def publish(self, mid: int, topic: str, body: dict[str, Any] | str) -> None:
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.messages.queue.put_nowait(aiomqtt.Message(topic, payload, 1, False, mid, None))


class PoisonableStream(FakeStream):
    """A stream that raises an error of the reading's own on a metric named ``poison``, or
    blocks until released (a store that does not answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.release.set()

    async def publish(self, readings: Sequence[Reading], on_queued: Callable[[], None] | None = None) -> None:
        if any("poison" in r.metrics for r in readings):
            raise TypeError("cannot serialize")
        await self.release.wait()
        await super().publish(readings, on_queued)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def consumer(
    on_status: Any = None, on_ack: Any = None, **settings: Any
) -> tuple[MqttIngestion, PoisonableStream, PlatformMetrics, Clock]:
    directory = FakeDirectory({"d1": DeviceStatus.ACTIVE, "d2": DeviceStatus.ACTIVE})
    stream = PoisonableStream()
    metrics = PlatformMetrics()
    clock = Clock()

    async def nothing(_: Any) -> None:
        return None

    ingestion = MqttIngestion(
        MqttSettings(embedded_broker=False, **settings), IngestTelemetry(directory, FakeActivator(directory), stream, metrics),
        on_status or nothing, metrics, on_ack=on_ack or nothing, clock=clock,
    )
    return ingestion, stream, metrics, clock


def failures(metrics: PlatformMetrics, stage: str, error: str) -> float:
    return metrics.registry.get_sample_value(
        "iot_mqtt_message_failures_total", {"stage": stage, "error": error}) or 0.0


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_reading_that_fails_ingestion_is_dropped_and_the_rest_of_its_batch_stored() -> None:
    """Given a batch of three readings, the middle one raising a TypeError in the stream,
    then the other two are stored, all three acknowledged, and the failure counted."""
    ingestion, stream, metrics, _ = consumer()
    client = FakeClient()
    client.publish(1, "devices/d1/telemetry", {"message_id": "a", "metrics": {"t": 1}})
    client.publish(2, "devices/d1/telemetry", {"message_id": "b", "metrics": {"poison": 1}})
    client.publish(3, "devices/d2/telemetry", {"message_id": "c", "metrics": {"t": 3}})
    task = asyncio.create_task(ingestion._consume(client))  # type: ignore[arg-type]
    await until(lambda: client.acked == [1, 2, 3])
    assert sorted(r.message_id or "" for r in stream.published) == ["a", "c"]
    assert failures(metrics, "ingest", "TypeError") == 1
    await stop(task)


async def test_a_status_or_ack_that_raises_its_own_error_is_dropped_not_redelivered() -> None:
    async def bad_status(report: StatusReport) -> None:
        raise ValueError("no such status")

    async def bad_ack(ack: CommandAck) -> None:
        raise TypeError("result is not JSON")

    ingestion, stream, metrics, _ = consumer(on_status=bad_status, on_ack=bad_ack)
    client = FakeClient()
    client.publish(1, "devices/d1/status", "online")
    client.publish(2, "devices/d1/commands/ack", {"command_id": "c1", "status": "succeeded"})
    client.publish(3, "devices/d1/telemetry", {"metrics": {"t": 1}})
    task = asyncio.create_task(ingestion._consume(client))  # type: ignore[arg-type]
    await until(lambda: client.acked == [1, 2, 3])
    assert len(stream.published) == 1
    assert failures(metrics, "status", "ValueError") == 1
    assert failures(metrics, "command_ack", "TypeError") == 1
    await stop(task)


async def test_a_failed_batch_is_noticed_even_when_it_is_not_the_newest() -> None:
    """Given the store down (an OSError, the platform's problem), when a batch fails while
    later batches are queued behind it, then the consumer stops with the failure (so it
    reconnects and the broker redelivers) and acknowledges nothing."""
    ingestion, stream, _, _ = consumer(max_batch=1)
    stream.fail = True
    client = FakeClient()
    for mid in (1, 2, 3):
        client.publish(mid, "devices/d1/telemetry", {"message_id": str(mid), "metrics": {"t": mid}})
    with pytest.raises(_BatchFailed, match="store down"):
        async with asyncio.timeout(10):
            await ingestion._consume(client)  # type: ignore[arg-type]
    assert client.acked == []


async def test_health_says_stalled_while_messages_wait_and_none_is_handled() -> None:
    """Given the store not answering, when a message has waited longer than
    mqtt.stall_seconds, then health() names the stall; once it is handled, ok again."""
    ingestion, stream, _, clock = consumer(stall_seconds=10)
    assert ingestion.health() == "not subscribed"
    ingestion.subscribed.set()
    assert ingestion.health() == "ok"
    stream.release.clear()
    client = FakeClient()
    client.publish(1, "devices/d1/telemetry", {"metrics": {"t": 1}})
    task = asyncio.create_task(ingestion._consume(client))  # type: ignore[arg-type]
    await until(lambda: len(client.messages) == 0)
    clock.now += 5
    assert ingestion.health() == "ok"
    clock.now += 6
    assert ingestion.health() == "stalled: 1 messages waiting, none handled for 11s"
    stream.release.set()
    await until(lambda: client.acked == [1])
    assert ingestion.health() == "ok"
    await stop(task)


async def test_the_supervisor_restarts_a_consumer_that_died_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    metrics = PlatformMetrics()
    runs: list[int] = []
    forever = asyncio.Event()

    async def work() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom")
        await forever.wait()

    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(supervised("MQTT consumer", work, metrics.mqtt_consumer_restarts.labels, 0.01, 0.1))
        await until(lambda: len(runs) == 2)
    assert metrics.registry.get_sample_value("iot_mqtt_consumer_restarts_total", {"reason": "RuntimeError"}) == 1
    assert [r.getMessage() for r in caplog.records] == ["MQTT consumer died (RuntimeError: boom); restarting in 0.0s"]
    await stop(task)

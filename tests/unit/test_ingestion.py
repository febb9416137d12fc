"""IngestTelemetry, specified with fakes behind its ports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

import pytest

from iot_platform.application.telemetry.ingestion import BatchOrder, IngestionLimits, IngestTelemetry
from iot_platform.application.telemetry.model import Candidate, Reading, Rejection, Status
from iot_platform.application.telemetry.ports import DeviceInfo, PermanentWriteError
from iot_platform.domain.devices import DeviceStatus

pytestmark = pytest.mark.asyncio

NOW = 1_700_000_000 * 10**9


class FakeDirectory:
    def __init__(self, devices: dict[str, DeviceStatus]) -> None:
        self.devices = devices
        self.forgotten: list[str] = []

    async def lookup(self, device_ids: Iterable[str]) -> dict[str, DeviceInfo]:
        return {d: DeviceInfo(self.devices[d], "th") for d in device_ids if d in self.devices}

    def forget(self, device_id: str) -> None:
        self.forgotten.append(device_id)

    def activated(self, device_id: str, info: DeviceInfo) -> None:
        self.devices[device_id] = info.status


class FakeActivator:
    def __init__(self, directory: FakeDirectory) -> None:
        self.activated: list[str] = []
        self._directory = directory

    async def activate(self, device_id: str) -> None:
        self.activated.append(device_id)
        self._directory.devices[device_id] = DeviceStatus.ACTIVE


class FakeStream:
    def __init__(self) -> None:
        self.published: list[Reading] = []
        self.fail = False

    async def publish(self, readings: Sequence[Reading], on_queued: Callable[[], None] | None = None) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.published.extend(readings)
        if on_queued is not None:
            on_queued()


class CountingMetrics:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def _add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def accepted(self, protocol: str, count: int) -> None:
        self._add(f"{protocol}:accepted", count)

    def rejected(self, protocol: str, reason: Rejection, count: int = 1) -> None:
        self._add(f"{protocol}:rejected:{reason.value}", count)

    def duplicates(self, protocol: str, count: int) -> None:
        self._add(f"{protocol}:duplicate", count)


def world(**devices: DeviceStatus) -> tuple[IngestTelemetry, FakeStream, FakeActivator, CountingMetrics]:
    directory = FakeDirectory(dict(devices))
    activator = FakeActivator(directory)
    stream = FakeStream()
    metrics = CountingMetrics()
    ingest = IngestTelemetry(
        directory, activator, stream, metrics,
        IngestionLimits(max_payload_bytes=1000, max_metrics=3, dedup_window=100),
        clock_ns=lambda: NOW,
    )
    return ingest, stream, activator, metrics


def reading(device: str = "d1", ts: int | None = NOW, **metrics: object) -> Candidate:
    return Candidate(device, ts, metrics or {"t": 21.5})


async def test_a_bad_reading_is_rejected_with_its_reason_and_the_rest_is_stored() -> None:
    ingest, stream, _, metrics = world(d1=DeviceStatus.ACTIVE, gone=DeviceStatus.DECOMMISSIONED,
                                       paused=DeviceStatus.SUSPENDED)
    batch = [
        reading(t=1.0),
        reading("ghost"),
        reading("gone"),
        reading("paused"),
        reading(ts=NOW + 3600 * 10**9),
        reading(t=float("nan")),
        reading(**{"bad name": 1}),
        reading(t={"nested": 1}),
        reading(a=1, b=2, c=3, d=4),
        Candidate("d1", None, {"t": 1}, payload_bytes=5000),
        Candidate("d1", None, {}),
        reading(ts=NOW - 10, t=2.0),
    ]
    outcomes = await ingest.ingest(batch, "mqtt")
    assert [(o.status, o.reason) for o in outcomes] == [
        (Status.STORED, None),
        (Status.REJECTED, Rejection.UNKNOWN_DEVICE),
        (Status.REJECTED, Rejection.DEVICE_DECOMMISSIONED),
        (Status.REJECTED, Rejection.DEVICE_SUSPENDED),
        (Status.REJECTED, Rejection.TIMESTAMP_IN_FUTURE),
        (Status.REJECTED, Rejection.NON_FINITE_NUMBER),
        (Status.REJECTED, Rejection.INVALID_METRIC_NAME),
        (Status.REJECTED, Rejection.INVALID_METRIC_VALUE),
        (Status.REJECTED, Rejection.TOO_MANY_METRICS),
        (Status.REJECTED, Rejection.PAYLOAD_TOO_LARGE),
        (Status.REJECTED, Rejection.NO_METRICS),
        (Status.STORED, None),
    ]
    assert [r.metrics for r in stream.published] == [{"t": 1.0}, {"t": 2.0}]
    assert metrics.counts["mqtt:accepted"] == 2
    assert metrics.counts["mqtt:rejected:unknown_device"] == 1
    assert all(o.detail for o in outcomes if o.status is Status.REJECTED)


async def test_an_undecodable_message_is_reported_by_the_use_case() -> None:
    ingest, _, _, metrics = world(d1=DeviceStatus.ACTIVE)
    (outcome,) = await ingest.ingest(
        [Candidate("d1", None, {}, rejection=Rejection.UNDECODABLE, detail="bad CBOR")], "coap"
    )
    assert (outcome.reason, outcome.detail) == (Rejection.UNDECODABLE, "bad CBOR")
    assert metrics.counts == {"coap:rejected:undecodable": 1}


async def test_duplicates_by_message_id_and_by_timestamp_and_metric_are_not_stored_twice() -> None:
    ingest, stream, _, metrics = world(d1=DeviceStatus.ACTIVE)
    with_id = Candidate("d1", NOW - 5, {"t": 1.0}, message_id="m-1")
    first = await ingest.ingest([with_id, with_id, reading(ts=NOW - 7, t=3.0)], "http")
    again = await ingest.ingest(
        [with_id, reading(ts=NOW - 7, t=3.0), reading(ts=NOW - 7, t=3.0, h=40.0)], "http"
    )
    assert [o.status for o in first] == [Status.STORED, Status.DUPLICATE, Status.STORED]
    assert [o.status for o in again] == [Status.DUPLICATE, Status.DUPLICATE, Status.STORED]
    assert [r.metrics for r in stream.published] == [{"t": 1.0}, {"t": 3.0}, {"h": 40.0}]
    assert metrics.counts["http:duplicate"] == 3


async def test_a_batch_the_stream_refused_is_not_remembered_as_seen() -> None:
    ingest, stream, _, _ = world(d1=DeviceStatus.ACTIVE)
    message = Candidate("d1", NOW - 5, {"t": 1.0}, message_id="m-1")
    stream.fail = True
    with pytest.raises(ConnectionError):
        await ingest.ingest([message], "mqtt")
    stream.fail = False
    (outcome,) = await ingest.ingest([message], "mqtt")  # the broker's redelivery
    assert outcome.status is Status.STORED


async def test_the_first_reading_activates_a_registered_device_once() -> None:
    ingest, stream, activator, _ = world(d1=DeviceStatus.REGISTERED, d2=DeviceStatus.ACTIVE)
    await ingest.ingest([reading("d1", ts=NOW - 2), reading("d1", ts=NOW - 1), reading("d2")], "mqtt")
    await ingest.ingest([reading("d1")], "mqtt")
    assert activator.activated == ["d1"]
    assert [r.device_type for r in stream.published] == ["th"] * 4


class LaggingActivator(FakeActivator):
    """Activates in the event store only: the registry (the directory's source) lags behind."""

    async def activate(self, device_id: str) -> None:
        self.activated.append(device_id)


async def test_a_device_is_activated_once_while_the_registry_still_shows_it_registered() -> None:
    directory = FakeDirectory({"d1": DeviceStatus.REGISTERED})
    activator = LaggingActivator(directory)
    ingest = IngestTelemetry(directory, activator, FakeStream(), CountingMetrics(),
                             IngestionLimits(max_payload_bytes=1000, max_metrics=3, dedup_window=100),
                             clock_ns=lambda: NOW)
    for ts in (NOW - 3, NOW - 2, NOW - 1):
        await ingest.ingest([reading("d1", ts=ts)], "mqtt")
    assert activator.activated == ["d1"]
    assert directory.forgotten == []


async def test_a_reading_for_another_device_than_the_authenticated_one_is_refused() -> None:
    ingest, _, _, _ = world(d1=DeviceStatus.ACTIVE, d2=DeviceStatus.ACTIVE)
    outcomes = await ingest.ingest([reading("d1"), reading("d2")], "http", authenticated_device="d1")
    assert [o.reason for o in outcomes] == [None, Rejection.IDENTITY_MISMATCH]


async def test_each_reading_stamped_with_its_publisher_must_be_for_that_publisher() -> None:
    ingest, _, _, _ = world(d1=DeviceStatus.ACTIVE, d2=DeviceStatus.ACTIVE)
    stamped = [replace(reading("d1"), identity="d1"), replace(reading("d2"), identity="d1"), reading("d2")]
    outcomes = await ingest.ingest(stamped, "mqtt")
    assert [o.reason for o in outcomes] == [None, Rejection.IDENTITY_MISMATCH, None]


async def test_a_reading_without_a_timestamp_gets_the_platforms_clock() -> None:
    ingest, stream, _, _ = world(d1=DeviceStatus.ACTIVE)
    await ingest.ingest([reading(ts=None)], "mqtt")
    assert stream.published[0].timestamp_ns == NOW


class PickyStore:
    """Refuses, for good, any reading whose metric 'kind' is a string."""

    def __init__(self) -> None:
        self.stored: list[Reading] = []
        self.calls = 0

    async def write(self, readings: Sequence[Reading]) -> None:
        self.calls += 1
        if any(isinstance(r.metrics.get("kind"), str) for r in readings):
            raise PermanentWriteError("field type conflict: kind is a number")
        self.stored.extend(readings)


async def test_a_reading_the_store_refuses_for_good_is_dead_lettered_and_the_rest_stored() -> None:
    from iot_platform.application.telemetry.sinks import StorageWriter

    store = PickyStore()
    dead: list[tuple[str, str]] = []
    writer = StorageWriter(store, lambda r, why: dead.append((r.message_id or "", why)))  # type: ignore[arg-type]
    batch = [Reading("d1", i, {"kind": "x" if i in (3, 6) else 1}, message_id=str(i)) for i in range(8)]
    await writer.handle(batch)
    assert [r.message_id for r in store.stored] == ["0", "1", "2", "4", "5", "7"]
    assert [m for m, _ in dead] == ["3", "6"]
    assert "field type conflict" in dead[0][1]


async def test_a_transient_store_failure_is_raised_for_the_stream_to_retry() -> None:
    from iot_platform.application.telemetry.sinks import StorageWriter

    class DownStore:
        async def write(self, readings: Sequence[Reading]) -> None:
            raise ConnectionRefusedError("influxdb is down")

    with pytest.raises(ConnectionRefusedError):
        await StorageWriter(DownStore()).handle([Reading("d1", 1, {"t": 1})])  # type: ignore[arg-type]


class SlowFirstLookup(FakeDirectory):
    """The first lookup waits until released (a registry query), later ones answer at once."""

    def __init__(self, devices: dict[str, DeviceStatus]) -> None:
        super().__init__(devices)
        self.release = asyncio.Event()
        self.calls = 0

    async def lookup(self, device_ids: Iterable[str]) -> dict[str, DeviceInfo]:
        self.calls += 1
        if self.calls == 1:
            await self.release.wait()
        return await super().lookup(device_ids)


async def test_batches_ingested_at_once_enter_the_stream_in_the_order_they_came() -> None:
    directory = SlowFirstLookup({"d1": DeviceStatus.ACTIVE})
    stream = FakeStream()
    ingest = IngestTelemetry(directory, FakeActivator(directory), stream, CountingMetrics(),
                             IngestionLimits(max_payload_bytes=1000, max_metrics=3, dedup_window=100),
                             clock_ns=lambda: NOW)
    first = BatchOrder(after=None)
    second = BatchOrder(after=first.queued)
    older = asyncio.create_task(ingest.ingest([reading("d1", ts=NOW - 2)], "mqtt", order=first))
    newer = asyncio.create_task(ingest.ingest([reading("d1", ts=NOW - 1)], "mqtt", order=second))
    for _ in range(20):  # let both run as far as they can
        await asyncio.sleep(0)
    assert stream.published == []  # the newer batch waits for the older one, held in its lookup
    directory.release.set()
    await asyncio.gather(older, newer)
    assert [r.timestamp_ns for r in stream.published] == [NOW - 2, NOW - 1]


async def test_a_batch_with_nothing_to_publish_still_lets_the_next_one_go() -> None:
    ingest, stream, _, _ = world(d1=DeviceStatus.ACTIVE)
    first = BatchOrder(after=None)
    second = BatchOrder(after=first.queued)
    await ingest.ingest([reading("nobody")], "mqtt", order=first)  # refused: unknown device
    await ingest.ingest([reading("d1")], "mqtt", order=second)
    assert len(stream.published) == 1 and second.queued.is_set()

"""The TimeSeriesStore contract, run against every adapter: the embedded SQLite file and InfluxDB.

Each test gets an empty store: a fresh file, or a fresh InfluxDB database (created and dropped
through InfluxQL), so retention deletes and "every device" aggregates see only its own data.
Time is fixed: ``maintain`` is told what "now" is, so nothing here depends on the wall clock.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from iot_platform.application.telemetry.model import (
    NS_PER_DAY,
    NS_PER_HOUR,
    NS_PER_SECOND,
    AggregateQuery,
    Bucket,
    MetricValue,
    RawQuery,
    Reading,
    Resolution,
    StoredReading,
    TagQuery,
)
from iot_platform.application.telemetry.ports import PermanentWriteError, TimeSeriesStore
from iot_platform.infrastructure.timeseries.influx import InfluxTimeSeriesStore
from iot_platform.infrastructure.timeseries.rollups import PARTIAL_NS, DirtyBuckets, plan_maintenance
from iot_platform.infrastructure.timeseries.sqlite import SqliteTimeSeriesStore
from tests.conftest import require_service

pytestmark = pytest.mark.asyncio

HOUR, DAY, SECOND, MINUTE = NS_PER_HOUR, NS_PER_DAY, NS_PER_SECOND, 60 * NS_PER_SECOND
NOW = 1_710_073_800 * SECOND  # 2024-03-10T12:30:00Z
THIS_HOUR = NOW - NOW % HOUR
TODAY = NOW - NOW % DAY
EVERYTHING = (TODAY - 365 * DAY, TODAY + DAY)


def reading(
    device: str,
    ts: int,
    tags: Mapping[str, str] | None = None,
    device_type: str = "thermometer",
    **metrics: MetricValue,
) -> Reading:
    return Reading(device, ts, metrics, dict(tags or {}), device_type=device_type)


def raw(device: str, start: int = EVERYTHING[0], end: int = EVERYTHING[1], **kw: Any) -> RawQuery:
    return RawQuery(device, start, end, **kw)


def agg(metric: str, interval: int, resolution: Resolution = Resolution.RAW, **kw: Any) -> AggregateQuery:
    start, end = kw.pop("start", EVERYTHING[0]), kw.pop("end", EVERYTHING[1])
    return AggregateQuery(metric, start, end, interval, resolution, **kw)


# --- one store per backend, per test


async def influxql(url: str, token: str, statement: str) -> None:
    headers = {"Authorization": f"Token {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        response = await client.post("/query", params={"q": statement})
        response.raise_for_status()
        assert "error" not in response.text, response.text


@dataclass
class Backend:
    """Opens stores on one backend's test data; several instances on the same data stand for
    a restarted process."""

    name: str
    tmp_path: Path
    influx: dict[str, str] = field(default_factory=dict)
    opened: list[TimeSeriesStore] = field(default_factory=list)

    def open(
        self, retention_days: int = 30, rollup_retention_days: int = 730, dirty_limit: int = 200_000
    ) -> TimeSeriesStore:
        store: TimeSeriesStore
        if self.name == "embedded":
            store = SqliteTimeSeriesStore(
                self.tmp_path / "data" / "timeseries.db",
                retention_days=retention_days,
                rollup_retention_days=rollup_retention_days,
                dirty_limit=dirty_limit,
            )
        else:
            store = InfluxTimeSeriesStore(
                self.influx["url"],
                bucket=self.influx["bucket"],
                token=self.influx["token"],
                org=self.influx["org"],
                retention_days=retention_days,
                rollup_retention_days=rollup_retention_days,
                dirty_limit=dirty_limit,
            )
        self.opened.append(store)
        return store

    def unreachable(self) -> TimeSeriesStore:
        store: TimeSeriesStore
        if self.name == "embedded":
            not_a_directory = self.tmp_path / "plain-file"
            not_a_directory.write_text("")
            store = SqliteTimeSeriesStore(not_a_directory / "timeseries.db")
        else:
            store = InfluxTimeSeriesStore("http://127.0.0.1:9", bucket="nowhere/autogen", timeout_ms=5000)
        self.opened.append(store)
        return store


@pytest_asyncio.fixture(params=["embedded", "influxdb"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    backend = Backend(request.param, tmp_path)
    database = None
    if request.param == "influxdb":
        url = require_service("IOT_TEST_INFLUX_URL", "InfluxDB")
        token = os.environ.get("IOT_TEST_INFLUX_TOKEN", "")
        policy = os.environ.get("IOT_TEST_INFLUX_BUCKET", "iot_test/autogen").partition("/")[2]
        database = f"iot_test_ts_{uuid.uuid4().hex[:12]}"
        await influxql(url, token, f'CREATE DATABASE "{database}" WITH NAME "{policy or "autogen"}"')
        backend.influx = {
            "url": url,
            "token": token,
            "org": os.environ.get("IOT_TEST_INFLUX_ORG", "-"),
            "bucket": f"{database}/{policy or 'autogen'}",
        }
    try:
        yield backend
    finally:
        for store in backend.opened:
            await store.close()
        if database is not None:
            await influxql(backend.influx["url"], backend.influx["token"], f'DROP DATABASE "{database}"')


@pytest.fixture
def store(backend: Backend) -> TimeSeriesStore:
    return backend.open()


# --- raw readings


async def test_readings_come_back_oldest_first_with_types_tags_and_exact_nanoseconds(
    store: TimeSeriesStore,
) -> None:
    timestamps = [THIS_HOUR + 987_654_321_123, THIS_HOUR + 1, THIS_HOUR + 123_456_789]
    await store.write(
        [
            reading(
                "dev-1", ts, {"room": "lab 1", "note": 'a "quoted", =odd ${x} value'},
                temp=21.25, count=3, on=True, state="ok",
            )
            for ts in timestamps
        ]
    )

    found = await store.query(raw("dev-1"))

    assert [r.timestamp_ns for r in found] == sorted(timestamps)
    assert found[0] == StoredReading(
        "dev-1",
        THIS_HOUR + 1,
        {"temp": 21.25, "count": 3.0, "on": True, "state": "ok"},
        {"room": "lab 1", "note": 'a "quoted", =odd ${x} value'},
    )
    metrics = found[0].metrics
    assert type(metrics["count"]) is float and type(metrics["on"]) is bool


async def test_limit_and_descending_take_readings_from_the_chosen_end(store: TimeSeriesStore) -> None:
    await store.write([reading("dev-1", THIS_HOUR + i * MINUTE, temp=float(i)) for i in range(10)])

    oldest = await store.query(raw("dev-1", limit=3))
    newest = await store.query(raw("dev-1", limit=3, descending=True))

    assert [r.metrics["temp"] for r in oldest] == [0.0, 1.0, 2.0]
    assert [r.metrics["temp"] for r in newest] == [9.0, 8.0, 7.0]


async def test_the_limit_counts_readings_not_values(store: TimeSeriesStore) -> None:
    await store.write(
        [reading("dev-1", THIS_HOUR + i * MINUTE, a=1.0, b=2.0, c=3.0) for i in range(4)]
    )

    found = await store.query(raw("dev-1", limit=2))

    assert [(r.timestamp_ns, r.metrics) for r in found] == [
        (THIS_HOUR, {"a": 1.0, "b": 2.0, "c": 3.0}),
        (THIS_HOUR + MINUTE, {"a": 1.0, "b": 2.0, "c": 3.0}),
    ]


async def test_a_metric_filter_keeps_only_those_metrics_and_readings_holding_them(
    store: TimeSeriesStore,
) -> None:
    await store.write(
        [
            reading("dev-1", THIS_HOUR, temp=20.0, humidity=40.0, state="ok"),
            reading("dev-1", THIS_HOUR + MINUTE, state="fault"),
            reading("dev-1", THIS_HOUR + 2 * MINUTE, temp=21.0),
        ]
    )

    found = await store.query(raw("dev-1", metrics=("temp", "humidity")))

    assert [(r.timestamp_ns, r.metrics) for r in found] == [
        (THIS_HOUR, {"temp": 20.0, "humidity": 40.0}),
        (THIS_HOUR + 2 * MINUTE, {"temp": 21.0}),
    ]


async def test_the_range_includes_its_start_and_excludes_its_end(store: TimeSeriesStore) -> None:
    await store.write([reading("dev-1", THIS_HOUR + i, temp=float(i)) for i in range(3)])

    found = await store.query(raw("dev-1", THIS_HOUR + 1, THIS_HOUR + 2))

    assert [r.timestamp_ns for r in found] == [THIS_HOUR + 1]


async def test_readings_of_other_devices_are_not_returned(store: TimeSeriesStore) -> None:
    await store.write([reading("dev-1", THIS_HOUR, temp=1.0), reading("dev-2", THIS_HOUR, temp=2.0)])

    assert [r.metrics for r in await store.query(raw("dev-2"))] == [{"temp": 2.0}]


async def test_writing_the_same_reading_twice_stores_it_once(store: TimeSeriesStore) -> None:
    once = reading("dev-1", THIS_HOUR + 5, {"room": "lab"}, temp=20.5, on=False)

    await store.write([once])
    await store.write([once, once])

    assert await store.query(raw("dev-1")) == [
        StoredReading("dev-1", THIS_HOUR + 5, {"temp": 20.5, "on": False}, {"room": "lab"})
    ]


async def test_a_rewrite_of_the_same_device_time_and_metric_replaces_the_value(
    store: TimeSeriesStore,
) -> None:
    await store.write([reading("dev-1", THIS_HOUR, temp=20.0)])
    await store.write([reading("dev-1", THIS_HOUR, temp=25.0)])

    assert [r.metrics for r in await store.query(raw("dev-1"))] == [{"temp": 25.0}]


async def test_within_one_batch_the_later_of_two_values_for_the_same_metric_wins(
    store: TimeSeriesStore,
) -> None:
    await store.write(
        [reading("dev-1", THIS_HOUR, temp=20.0), reading("dev-1", THIS_HOUR, temp=25.0)]
    )

    assert [r.metrics for r in await store.query(raw("dev-1"))] == [{"temp": 25.0}]


async def test_non_finite_numbers_are_not_stored(store: TimeSeriesStore) -> None:
    await store.write(
        [
            reading("dev-1", THIS_HOUR, temp=float("nan"), humidity=40.0),
            reading("dev-1", THIS_HOUR + 1, temp=float("inf")),
        ]
    )

    assert [(r.timestamp_ns, r.metrics) for r in await store.query(raw("dev-1"))] == [
        (THIS_HOUR, {"humidity": 40.0})
    ]


# --- tags


async def test_search_by_tag_finds_readings_of_any_device_oldest_first(store: TimeSeriesStore) -> None:
    odd = 'b "2", =x ${y}'
    await store.write(
        [
            reading("dev-2", THIS_HOUR + 2, {"building": odd, "floor": "3"}, temp=2.0, state="ok"),
            reading("dev-1", THIS_HOUR + 1, {"building": odd}, temp=1.0),
            reading("dev-1", THIS_HOUR + 3, {"building": "a"}, temp=3.0),
            reading("dev-3", THIS_HOUR + 4, {"site": odd}, temp=4.0),
            reading("dev-3", THIS_HOUR + 5, {"building": odd}, temp=5.0),
        ]
    )

    found = await store.search_by_tag(TagQuery("building", odd, *EVERYTHING))
    first_two = await store.search_by_tag(TagQuery("building", odd, *EVERYTHING, limit=2))

    assert found == [
        StoredReading("dev-1", THIS_HOUR + 1, {"temp": 1.0}, {"building": odd}),
        StoredReading("dev-2", THIS_HOUR + 2, {"temp": 2.0, "state": "ok"}, {"building": odd, "floor": "3"}),
        StoredReading("dev-3", THIS_HOUR + 5, {"temp": 5.0}, {"building": odd}),
    ]
    assert first_two == found[:2]
    assert await store.search_by_tag(TagQuery("building", odd, THIS_HOUR + 2, THIS_HOUR + 5)) == [
        found[1]
    ]


# --- raw aggregates


@pytest.fixture
def fleet() -> list[Reading]:
    """Thermometers a1 and a2 share 1..10 in the first hour; hygrometer b1 reads 1000."""
    hour = THIS_HOUR - HOUR
    return [
        *(reading("a1", hour + i * MINUTE, temp=float(v)) for i, v in enumerate([1, 2, 3, 4, 5])),
        *(reading("a2", hour + i * MINUTE, temp=float(v)) for i, v in enumerate([6, 7, 8, 9, 10])),
        reading("b1", hour + 30 * MINUTE, device_type="hygrometer", temp=1000.0),
        reading("a1", THIS_HOUR + 10 * MINUTE, temp=0.5),
    ]


async def test_raw_aggregates_group_devices_by_id_or_type_with_exact_statistics(
    store: TimeSeriesStore, fleet: list[Reading]
) -> None:
    await store.write(fleet)
    thermometers = [
        Bucket(THIS_HOUR - HOUR, count=10, sum=55.0, min=1.0, max=10.0, p50=5.0, p90=9.0, p99=10.0),
        Bucket(THIS_HOUR, count=1, sum=0.5, min=0.5, max=0.5, p50=0.5, p90=0.5, p99=0.5),
    ]

    by_ids = await store.aggregate(agg("temp", HOUR, device_ids=("a1", "a2"), percentiles=True))
    by_type = await store.aggregate(agg("temp", HOUR, device_type="thermometer", percentiles=True))
    one = await store.aggregate(agg("temp", HOUR, device_ids=("b1",)))
    everyone = await store.aggregate(agg("temp", DAY))

    assert by_ids == thermometers
    assert by_type == thermometers
    assert one == [Bucket(THIS_HOUR - HOUR, count=1, sum=1000.0, min=1000.0, max=1000.0)]
    assert everyone == [Bucket(TODAY, count=12, sum=1055.5, min=0.5, max=1000.0)]


async def test_buckets_start_at_multiples_of_the_interval_and_only_non_empty_ones_come_back(
    store: TimeSeriesStore, fleet: list[Reading]
) -> None:
    await store.write(fleet)

    buckets = await store.aggregate(
        agg("temp", 15 * MINUTE, start=THIS_HOUR - HOUR + MINUTE, end=THIS_HOUR + HOUR, device_ids=("a1",))
    )

    assert [(b.start_ns, b.count, b.sum) for b in buckets] == [
        (THIS_HOUR - HOUR, 4, 14.0),  # the 1st value (minute 0) is before the range start
        (THIS_HOUR, 1, 0.5),
    ]


async def test_booleans_aggregate_as_zero_and_one_and_strings_are_not_aggregated(
    store: TimeSeriesStore,
) -> None:
    await store.write(
        [reading("dev-1", THIS_HOUR + i, door=v, state="open") for i, v in enumerate([True, False, True])]
    )

    assert await store.aggregate(agg("door", HOUR)) == [Bucket(THIS_HOUR, 3, 2.0, 0.0, 1.0)]
    assert await store.aggregate(agg("state", HOUR)) == []


# --- rollups


async def write_two_days(store: TimeSeriesStore) -> None:
    """Readings every 20 minutes from yesterday 09:00 to now, on two thermometers and a
    hygrometer, with a boolean beside the number."""
    start = TODAY - DAY + 9 * HOUR
    readings = [
        reading(
            device, ts, device_type="hygrometer" if device == "h1" else "thermometer",
            temp=float((ts - start) // (20 * MINUTE) % 17) + n * 0.5, on=(ts // MINUTE) % 3 == 0,
        )
        for n, device in enumerate(["t1", "t2", "h1"])
        for ts in range(start, NOW, 20 * MINUTE)
    ]
    await store.write(readings)


async def rollups(store: TimeSeriesStore, metric: str = "temp") -> list[list[Bucket]]:
    return [
        await store.aggregate(agg(metric, HOUR, Resolution.HOURLY)),
        await store.aggregate(agg(metric, DAY, Resolution.DAILY)),
        await store.aggregate(agg(metric, 2 * HOUR, Resolution.HOURLY, device_type="thermometer")),
    ]


async def test_after_maintain_hourly_and_daily_rollups_equal_the_raw_aggregates(
    store: TimeSeriesStore,
) -> None:
    await write_two_days(store)

    await store.maintain(NOW)

    for metric in ("temp", "on"):
        hourly, daily, paired = await rollups(store, metric)
        assert hourly == await store.aggregate(agg(metric, HOUR))
        assert daily == await store.aggregate(agg(metric, DAY))
        assert paired == await store.aggregate(agg(metric, 2 * HOUR, device_type="thermometer"))
        assert len(hourly) == 28 and len(daily) == 2
    assert await store.aggregate(agg("temp", HOUR, Resolution.HOURLY, device_ids=("t2",))) == (
        await store.aggregate(agg("temp", HOUR, device_ids=("t2",)))
    )


async def test_maintain_again_or_from_a_restarted_process_gives_the_same_rollups(
    backend: Backend,
) -> None:
    first = backend.open()
    await write_two_days(first)
    await first.maintain(NOW)
    expected = await rollups(first)

    await first.maintain(NOW)
    assert await rollups(first) == expected

    await first.close()
    restarted = backend.open()
    await restarted.maintain(NOW)
    assert await rollups(restarted) == expected


async def test_a_restarted_process_rolls_up_the_current_and_previous_hour_it_did_not_see_written(
    backend: Backend,
) -> None:
    crashed = backend.open()
    await crashed.write(
        [reading("t1", THIS_HOUR - HOUR + 5 * MINUTE, temp=1.0), reading("t1", THIS_HOUR, temp=2.0)]
    )
    await crashed.close()

    restarted = backend.open()
    await restarted.maintain(NOW)

    assert await restarted.aggregate(agg("temp", HOUR, Resolution.HOURLY)) == [
        Bucket(THIS_HOUR - HOUR, 1, 1.0, 1.0, 1.0),
        Bucket(THIS_HOUR, 1, 2.0, 2.0, 2.0),
    ]
    assert await restarted.aggregate(agg("temp", DAY, Resolution.DAILY)) == [
        Bucket(TODAY, 2, 3.0, 1.0, 2.0)
    ]


async def test_a_late_reading_updates_its_old_hour_and_a_redelivery_is_not_counted_twice(
    store: TimeSeriesStore,
) -> None:
    old_hour = THIS_HOUR - 5 * HOUR
    first = reading("t1", old_hour + MINUTE, temp=4.0)
    await store.write([first])
    await store.maintain(NOW)

    await store.write([first, reading("t1", old_hour + 2 * MINUTE, temp=6.0)])
    await store.maintain(NOW)

    assert await store.aggregate(agg("temp", HOUR, Resolution.HOURLY)) == [
        Bucket(old_hour, 2, 10.0, 4.0, 6.0)
    ]
    assert await store.aggregate(agg("temp", DAY, Resolution.DAILY)) == [
        Bucket(TODAY, 2, 10.0, 4.0, 6.0)
    ]


async def assert_rollups_equal_raw_aggregates(store: TimeSeriesStore, *, thorough: bool = True) -> None:
    """Over yesterday and today; ``thorough``: per device and type, booleans too."""
    span = {"start": TODAY - DAY, "end": TODAY + DAY}
    narrowed: list[dict[str, Any]] = [{}]
    if thorough:
        narrowed += [{"device_type": "thermometer"}, {"device_ids": ("t2",)}]
    for metric in ("temp", "on") if thorough else ("temp",):
        for narrow in narrowed:
            assert await store.aggregate(agg(metric, HOUR, Resolution.HOURLY, **span, **narrow)) == (
                await store.aggregate(agg(metric, HOUR, **span, **narrow))
            ), (metric, narrow)
            assert await store.aggregate(agg(metric, DAY, Resolution.DAILY, **span, **narrow)) == (
                await store.aggregate(agg(metric, DAY, **span, **narrow))
            ), (metric, narrow)


def live(devices: tuple[str, ...], start: int, end: int, step: int = 2 * MINUTE, bump: float = 0.0) -> list[Reading]:
    """A reading every ``step`` in [start, end) per device; values exact in binary floating point,
    so sums do not depend on the order they are added in."""
    return [
        reading(
            device, ts, device_type="hygrometer" if device == "h1" else "thermometer",
            temp=float(ts // MINUTE % 23) * 0.25 + n + bump, on=(ts // MINUTE + n) % 3 == 0,
        )
        for n, device in enumerate(devices)
        for ts in range(start - start % step + (step if start % step else 0), end, step)
    ]


@pytest.mark.parametrize("dirty_limit", [200_000, 3], ids=["dirty-set-fine", "dirty-set-coarsened"])
async def test_rollups_equal_the_raw_aggregates_through_rounds_of_live_late_and_rewritten_data(
    backend: Backend, dirty_limit: int
) -> None:
    """Maintain after each round, ``now`` moving 7 minutes a round across 5-minute buckets, an
    hour and midnight. Each round: new readings up to ``now``; every other round late readings
    into an earlier 5-minute bucket of the hour, into an earlier hour of yesterday the store has
    rolled up, into two hours from before its first maintain; the previous round's readings again
    (a redelivery) and some of them with new values (a rewrite). A tiny ``dirty_limit`` makes the
    store coarsen its marks."""
    store = backend.open(dirty_limit=dirty_limit)
    devices = ("t1", "t2", "h1")
    now = TODAY - 40 * MINUTE  # yesterday 23:20
    await store.write(live(devices, now - 90 * MINUTE, now))
    await store.maintain(now)
    await assert_rollups_equal_raw_aggregates(store, thorough=False)
    previous: list[Reading] = []
    for round_ in range(1, 10):
        then, now = now, now + 7 * MINUTE
        batch = live(devices, then, now)
        if round_ % 2:
            hour = now - now % HOUR
            batch += [
                reading("t1", max(hour, now - 20 * MINUTE) + 17 * SECOND, temp=100.0 + round_, on=True),
                reading("t1", TODAY - 90 * MINUTE + round_ * SECOND, temp=2.25, on=False),
                reading("t2", TODAY - 9 * HOUR + round_ * MINUTE, temp=-3.5, on=False),
                reading("h1", TODAY - DAY + 3 * HOUR + round_ * MINUTE, device_type="hygrometer", temp=7.0, on=True),
            ]
        rewritten = [
            reading(r.device_id, r.timestamp_ns, device_type=r.device_type, temp=float(r.metrics["temp"]) + 0.5)
            for r in previous[::3]
        ]
        await store.write(batch)
        await store.write(previous)
        await store.write(rewritten)
        await store.maintain(now)
        await assert_rollups_equal_raw_aggregates(store, thorough=False)
        previous = batch
    await assert_rollups_equal_raw_aggregates(store)
    hourly = await store.aggregate(agg("temp", HOUR, Resolution.HOURLY))
    assert [b.start_ns for b in hourly] == [
        TODAY - DAY + 3 * HOUR, TODAY - 9 * HOUR, *range(TODAY - 3 * HOUR, TODAY + HOUR, HOUR)
    ]


async def test_a_bounded_dirty_set_coarsens_but_every_write_is_still_recomputed() -> None:
    """Both stores keep their marks in ``DirtyBuckets``: past its bounds it widens them (every
    partial of an hour, every series of a bucket); the plan still covers every write."""
    dirty: DirtyBuckets[str] = DirtyBuckets(max_keys=4, max_buckets=3)
    written = [
        (THIS_HOUR, {"a"}),
        (THIS_HOUR + PARTIAL_NS, {"b"}),
        (THIS_HOUR + 2 * PARTIAL_NS, {"a", "c"}),
        (THIS_HOUR + HOUR, {"d"}),  # a 4th partial bucket: partials fold into hours
        (THIS_HOUR + HOUR + PARTIAL_NS, {"e"}),  # a 5th key: the fullest hour forgets its keys
    ]
    for partial, keys in written:
        dirty.mark(partial, keys)

    drained = dirty.drain()
    trusting = plan_maintenance(NOW, drained, THIS_HOUR - HOUR, 30, 730)
    distrusting = plan_maintenance(NOW, drained, THIS_HOUR + HOUR, 30, 730)

    assert (drained.partials, drained.hours) == ({}, {THIS_HOUR: None, THIS_HOUR + HOUR: {"d", "e"}})
    for partial, keys in written:
        assert trusting.partials[partial] is None or keys <= (trusting.partials[partial] or set())
    assert len(trusting.partials) == 24 and set(trusting.hours) == {THIS_HOUR, THIS_HOUR + HOUR}
    assert distrusting.raw_hours == {THIS_HOUR: None}
    assert distrusting.partials == {
        THIS_HOUR + HOUR + n * PARTIAL_NS: {"d", "e"} for n in range(12)
    }
    assert dirty.drain().partials == {}


async def test_a_restarted_process_converges_then_rolls_up_what_it_writes(backend: Backend) -> None:
    """The first process rolls up an earlier hour, writes to it again and to the previous and
    current hours, and dies before its next maintain. The next one recomputes the previous and
    current hours on its first maintain; a late reading into the earlier hour, of which it trusts
    no partials, brings that hour back from raw data for that device, the dead process's last
    readings there included. (Those of other devices in that hour wait for a write there: no
    process knows of them.)"""
    devices = ("t1", "t2", "h1")
    earlier = THIS_HOUR - 3 * HOUR
    crashed = backend.open()
    await crashed.write(live(devices, earlier, earlier + 20 * MINUTE))
    await crashed.maintain(earlier + 20 * MINUTE)
    await crashed.write(live(("t1",), earlier + 20 * MINUTE, earlier + 40 * MINUTE))
    await crashed.write(live(devices, THIS_HOUR - HOUR, NOW))
    await crashed.close()

    restarted = backend.open()
    await restarted.maintain(NOW)
    assert await restarted.aggregate(agg("temp", HOUR, Resolution.HOURLY, start=THIS_HOUR - HOUR)) == (
        await restarted.aggregate(agg("temp", HOUR, start=THIS_HOUR - HOUR))
    )

    await restarted.write([reading("t1", earlier + 50 * MINUTE, temp=1.25, on=True)])
    await restarted.write(live(devices, NOW, NOW + 9 * MINUTE))
    await restarted.maintain(NOW + 9 * MINUTE)
    await assert_rollups_equal_raw_aggregates(restarted, thorough=False)
    await restarted.write(live(devices, NOW + 9 * MINUTE, NOW + 40 * MINUTE, bump=0.25))
    await restarted.maintain(NOW + 40 * MINUTE)
    await assert_rollups_equal_raw_aggregates(restarted)
    assert [b.start_ns for b in await restarted.aggregate(agg("temp", HOUR, Resolution.HOURLY))] == [
        earlier, THIS_HOUR - HOUR, THIS_HOUR, THIS_HOUR + HOUR
    ]


# --- retention


async def test_maintain_drops_raw_data_past_retention_and_rollups_past_theirs(
    backend: Backend,
) -> None:
    store = backend.open(retention_days=30, rollup_retention_days=60)
    very_old, old, recent = NOW - 70 * DAY, NOW - 45 * DAY, NOW - HOUR
    await store.write(
        [reading("t1", ts, {"kind": "probe"}, temp=float(n)) for n, ts in enumerate([very_old, old, recent])]
    )
    await store.maintain(very_old + HOUR)  # rolls everything up while it is all within retention
    hours = [ts - ts % HOUR for ts in (very_old, old, recent)]
    assert [b.start_ns for b in await store.aggregate(agg("temp", HOUR, Resolution.HOURLY))] == hours

    await store.maintain(NOW)

    assert [r.timestamp_ns for r in await store.query(raw("t1"))] == [recent]
    assert [r.timestamp_ns for r in await store.search_by_tag(TagQuery("kind", "probe", *EVERYTHING))] == [
        recent
    ]
    assert [b.start_ns for b in await store.aggregate(agg("temp", HOUR, Resolution.HOURLY))] == hours[1:]
    assert [b.start_ns for b in await store.aggregate(agg("temp", DAY, Resolution.DAILY))] == [
        ts - ts % DAY for ts in (old, recent)
    ]


async def test_a_late_reading_older_than_raw_retention_does_not_overwrite_its_rollup(
    backend: Backend,
) -> None:
    store = backend.open(retention_days=30)
    old_hour = THIS_HOUR - 40 * DAY
    await store.write([reading("t1", old_hour + MINUTE, temp=1.0), reading("t1", old_hour + 2 * MINUTE, temp=2.0)])
    await store.maintain(old_hour + HOUR)

    await store.maintain(NOW)  # drops the raw points; the rollup stays
    await store.write([reading("t1", old_hour + 3 * MINUTE, temp=3.0)])
    await store.maintain(NOW)

    assert await store.aggregate(agg("temp", HOUR, Resolution.HOURLY)) == [Bucket(old_hour, 2, 3.0, 1.0, 2.0)]


# --- readings a store refuses for good


@pytest.fixture
def influx_store(backend: Backend) -> TimeSeriesStore:
    assert backend.name == "influxdb", "mark the test with @influxdb_only"
    return backend.open()


# A metric's type and line-protocol names are InfluxDB's constraints: these run on it alone.
influxdb_only = pytest.mark.parametrize("backend", ["influxdb"], indirect=True)


@influxdb_only
async def test_influxdb_refuses_a_metric_that_changes_type_as_a_permanent_error(
    influx_store: TimeSeriesStore,
) -> None:
    await influx_store.write([reading("dev-1", THIS_HOUR, kind=1.0)])
    await influx_store.maintain(NOW)

    with pytest.raises(PermanentWriteError, match="field type conflict"):
        await influx_store.write(
            [reading("dev-1", THIS_HOUR + 1, kind="valve"), reading("dev-2", THIS_HOUR + 1, temp=3.0)]
        )

    # InfluxDB keeps the batch's other readings, and they are rolled up like any.
    assert [r.metrics for r in await influx_store.query(raw("dev-2"))] == [{"temp": 3.0}]
    await influx_store.maintain(NOW)
    assert await influx_store.aggregate(agg("temp", HOUR, Resolution.HOURLY)) == [
        Bucket(THIS_HOUR, 1, 3.0, 3.0, 3.0)
    ]


@pytest.mark.parametrize(
    "bad",
    [
        reading("dev\\1", THIS_HOUR, temp=1.0),
        reading("dev-1", THIS_HOUR, {"room": "a\nb"}, temp=1.0),
        reading("dev-1", THIS_HOUR, **{"te\rmp": 1.0}),
        reading("dev-1", THIS_HOUR, time=1.0),
    ],
    ids=["backslash-in-device", "newline-in-tag", "carriage-return-in-metric", "metric-named-time"],
)
@influxdb_only
async def test_influxdb_refuses_names_line_protocol_cannot_carry_as_a_permanent_error(
    influx_store: TimeSeriesStore, bad: Reading
) -> None:
    with pytest.raises(PermanentWriteError):
        await influx_store.write([reading("dev-2", THIS_HOUR, temp=2.0), bad])

    assert await influx_store.query(raw("dev-2")) == []  # nothing of the batch was sent


# --- nothing there, and nobody there


async def test_an_empty_store_answers_every_question_with_nothing(store: TimeSeriesStore) -> None:
    await store.maintain(NOW)

    assert await store.query(raw("nobody")) == []
    assert await store.search_by_tag(TagQuery("room", "lab", *EVERYTHING)) == []
    for resolution, interval in ((Resolution.RAW, HOUR), (Resolution.HOURLY, HOUR), (Resolution.DAILY, DAY)):
        assert await store.aggregate(agg("temp", interval, resolution)) == []

    await store.write([reading("dev-1", THIS_HOUR, {"room": "lab"}, temp=1.0)])
    assert await store.query(raw("dev-1", metrics=("humidity",))) == []
    assert await store.query(raw("dev-1", THIS_HOUR + 1, THIS_HOUR + HOUR)) == []
    assert await store.aggregate(agg("temp", HOUR, device_ids=())) == []
    assert await store.aggregate(agg("temp", HOUR, device_type="hygrometer")) == []
    assert await store.search_by_tag(TagQuery("room", "office", *EVERYTHING)) == []


async def test_check_passes_on_a_live_store(store: TimeSeriesStore) -> None:
    await store.check()


async def test_a_store_that_cannot_be_reached_raises_on_check_and_write(backend: Backend) -> None:
    store = backend.unreachable()

    with pytest.raises(Exception):
        await store.check()
    with pytest.raises(Exception):
        await store.write([reading("dev-1", THIS_HOUR, temp=1.0)])

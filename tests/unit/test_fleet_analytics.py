"""FleetAnalytics, the query handler, specified with fakes behind its ports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from iot_platform.application.analytics.model import (
    AnomalousReading,
    DeviceCounts,
    DeviceGroup,
    GroupLatest,
    LatestValue,
    Outlier,
    OutlierMethod,
)
from iot_platform.application.analytics.queries import AnalyticsLimits, FleetAnalytics
from iot_platform.application.errors import NotFound
from iot_platform.application.telemetry.model import (
    AggregateQuery,
    Bucket,
    MetricValue,
    RawQuery,
    Reading,
    StoredReading,
    TagQuery,
)
from iot_platform.application.telemetry.queries import InvalidQuery

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = 1_000_000_000


class FakeReadModel:
    def __init__(self) -> None:
        self.counts = DeviceCounts(0, {}, {})
        self.last_seen: list[datetime] = []
        self.alerts: dict[str, int] = {}
        self.latest: dict[str, GroupLatest] = {}
        self.groups_asked: list[DeviceGroup] = []
        self.devices: set[str] = set()

    async def device_counts(self) -> DeviceCounts:
        return self.counts

    async def seen_since(self, moments: Sequence[datetime]) -> list[int]:
        return [sum(1 for seen in self.last_seen if seen >= m) for m in moments]

    async def open_alerts_by_severity(self) -> dict[str, int]:
        return self.alerts

    async def latest_values(self, metric: str, group: DeviceGroup) -> GroupLatest:
        self.groups_asked.append(group)
        return self.latest.get(metric, GroupLatest(0, []))

    async def device_exists(self, device_id: str) -> bool:
        return device_id in self.devices


class FakeTimeSeries:
    """Only raw queries: what anomaly detection reads."""

    def __init__(self) -> None:
        self.readings: list[StoredReading] = []
        self.queries: list[RawQuery] = []

    def add(self, device_id: str, *values: tuple[int, MetricValue], metric: str = "t") -> None:
        self.readings += [StoredReading(device_id, ts, {metric: v}, {}) for ts, v in values]

    async def query(self, query: RawQuery) -> list[StoredReading]:
        self.queries.append(query)
        found = sorted(
            (
                r for r in self.readings
                if r.device_id == query.device_id and query.start_ns <= r.timestamp_ns < query.end_ns
                and any(m in r.metrics for m in query.metrics)
            ),
            key=lambda r: r.timestamp_ns,
            reverse=query.descending,
        )
        return found[: query.limit]

    async def write(self, readings: Sequence[Reading]) -> None:
        raise NotImplementedError

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        raise NotImplementedError

    async def search_by_tag(self, query: TagQuery) -> list[StoredReading]:
        raise NotImplementedError

    async def maintain(self, now_ns: int) -> None:
        raise NotImplementedError

    async def check(self) -> None:
        pass

    async def close(self) -> None:
        pass


class FixedRate:
    window_seconds = 60

    def per_second(self) -> float:
        return 2.5


def analytics(
    read_model: FakeReadModel, store: FakeTimeSeries | None = None, **limits: float
) -> FleetAnalytics:
    return FleetAnalytics(
        read_model, store or FakeTimeSeries(), FixedRate(), AnalyticsLimits(**limits),  # type: ignore[arg-type]
        clock=lambda: NOW,
    )


async def test_the_overview_counts_devices_activity_open_alerts_and_the_ingestion_rate() -> None:
    model = FakeReadModel()
    model.counts = DeviceCounts(3, {"active": 2, "decommissioned": 1}, {"th": 3})
    model.last_seen = [NOW - timedelta(minutes=5), NOW - timedelta(hours=3), NOW - timedelta(days=2)]
    model.alerts = {"critical": 2}

    overview = await analytics(model).overview()

    assert overview.as_of == NOW
    assert overview.devices == model.counts
    assert (overview.active_last_hour, overview.active_last_day) == (1, 2)
    assert overview.open_alerts == {"info": 0, "warning": 0, "critical": 2}
    assert (overview.ingestion_rate_per_second, overview.rate_window_seconds) == (2.5, 60)


async def test_fleet_statistics_count_numbers_and_booleans_and_leave_strings_out() -> None:
    model = FakeReadModel()
    group = DeviceGroup("th", {"site": "hq"})
    model.latest["t"] = GroupLatest(
        devices=6,
        values=[LatestValue(d, "th", v, 1) for d, v in
                (("a", 10), ("b", 20.0), ("c", True), ("d", "broken"), ("e", 30.5))],
    )

    stats = await analytics(model).fleet_stats("t", group)

    assert model.groups_asked == [group]
    assert (stats.devices, stats.not_numeric) == (6, 1)
    values = sorted([10.0, 20.0, 1.0, 30.5])
    s = stats.summary
    assert (s.count, s.avg, s.min, s.max) == (4, sum(values) / 4, 1.0, 30.5)
    assert (s.p50, s.p90, s.p99) == (10.0, 30.5, 30.5)  # ranks ceil(2)=2, ceil(3.6)=4, ceil(3.96)=4


async def test_an_empty_group_has_a_zero_count_and_no_figures() -> None:
    stats = await analytics(FakeReadModel()).fleet_stats("t", DeviceGroup())
    assert (stats.devices, stats.summary.count, stats.summary.avg, stats.summary.p99) == (0, 0, None, None)


def steady_history(n: int = 20) -> list[tuple[int, MetricValue]]:
    """Alternating 10 and 12 each second: mean 11, deviation 1."""
    return [(i * S, 10.0 if i % 2 == 0 else 12.0) for i in range(n)]


async def test_device_anomalies_are_the_readings_whose_zscore_in_the_window_exceeds_the_threshold() -> None:
    model, store = FakeReadModel(), FakeTimeSeries()
    model.devices.add("d1")
    history = steady_history() + [(100 * S, 40.0), (101 * S, "n/a"), (102 * S, False)]
    store.add("d1", *history)
    store.add("d2", (5 * S, 1000.0))  # another device's history is not this one's

    result = await analytics(model, store).device_anomalies("d1", "t", 0, 200 * S, threshold=3.0)

    values = [10.0 if i % 2 == 0 else 12.0 for i in range(20)] + [40.0, 0.0]
    mean = sum(values) / len(values)
    stddev = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    assert (result.examined, result.truncated, result.mean, result.stddev) == (22, False, mean, stddev)
    assert result.anomalies == [AnomalousReading(100 * S, 40.0, (40.0 - mean) / stddev)]
    assert result.oldest_examined_ns == 0
    assert result.threshold == 3.0


async def test_the_default_threshold_comes_from_the_configuration() -> None:
    model, store = FakeReadModel(), FakeTimeSeries()
    model.devices.add("d1")
    store.add("d1", *steady_history(), (100 * S, 14.0))  # |z| a little over 2.5

    strict = await analytics(model, store, zscore_threshold=2.0).device_anomalies("d1", "t", 0, 200 * S)
    lenient = await analytics(model, store).device_anomalies("d1", "t", 0, 200 * S)

    assert [a.timestamp_ns for a in strict.anomalies] == [100 * S]
    assert (lenient.threshold, lenient.anomalies) == (3.0, [])


async def test_only_the_newest_readings_up_to_the_bound_are_examined_and_the_answer_says_so() -> None:
    model, store = FakeReadModel(), FakeTimeSeries()
    model.devices.add("d1")
    store.add("d1", (0, 1000.0), *[(i * S, 5.0) for i in range(1, 5)])

    result = await analytics(model, store, max_anomaly_readings=4).device_anomalies("d1", "t", 0, 10 * S)

    assert store.queries[-1] == RawQuery("d1", 0, 10 * S, ("t",), limit=5, descending=True)
    assert (result.examined, result.truncated, result.max_readings) == (4, True, 4)
    assert (result.oldest_examined_ns, result.mean, result.stddev, result.anomalies) == (S, 5.0, 0.0, [])


async def test_an_unknown_device_is_not_found_and_a_reversed_window_is_refused() -> None:
    with pytest.raises(NotFound):
        await analytics(FakeReadModel()).device_anomalies("ghost", "t", 0, S)
    with pytest.raises(InvalidQuery) as refused:
        await analytics(FakeReadModel()).device_anomalies("ghost", "t", S, S)
    assert refused.value.field == "from"
    with pytest.raises(InvalidQuery) as bad_threshold:
        await analytics(FakeReadModel()).fleet_outliers("t", DeviceGroup(), threshold=0)
    assert bad_threshold.value.field == "threshold"


async def test_a_device_without_readings_in_the_window_has_no_figures() -> None:
    model = FakeReadModel()
    model.devices.add("d1")
    result = await analytics(model).device_anomalies("d1", "t", 0, S)
    assert (result.examined, result.mean, result.stddev, result.anomalies) == (0, None, None, [])


def fleet(model: FakeReadModel, *values: tuple[str, MetricValue]) -> DeviceGroup:
    group = DeviceGroup()
    model.latest["t"] = GroupLatest(
        len(values), [LatestValue(d, "th", v, i * S) for i, (d, v) in enumerate(values)]
    )
    return group


async def test_robust_fleet_outliers_find_devices_far_from_the_median() -> None:
    model = FakeReadModel()
    group = fleet(model, ("a", 20.0), ("b", 21.0), ("c", 22.0), ("d", 23.0), ("e", 24.0),
                  ("hot", 60.0), ("cold", -10.0), ("text", "off"))

    result = await analytics(model).fleet_outliers("t", group)

    # -10 20 21 [22] 23 24 60: median 22; deviations 0 1 1 [2] 2 32 38: MAD 2
    scale = 2 * 1.482602218505602
    assert (result.method, result.examined, result.center, result.scale) == (
        OutlierMethod.ROBUST, 7, 22.0, scale
    )
    assert result.outliers == [
        Outlier("hot", "th", 60.0, 5 * S, (60.0 - 22.0) / scale),
        Outlier("cold", "th", -10.0, 6 * S, (-10.0 - 22.0) / scale),
    ]


async def test_the_classic_zscore_method_is_masked_by_the_outliers_it_measures() -> None:
    model = FakeReadModel()
    group = fleet(model, ("a", 20.0), ("b", 21.0), ("c", 22.0), ("d", 23.0), ("e", 24.0),
                  ("hot", 60.0), ("cold", -10.0))

    result = await analytics(model).fleet_outliers("t", group, method=OutlierMethod.ZSCORE)

    values = [20.0, 21.0, 22.0, 23.0, 24.0, 60.0, -10.0]
    mean = sum(values) / 7
    assert result.center == mean
    assert result.outliers == []  # the same two devices stay under |z| = 3
    lower = await analytics(model).fleet_outliers("t", group, threshold=1.5, method=OutlierMethod.ZSCORE)
    assert [o.device_id for o in lower.outliers] == ["hot", "cold"]

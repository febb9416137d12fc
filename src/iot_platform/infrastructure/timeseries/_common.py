"""What both time-series adapters must agree on, kept in one place so they cannot drift apart:
how a value is stored, where a bucket starts, how a percentile is picked, and which rollup
buckets a ``maintain`` recomputes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from iot_platform.application.telemetry.model import NS_PER_DAY, NS_PER_HOUR, MetricValue

log = logging.getLogger(__name__)

K = TypeVar("K")

PERCENTILES = (0.5, 0.9, 0.99)

StoredValue = float | bool | str


def storable(value: MetricValue) -> StoredValue | None:
    """Numbers are stored as floats, so a metric never changes type between an int and a float
    reading (InfluxDB would reject the second as a field type conflict). NaN and infinities
    have no representation in InfluxDB, so neither store keeps them (None: skip the value).
    """
    if isinstance(value, bool | str):
        return value
    number = float(value)
    return number if math.isfinite(number) else None


def bucket_start(ts_ns: int, interval_ns: int) -> int:
    """The start of the bucket holding ``ts_ns``; buckets start at multiples of the interval
    since the epoch (floor division, so pre-1970 timestamps land in the right bucket too)."""
    return ts_ns - ts_ns % interval_ns


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``q`` of the values at or
    below it. Index ``ceil(q*n) - 1``, which is what InfluxDB's ``quantile(method:
    "exact_selector")`` picks, so both stores answer the same number."""
    index = max(math.ceil(q * len(sorted_values)) - 1, 0)
    return sorted_values[index]


def percentiles(values: Iterable[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p50, p90, p99 = (nearest_rank(ordered, q) for q in PERCENTILES)
    return p50, p90, p99


def check_rollup_interval(interval_ns: int, granularity_ns: int) -> None:
    if interval_ns <= 0 or interval_ns % granularity_ns:
        raise ValueError(
            f"interval {interval_ns}ns is not a multiple of the rollup granularity {granularity_ns}ns"
        )


class DirtyBuckets(Generic[K]):
    """Rollup buckets written to since the last ``maintain``, with the keys (series) touched.

    Bounded: past ``max_keys`` remembered keys, the bucket being marked forgets its keys and
    becomes "every key" (None), which costs a wider recompute but never a wrong one. Past
    ``max_buckets`` distinct buckets, new buckets are dropped with a warning; those hours are
    still recomputed if they are the current or previous one.
    """

    def __init__(self, max_buckets: int = 20_000, max_keys: int = 200_000) -> None:
        self._buckets: dict[int, set[K] | None] = {}
        self._size = 0
        self._dropped = 0
        self._max_buckets = max_buckets
        self._max_keys = max_keys

    def mark(self, bucket: int, key: K) -> None:
        if bucket not in self._buckets:
            if self._admit(bucket):
                self._buckets[bucket] = {key}
                self._size += 1
            return
        keys = self._buckets[bucket]
        if keys is not None and key not in keys:
            keys.add(key)
            self._size += 1
            if self._size > self._max_keys:
                self._size -= len(keys)
                self._buckets[bucket] = None

    def mark_all(self, bucket: int) -> None:
        if bucket not in self._buckets:
            if self._admit(bucket):
                self._buckets[bucket] = None
            return
        keys = self._buckets[bucket]
        if keys is not None:
            self._size -= len(keys)
            self._buckets[bucket] = None

    def _admit(self, bucket: int) -> bool:
        if len(self._buckets) < self._max_buckets:
            return True
        self._dropped += 1
        return False

    def drain(self) -> dict[int, set[K] | None]:
        if self._dropped:
            log.warning(
                "%d writes fell in rollup buckets past the dirty-bucket limit; only the current "
                "and previous hour of those are recomputed", self._dropped,
            )
        drained, self._buckets, self._size, self._dropped = self._buckets, {}, 0, 0
        return drained

    def restore(self, drained: dict[int, set[K] | None]) -> None:
        """Puts back what a failed ``maintain`` drained, so the next one retries it."""
        for bucket, keys in drained.items():
            if keys is None:
                self.mark_all(bucket)
            else:
                for key in keys:
                    self.mark(bucket, key)


@dataclass(frozen=True, slots=True)
class MaintenancePlan(Generic[K]):
    """What one ``maintain(now)`` does, the same for both stores.

    Hours to recompute from raw data: the current and previous hour (every series, so a restarted
    process that lost its dirty set still converges) plus the dirty ones. Dirty hours that start
    before the raw retention cutoff are left alone: their raw data is already partly gone, and a
    recompute would replace a complete rollup with a partial one. Days are recomputed from the
    hourly rollups: the current and previous day, and every day holding a recomputed hour.
    """

    hours: dict[int, set[K] | None]
    days: dict[int, set[K] | None]
    raw_cutoff_ns: int
    """Raw points before this are dropped."""
    hourly_keep_from_ns: int
    """Hourly rollup rows starting before this are dropped (they end at or before the cutoff)."""
    daily_keep_from_ns: int


def plan_maintenance(
    now_ns: int,
    dirty: dict[int, set[K] | None],
    retention_days: int,
    rollup_retention_days: int,
) -> MaintenancePlan[K]:
    raw_cutoff = now_ns - retention_days * NS_PER_DAY
    rollup_cutoff = now_ns - rollup_retention_days * NS_PER_DAY
    current_hour = bucket_start(now_ns, NS_PER_HOUR)
    hours: dict[int, set[K] | None] = {
        hour: keys for hour, keys in dirty.items() if hour >= raw_cutoff and hour >= rollup_cutoff
    }
    for hour in (current_hour - NS_PER_HOUR, current_hour):
        hours[hour] = None
    current_day = bucket_start(now_ns, NS_PER_DAY)
    days: dict[int, set[K] | None] = {current_day - NS_PER_DAY: None, current_day: None}
    for hour, keys in hours.items():
        day = bucket_start(hour, NS_PER_DAY)
        if day not in days:
            days[day] = None if keys is None else set(keys)
        else:
            known = days[day]
            if known is not None:
                if keys is None:
                    days[day] = None
                else:
                    known |= keys
    return MaintenancePlan(
        hours=dict(sorted(hours.items())),
        days=dict(sorted(days.items())),
        raw_cutoff_ns=raw_cutoff,
        hourly_keep_from_ns=bucket_start(rollup_cutoff, NS_PER_HOUR),
        daily_keep_from_ns=bucket_start(rollup_cutoff, NS_PER_DAY),
    )

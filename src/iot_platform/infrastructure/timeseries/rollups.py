"""The rollup planner both time-series adapters share, so they cannot drift apart: where a bucket
starts, which partial buckets a write dirties, and which rollup buckets a ``maintain`` recomputes.

Rollups are three levels, each recomputed from the level below, never incremented on write (a
redelivered reading cannot be counted twice, and a restarted process converges):

- partials: count/sum/min/max per series and 5-minute bucket, from raw data. An implementation
  detail of the stores (no query reads them), kept ``PARTIAL_RETENTION_NS``;
- hourly, from the hour's 12 partials (or from raw data when those cannot be trusted, below);
- daily, from the day's 24 hourly rows.

Writes mark the partial buckets they touch, per series (``DirtyBuckets``); ``maintain`` recomputes
those partials from raw data, then their hours and days. Its cost follows what was written since
the last one (at most one partial bucket's worth of data per series more), not the size of an hour.

Partials are trusted only from ``trusted_from`` on: what a process has seen every write of. A
process starts knowing nothing, so its first ``maintain`` recomputes every partial of the previous,
current and next hour from raw data (the next one too: readings may be a few minutes ahead of the
clock) and trusts them from then on; that is how a restarted process converges. A dirty hour before
``trusted_from`` (written to before this process started, or whose partials are past their
retention) is recomputed from raw data directly, for the series written.

What no process knows of is not recomputed: readings a crashed process wrote into an hour older
than the previous one and had not rolled up yet reach that hour's rollup only when the series is
written there again. Processes sharing one store each roll up what they wrote; two of them
writing the same series in the same hour can race on that hour (each recomputes it from the
partials it sees), which the next write there corrects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from iot_platform.application.telemetry.model import NS_PER_DAY, NS_PER_HOUR, NS_PER_SECOND

log = logging.getLogger(__name__)

K = TypeVar("K")

PARTIAL_NS = 5 * 60 * NS_PER_SECOND
"""Width of a partial rollup bucket: a dirty one is recomputed whole, from raw data."""
PARTIALS_PER_HOUR = NS_PER_HOUR // PARTIAL_NS
PARTIAL_RETENTION_NS = 2 * NS_PER_DAY
"""Partials older than this are dropped; a late write into their hours recomputes the hour of the
series written from raw data instead, which costs at most 12 partials' worth more for those."""


def bucket_start(ts_ns: int, interval_ns: int) -> int:
    """The start of the bucket holding ``ts_ns``; buckets start at multiples of the interval
    since the epoch (floor division, so pre-1970 timestamps land in the right bucket too)."""
    return ts_ns - ts_ns % interval_ns

def check_rollup_interval(interval_ns: int, granularity_ns: int) -> None:
    if interval_ns <= 0 or interval_ns % granularity_ns:
        raise ValueError(
            f"interval {interval_ns}ns is not a multiple of the rollup granularity {granularity_ns}ns"
        )


def _add_keys(buckets: dict[int, set[K] | None], bucket: int, keys: set[K] | None) -> None:
    if bucket not in buckets:
        buckets[bucket] = None if keys is None else set(keys)
        return
    known = buckets[bucket]
    if known is not None:
        if keys is None:
            buckets[bucket] = None
        else:
            known |= keys


@dataclass(frozen=True, slots=True)
class Dirty(Generic[K]):
    """What was written since the last ``maintain``."""

    partials: dict[int, set[K] | None]
    """Partial bucket start -> series written in it."""
    hours: dict[int, set[K] | None]
    """Hour start -> series to recompute in every partial of the hour (coarser, when the
    fine-grained marks grew past their bound)."""


class DirtyBuckets(Generic[K]):
    """Partial buckets written to since the last ``maintain``, with the series (keys) written.

    Bounded memory, by coarsening (a wider recompute, never a wrong one):

    - past ``max_keys`` remembered (bucket, key) pairs, the buckets with the most keys forget
      them (every series), down to half the bound. A bucket holding that many keys is most
      likely one most series were written to, so little work is added;
    - past ``max_buckets`` partial buckets (late data strewn over days), partial marks are folded
      into whole-hour marks: a series written in any partial of an hour marks all 12 for it.

    Only past ``max_buckets`` hours (readings strewn over years) are marks dropped, with a
    warning; those hours are then not recomputed.
    """

    def __init__(self, max_keys: int = 200_000, max_buckets: int = 20_000) -> None:
        self._partials: dict[int, set[K] | None] = {}
        self._hours: dict[int, set[K] | None] = {}
        self._size = 0
        self._dropped = 0
        self._max_keys = max(max_keys, 1)
        self._max_buckets = max(max_buckets, 1)

    def mark(self, partial: int, keys: Iterable[K]) -> None:
        """Series ``keys`` were written in the partial bucket starting at ``partial``."""
        self._mark(partial, set(keys))

    def _mark(self, partial: int, keys: set[K] | None) -> None:
        hour = partial - partial % NS_PER_HOUR
        if hour in self._hours:
            self._add(self._hours, hour, keys)
        elif partial in self._partials or len(self._partials) < self._max_buckets:
            self._add(self._partials, partial, keys)
        else:
            self._fold()
            self._mark_hour(hour, keys)
        if self._size > self._max_keys:
            self._forget_keys()

    def _mark_hour(self, hour: int, keys: set[K] | None) -> None:
        if hour in self._hours or len(self._hours) < self._max_buckets:
            self._add(self._hours, hour, keys)
        else:
            self._dropped += 1

    def _add(self, buckets: dict[int, set[K] | None], bucket: int, keys: set[K] | None) -> None:
        known = buckets.get(bucket, set())
        before = 0 if known is None else len(known)
        _add_keys(buckets, bucket, keys)
        after = buckets[bucket]
        self._size += (0 if after is None else len(after)) - before

    def _fold(self) -> None:
        partials, self._partials = self._partials, {}
        for partial, keys in partials.items():
            self._mark_hour(partial - partial % NS_PER_HOUR, keys)
        # A series in several partials of one hour now counts once.
        self._size = sum(len(keys) for keys in self._hours.values() if keys is not None)

    def _forget_keys(self) -> None:
        sized = [
            (len(keys), level, bucket)
            for level in (self._partials, self._hours)
            for bucket, keys in level.items()
            if keys is not None
        ]
        sized.sort(key=lambda entry: entry[0], reverse=True)
        for size, level, bucket in sized:
            if self._size <= self._max_keys // 2:
                break
            level[bucket] = None
            self._size -= size

    def drain(self) -> Dirty[K]:
        if self._dropped:
            log.warning(
                "%d writes fell in hours past the dirty-bucket limit; their rollups are not "
                "recomputed", self._dropped,
            )
        drained = Dirty(self._partials, self._hours)
        self._partials, self._hours, self._size, self._dropped = {}, {}, 0, 0
        return drained

    def restore(self, drained: Dirty[K]) -> None:
        """Puts back what a failed ``maintain`` drained, so the next one retries it."""
        for hour, keys in drained.hours.items():
            self._mark_hour(hour, keys)
        for partial, keys in drained.partials.items():
            self._mark(partial, keys)
        if self._size > self._max_keys:
            self._forget_keys()


@dataclass(frozen=True, slots=True)
class MaintenancePlan(Generic[K]):
    """What one ``maintain(now)`` does, the same for both stores, in this order."""

    partials: dict[int, set[K] | None]
    """Partial buckets to recompute from raw data, by start, in time order."""
    raw_hours: dict[int, set[K] | None]
    """Hours before ``trusted_from_ns`` to recompute from raw data directly."""
    hours: dict[int, set[K] | None]
    """Hours to recompute from their partials: those holding a recomputed partial."""
    days: dict[int, set[K] | None]
    """Days to recompute from their hours: those holding a recomputed hour."""
    trusted_from_ns: int
    """Partials from here on are complete once this plan has run (the next plan's input)."""
    raw_cutoff_ns: int
    """Raw points before this are dropped."""
    partial_keep_from_ns: int
    hourly_keep_from_ns: int
    """Hourly rollup rows starting before this are dropped (they end at or before the cutoff)."""
    daily_keep_from_ns: int

    first: bool
    """The first plan of the process: every partial of three hours is recomputed."""


def plan_maintenance(
    now_ns: int,
    dirty: Dirty[K],
    trusted_from_ns: int | None,
    retention_days: int,
    rollup_retention_days: int,
) -> MaintenancePlan[K]:
    """``trusted_from_ns``: what the previous plan of this process said (None: the first).

    Dirty hours that start before the raw retention cutoff are left alone: their raw data is
    already partly gone, and a recompute would replace a complete rollup with a partial one.
    """
    raw_cutoff = now_ns - retention_days * NS_PER_DAY
    rollup_cutoff = now_ns - rollup_retention_days * NS_PER_DAY
    current_hour = bucket_start(now_ns, NS_PER_HOUR)
    partial_keep_from = bucket_start(max(now_ns - PARTIAL_RETENTION_NS, raw_cutoff), NS_PER_HOUR)

    def kept(hour: int) -> bool:
        return hour >= raw_cutoff and hour >= rollup_cutoff

    first = trusted_from_ns is None
    partials: dict[int, set[K] | None] = {}
    if trusted_from_ns is None:
        trusted_from_ns = current_hour - NS_PER_HOUR
        for hour in range(trusted_from_ns, current_hour + 2 * NS_PER_HOUR, NS_PER_HOUR):
            if kept(hour):
                for n in range(PARTIALS_PER_HOUR):
                    partials[hour + n * PARTIAL_NS] = None
    trusted_from_ns = max(trusted_from_ns, partial_keep_from)

    raw_hours: dict[int, set[K] | None] = {}
    for hour, keys in dirty.hours.items():
        if not kept(hour):
            continue
        if hour < trusted_from_ns:
            _add_keys(raw_hours, hour, keys)
        else:
            for n in range(PARTIALS_PER_HOUR):
                _add_keys(partials, hour + n * PARTIAL_NS, keys)
    for partial, keys in dirty.partials.items():
        hour = bucket_start(partial, NS_PER_HOUR)
        if not kept(hour):
            continue
        if hour < trusted_from_ns:
            _add_keys(raw_hours, hour, keys)
        else:
            _add_keys(partials, partial, keys)
    hours: dict[int, set[K] | None] = {}
    for partial, keys in partials.items():
        _add_keys(hours, bucket_start(partial, NS_PER_HOUR), keys)
    days: dict[int, set[K] | None] = {}
    for hour, keys in (*hours.items(), *raw_hours.items()):
        _add_keys(days, bucket_start(hour, NS_PER_DAY), keys)
    return MaintenancePlan(
        partials=dict(sorted(partials.items())),
        raw_hours=dict(sorted(raw_hours.items())),
        hours=dict(sorted(hours.items())),
        days=dict(sorted(days.items())),
        trusted_from_ns=trusted_from_ns,
        raw_cutoff_ns=raw_cutoff,
        partial_keep_from_ns=partial_keep_from,
        hourly_keep_from_ns=bucket_start(rollup_cutoff, NS_PER_HOUR),
        daily_keep_from_ns=bucket_start(rollup_cutoff, NS_PER_DAY),
        first=first,
    )

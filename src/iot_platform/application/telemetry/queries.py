"""Telemetry queries: history, aggregates and tag search, with the rules about ranges.

The rules live here rather than in the routes or the stores: which resolution ``auto`` picks,
how many buckets a query may ask for, and when percentiles can be had (raw data only).
"""

from __future__ import annotations

from dataclasses import dataclass

from iot_platform.application.errors import ApplicationError
from iot_platform.application.telemetry.model import (
    EARLIEST_NS,
    LATEST_NS,
    NS_PER_DAY,
    NS_PER_HOUR,
    AggregateQuery,
    Bucket,
    RawQuery,
    Resolution,
    StoredReading,
    TagQuery,
)
from iot_platform.application.telemetry.ports import TimeSeriesStore

MAX_BUCKETS = 10_000
MAX_LIMIT = 10_000
BASIC_FUNCTIONS = ("count", "sum", "avg", "min", "max")
PERCENTILES = ("p50", "p90", "p99")
FUNCTIONS = BASIC_FUNCTIONS + PERCENTILES
# ``auto`` reads raw data for ranges up to this long, hourly rollups up to the next.
RAW_UP_TO = 2 * NS_PER_DAY
HOURLY_UP_TO = 60 * NS_PER_DAY


class InvalidQuery(ApplicationError):
    code = "invalid_query"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AggregateResult:
    resolution: Resolution
    functions: tuple[str, ...]
    buckets: list[Bucket]


def check_time(field: str, ns: int) -> None:
    """A time the stores can hold (``EARLIEST_NS`` to ``LATEST_NS``), or ``InvalidQuery``
    naming the parameter."""
    if not EARLIEST_NS <= ns <= LATEST_NS:
        raise InvalidQuery(field, "must be between 1678-01-01T00:00:00Z and 2262-01-01T00:00:00Z")


def check_range(start_ns: int, end_ns: int) -> None:
    check_time("to", end_ns)
    check_time("from", start_ns)
    if start_ns >= end_ns:
        raise InvalidQuery("from", "must be before to")



def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery("limit", f"must be between 1 and {MAX_LIMIT}")


def choose_resolution(
    asked: Resolution | None, start_ns: int, end_ns: int, interval_ns: int, percentiles: bool
) -> Resolution:
    """``None`` means auto: the coarsest rollup that the range calls for and the interval fits."""
    grain = {Resolution.RAW: 1, Resolution.HOURLY: NS_PER_HOUR, Resolution.DAILY: NS_PER_DAY}
    if asked is not None:
        if asked is not Resolution.RAW and percentiles:
            raise InvalidQuery("fn", "percentiles need resolution=raw (rollups keep no samples)")
        if interval_ns % grain[asked]:
            raise InvalidQuery("interval", f"must be a multiple of 1{'h' if asked is Resolution.HOURLY else 'd'} at resolution {asked}")
        return asked
    span = end_ns - start_ns
    if percentiles or span <= RAW_UP_TO:
        return Resolution.RAW
    if span > HOURLY_UP_TO and interval_ns % NS_PER_DAY == 0:
        return Resolution.DAILY
    if interval_ns % NS_PER_HOUR == 0:
        return Resolution.HOURLY
    return Resolution.RAW


class TelemetryQueries:
    def __init__(self, store: TimeSeriesStore) -> None:
        self._store = store

    async def history(
        self,
        device_id: str,
        start_ns: int,
        end_ns: int,
        metrics: tuple[str, ...] = (),
        limit: int = 1000,
        descending: bool = False,
    ) -> list[StoredReading]:
        check_range(start_ns, end_ns)
        _check_limit(limit)
        return await self._store.query(
            RawQuery(device_id, start_ns, end_ns, metrics, limit, descending)
        )

    async def aggregate(
        self,
        metric: str,
        start_ns: int,
        end_ns: int,
        interval_ns: int,
        functions: tuple[str, ...] = BASIC_FUNCTIONS,
        resolution: Resolution | None = None,
        device_ids: tuple[str, ...] | None = None,
        device_type: str | None = None,
    ) -> AggregateResult:
        check_range(start_ns, end_ns)
        if interval_ns > LATEST_NS:
            raise InvalidQuery("interval", "must be shorter than 290 years")
        unknown = [f for f in functions if f not in FUNCTIONS]
        if unknown or not functions:
            raise InvalidQuery("fn", f"unknown function {unknown[0] if unknown else ''!r}; use {', '.join(FUNCTIONS)}")
        buckets = -(-(end_ns - start_ns) // interval_ns)
        if buckets > MAX_BUCKETS:
            raise InvalidQuery(
                "interval", f"too fine for the range: {buckets} buckets (at most {MAX_BUCKETS})"
            )
        percentiles = any(f in PERCENTILES for f in functions)
        chosen = choose_resolution(resolution, start_ns, end_ns, interval_ns, percentiles)
        if device_ids is not None and not device_ids:
            return AggregateResult(chosen, functions, [])
        result = await self._store.aggregate(
            AggregateQuery(
                metric=metric,
                start_ns=start_ns,
                end_ns=end_ns,
                interval_ns=interval_ns,
                resolution=chosen,
                device_ids=device_ids,
                device_type=device_type,
                percentiles=percentiles,
            )
        )
        return AggregateResult(chosen, functions, result)

    async def search_by_tag(
        self, key: str, value: str, start_ns: int, end_ns: int, limit: int = 1000
    ) -> list[StoredReading]:
        check_range(start_ns, end_ns)
        _check_limit(limit)
        return await self._store.search_by_tag(TagQuery(key, value, start_ns, end_ns, limit))

"""The time-series store on InfluxDB, through the v2-compatible HTTP API of InfluxDB 1.8+
(``/api/v2/write`` for line protocol, ``/api/v2/query`` for Flux) with influxdb-client's
asyncio client. The bucket is ``database/retention_policy``; 1.8 ignores the org.

Layout: one measurement ``telemetry``; tags ``device_id``, ``device_type`` and each of the
reading's own tags prefixed ``t_`` (so a reading's tag can never shadow ``device_id``); one field
per metric. Numbers are written as floats (an int metric stays a float field, so a field's type
never flips between int and float); booleans as booleans, strings as strings. A rewrite of the
same device, timestamp, tags and metric overwrites the value, which makes writes idempotent.

Rollups: ``maintain`` asks Flux for count/sum/min/max of each series over one bucket, merges
the series of a device and metric here (they differ only by reading tags), and writes the result
as points of ``telemetry_5m`` / ``telemetry_1h`` / ``telemetry_1d`` (tags metric, device_id,
device_type; fields count, sum, min, max; time = bucket start), so recomputing a bucket
overwrites it. Partials (5 minutes) come from raw data, hours from partials, days from hours
(see ``rollups``); a write marks the partial buckets it touched, per device, and only those are
read again. One query per bucket, narrowed to the devices written when they are few. The
queries are shaped for 1.8: a bare ``range |> filter |> sum()`` is pushed down to storage, while
``window``/``group``/``map`` run in the Flux engine about 20 times slower; 1.8's Flux cannot
write (no ``to()``), hence the round trip through the client. User queries (raw, aggregates) do
use ``window`` and ``quantile``.

Retention: by explicit InfluxQL ``DELETE`` through the 1.8 ``/query`` endpoint (at most once an
hour), not by retention policies. A retention policy bounds a whole ``database/rp`` at once and
drops whole shard groups on its own schedule, so raw data and the longer-lived rollups would
need two policies (and two buckets to configure), and its effect could not be verified on
demand. What an operator may add: a finite duration on the bucket's policy as a coarse backstop,
no shorter than ``rollup_retention_days`` (the rollups live in the same bucket). Note that
InfluxQL ``DELETE`` applies to the measurement in every retention policy of the database.

Errors: a write InfluxDB refuses for good (HTTP 400: a field type conflict, a line it cannot
parse; 422 on 2.x) and a reading holding a name line protocol cannot carry raise
``PermanentWriteError``, so the caller sets the reading aside instead of retrying it; anything
else (no connection, 5xx, a timeout) is raised as it comes, for the caller to retry.

Schema metadata (which field holds which type) comes from ``SHOW FIELD KEYS``: 1.8's Flux has
no way to skip string values inside a query, and ``sum()`` fails on them.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync
from influxdb_client.domain.dialect import Dialect
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from iot_platform.application.telemetry.model import (
    NS_PER_DAY,
    NS_PER_HOUR,
    AggregateQuery,
    Bucket,
    MetricValue,
    RawQuery,
    Reading,
    Resolution,
    StoredReading,
    TagQuery,
)
from iot_platform.application.telemetry.ports import PermanentWriteError
from iot_platform.infrastructure.timeseries.rollups import (
    PARTIAL_NS,
    DirtyBuckets,
    MaintenancePlan,
    check_rollup_interval,
    plan_maintenance,
)
from iot_platform.infrastructure.timeseries.values import PERCENTILES, StoredValue, storable

log = logging.getLogger(__name__)

MEASUREMENT = "telemetry"
PARTIAL = "telemetry_5m"
HOURLY = "telemetry_1h"
DAILY = "telemetry_1d"
TAG_PREFIX = "t_"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_RETENTION_EVERY_NS = NS_PER_HOUR
_LINES_PER_WRITE = 5000
_AGGREGATES = ("count", "sum", "min", "max")
_NUMERIC_TYPES = {"float", "integer", "boolean"}
# Rollup reads come back as plain CSV (a header per table, no annotations) parsed with the csv
# module: the client's record parser costs ~30 us a row, on the event loop, and a bucket of every
# series is tens of thousands of rows. (Cutting columns with keep() costs the server more than
# it saves: it runs once per table, i.e. per series.)
_PLAIN_CSV: Dialect = Dialect(header=True, annotations=[])  # type: ignore[no-untyped-call]
# A rollup read names the devices written when there are at most this many; past that it reads
# every series of the bucket (a long "or" costs more to evaluate than the rows it saves).
_MAX_NAMED_DEVICES = 64

# Line protocol escapes only these in keys and tag values; a backslash is kept as is unless
# it precedes one of them, and nothing can stand for a newline. Such names are refused rather
# than stored as something else.
_KEY_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_UNREPRESENTABLE = re.compile(r"[\\\n\r]")

# What InfluxDB answers to a write it will never accept, whatever the retries: 400 for a field
# type conflict or a line it cannot parse (1.8; it stores the batch's other points and drops
# those), 422 for a type conflict on 2.x.
_REFUSED_STATUSES = frozenset({400, 422})


@lru_cache(maxsize=65536)
def _key(name: str) -> str:
    """A measurement-safe tag key, tag value or field key (cached: device ids, metric names and
    tag keys repeat on every line)."""
    if not name or _UNREPRESENTABLE.search(name):
        raise PermanentWriteError(
            f"{name!r} cannot be stored in InfluxDB (empty, or holds a backslash or line break)"
        )
    return name.translate(_KEY_ESCAPES)


def _error_text(failed: ApiException) -> str:
    """InfluxDB's own words: 1.8 puts them in ``X-Influxdb-Error`` and ``{"error": ...}``,
    2.x in ``{"message": ...}``."""
    headers: Any = failed.headers or {}
    text = headers.get("X-Influxdb-Error") or headers.get("X-Platform-Error-Code")
    if text:
        return str(text)
    body = failed.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    return f"HTTP {failed.status}: {body or failed.reason}"


def _field_value(value: StoredValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _line(reading: Reading) -> str | None:
    fields = []
    for metric, raw in reading.metrics.items():
        value = storable(raw)
        if value is None:
            continue
        if metric == "time":
            raise PermanentWriteError("InfluxDB silently drops a field named 'time'; rename the metric")
        fields.append(f"{_key(metric)}={_field_value(value)}")
    if not fields:
        return None
    tags = f"{MEASUREMENT},device_id={_key(reading.device_id)}"
    if reading.device_type:
        tags += f",device_type={_key(reading.device_type)}"
    for key, value in reading.tags.items():
        # An empty tag value is no tag at all in InfluxDB.
        if value:
            tags += f",{_key(TAG_PREFIX + key)}={_key(value)}"
    return f"{tags} {','.join(fields)} {reading.timestamp_ns}"


def flux_string(value: str) -> str:
    """A Flux string literal holding exactly ``value`` (quotes, backslashes, ``${``)."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("${", "\\${")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _flux_time(ns: int) -> str:
    return f"time(v: {min(max(ns, _INT64_MIN), _INT64_MAX)})"


def _any_of(column: str, values: Iterable[str]) -> str:
    return " or ".join(f"r[{flux_string(column)}] == {flux_string(v)}" for v in values)


_RollupKey = tuple[str, str | None, str, int]
"""device_id, device_type, metric, bucket start"""


def _merge(rollups: dict[_RollupKey, list[float]], key: _RollupKey, name: str, value: float) -> None:
    """Folds one series' count, sum, min or max into the rollup of its device and metric."""
    count_sum_min_max = rollups.setdefault(key, [0.0, 0.0, math.inf, -math.inf])
    if name == "min":
        count_sum_min_max[2] = min(count_sum_min_max[2], value)
    elif name == "max":
        count_sum_min_max[3] = max(count_sum_min_max[3], value)
    else:
        count_sum_min_max[name == "sum"] += value


@dataclass(frozen=True, slots=True)
class _FieldKinds:
    """The metrics of the measurement by how a rollup reads them (from ``SHOW FIELD KEYS``)."""

    numbers: list[str]
    booleans: list[str]
    not_numbers: list[str]
    mixed: list[str]
    """Typed differently in different shards: no single read can aggregate them."""

    @classmethod
    def of(cls, types: dict[str, set[str]]) -> _FieldKinds:
        numbers = sorted(f for f, t in types.items() if t <= {"float", "integer"})
        booleans = sorted(f for f, t in types.items() if t == {"boolean"})
        mixed = sorted(f for f, t in types.items() if len(t) > 1 and not t <= {"float", "integer"})
        return cls(numbers, booleans, sorted(set(types) - set(numbers)), mixed)


def _as_metric(value: Any) -> MetricValue:
    # A long field is another writer's integer; this store reads numbers as floats.
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class InfluxTimeSeriesStore:
    """``TimeSeriesStore`` on InfluxDB. The client is created on first use (it must be created
    inside a running event loop) and closed by ``close``."""

    def __init__(
        self,
        url: str,
        *,
        bucket: str,
        token: str = "",
        org: str = "-",
        retention_days: int = 30,
        rollup_retention_days: int = 730,
        timeout_ms: int = 10_000,
        dirty_limit: int = 200_000,
    ) -> None:
        """``dirty_limit``: (partial bucket, device) pairs, and at most 20,000 buckets,
        remembered between two ``maintain`` before they are coarsened (see ``DirtyBuckets``)."""
        self._url = url
        self._bucket = bucket
        self._database, _, self._retention_policy = bucket.partition("/")
        self._token = token
        self._org = org or "-"
        self._retention_days = retention_days
        self._rollup_retention_days = rollup_retention_days
        self._timeout_ms = timeout_ms
        self._client: InfluxDBClientAsync | None = None
        self._writer: WriteApiAsync | None = None
        self._dirty: DirtyBuckets[str] = DirtyBuckets(dirty_limit, min(dirty_limit, 20_000))
        self._trusted_from: int | None = None
        self._expired_before: int | None = None

    def _api(self) -> InfluxDBClientAsync:
        if self._client is None:
            self._client = InfluxDBClientAsync(
                url=self._url, token=self._token, org=self._org, timeout=self._timeout_ms
            )
        return self._client

    # --- the port

    async def write(self, readings: Sequence[Reading]) -> None:
        lines = [line for line in map(_line, readings) if line is not None]
        try:
            if lines:
                await self._write_lines(lines)
        finally:
            # Even when the write failed: a refused batch is partly stored (1.8 keeps the points
            # that do not conflict), and a timed-out one may have been.
            touched: dict[int, set[str]] = defaultdict(set)
            for reading in readings:
                ts = reading.timestamp_ns
                touched[ts - ts % PARTIAL_NS].add(reading.device_id)
            for partial_start, devices in touched.items():
                self._dirty.mark(partial_start, devices)

    async def query(self, query: RawQuery) -> list[StoredReading]:
        if query.limit <= 0 or query.start_ns >= query.end_ns:
            return []
        fields = [_any_of("_field", query.metrics)] if query.metrics else []
        # Each table is one series and field in time order: its first (last) `limit` rows hold
        # every row of the answer; the rows are merged into readings here.
        flux = f"""
            {self._from(
                query.start_ns,
                query.end_ns,
                f'r._measurement == "{MEASUREMENT}" and r.device_id == {flux_string(query.device_id)}',
                *fields,
            )}
              |> {"tail" if query.descending else "limit"}(n: {query.limit})
              |> map(fn: (r) => ({{r with _ns: int(v: r._time)}}))
        """
        readings = await self._readings(flux)
        readings.sort(key=lambda r: r.timestamp_ns, reverse=query.descending)
        return readings[: query.limit]

    async def search_by_tag(self, query: TagQuery) -> list[StoredReading]:
        if query.limit <= 0 or query.start_ns >= query.end_ns or not query.value:
            return []
        tag = flux_string(TAG_PREFIX + query.key)
        flux = f"""
            {self._from(
                query.start_ns,
                query.end_ns,
                f'r._measurement == "{MEASUREMENT}" and r[{tag}] == {flux_string(query.value)}',
            )}
              |> limit(n: {query.limit})
              |> map(fn: (r) => ({{r with _ns: int(v: r._time)}}))
        """
        readings = await self._readings(flux)
        readings.sort(key=lambda r: (r.timestamp_ns, r.device_id))
        return readings[: query.limit]

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        if (query.device_ids is not None and not query.device_ids) or query.start_ns >= query.end_ns:
            return []
        if query.resolution is Resolution.RAW:
            return await self._aggregate_raw(query)
        granularity = NS_PER_HOUR if query.resolution is Resolution.HOURLY else NS_PER_DAY
        check_rollup_interval(query.interval_ns, granularity)
        measurement = HOURLY if query.resolution is Resolution.HOURLY else DAILY
        flux = f"""
            data = {self._from(
                query.start_ns,
                query.end_ns,
                f'r._measurement == "{measurement}" and r.metric == {flux_string(query.metric)}',
                *self._device_filters(query),
            )}
        """
        for name, combine in (("count", "sum"), ("sum", "sum"), ("min", "min"), ("max", "max")):
            flux += f"""
            data |> filter(fn: (r) => r._field == "{name}") |> group()
              |> window(every: {query.interval_ns}ns) |> {combine}()
              |> map(fn: (r) => ({{r with _b: int(v: r._start)}})) |> yield(name: "{name}")
            """
        return self._buckets(await self._by_result(flux), query.interval_ns, percentiles=False)

    async def maintain(self, now_ns: int) -> None:
        drained = self._dirty.drain()
        try:
            plan = plan_maintenance(
                now_ns, drained, self._trusted_from, self._retention_days, self._rollup_retention_days
            )
            kinds = _FieldKinds.of(await self._field_types())
            if kinds.mixed:
                log.warning("metrics %s changed type between shards; they get no rollups", kinds.mixed)
            if kinds.numbers or kinds.booleans:
                partials, hours = plan.partials, plan.hours
                if plan.first:
                    partials, hours = await self._without_empty_future(now_ns, partials, hours)
                # One bucket per query: 1.8's Flux planner slows down steeply with the number
                # of yields in a query (1 hour 0.1 s, 8 hours in one query 28 s).
                for start, devices in partials.items():
                    await self._roll_up_raw(PARTIAL, start, PARTIAL_NS, kinds, devices)
                for hour, devices in plan.raw_hours.items():
                    await self._roll_up_raw(HOURLY, hour, NS_PER_HOUR, kinds, devices)
                for hour, devices in hours.items():
                    await self._roll_up(PARTIAL, HOURLY, hour, NS_PER_HOUR, devices)
                for day, devices in plan.days.items():
                    await self._roll_up(HOURLY, DAILY, day, NS_PER_DAY, devices)
            await self._drop_expired(plan)
            self._trusted_from = plan.trusted_from_ns
        except BaseException:
            self._dirty.restore(drained)
            raise

    async def check(self) -> None:
        if not await self._api().ping():
            raise ConnectionError(f"InfluxDB at {self._url} did not answer the ping")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client, self._writer = self._client, None, None
            await client.close()  # type: ignore[no-untyped-call]

    # --- helpers

    def _from(self, start_ns: int, end_ns: int, *predicates: str) -> str:
        """Points in [start, end) that match every predicate.

        1.8's storage treats the range stop as inclusive, so a last filter drops points at
        ``end``; it comes after the others, which stay simple enough to be pushed down to
        storage.
        """
        stop = _flux_time(end_ns)
        return "\n  |> ".join(
            [
                f"from(bucket: {flux_string(self._bucket)})",
                f"range(start: {_flux_time(start_ns)}, stop: {stop})",
                *(f"filter(fn: (r) => {p})" for p in predicates),
                f"filter(fn: (r) => r._time < {stop})",
            ]
        )

    @staticmethod
    def _device_filters(query: AggregateQuery) -> list[str]:
        filters = []
        if query.device_ids is not None:
            filters.append(_any_of("device_id", query.device_ids))
        if query.device_type is not None:
            filters.append(f"r.device_type == {flux_string(query.device_type)}")
        return filters

    async def _write_lines(self, lines: list[str]) -> None:
        if self._writer is None:
            self._writer = self._api().write_api()
        try:
            accepted = await self._writer.write(
                bucket=self._bucket,
                org=self._org,
                record="\n".join(lines).encode(),
                write_precision=cast(WritePrecision, WritePrecision.NS),
            )
        except ApiException as failed:
            if failed.status in _REFUSED_STATUSES:
                raise PermanentWriteError(f"InfluxDB refused the write: {_error_text(failed)}") from failed
            raise
        if not accepted:
            raise ConnectionError(f"InfluxDB at {self._url} did not accept the write")

    async def _readings(self, flux: str) -> list[StoredReading]:
        """Rows of raw points (one field each) merged into readings by device and time."""
        merged: dict[tuple[str, int], StoredReading] = {}
        for table in await self._api().query_api().query(flux, org=self._org):
            for record in table.records:
                row = record.values
                key = (row["device_id"], row["_ns"])
                reading = merged.get(key)
                if reading is None:
                    reading = merged[key] = StoredReading(key[0], key[1], {}, {})
                reading.metrics[row["_field"]] = _as_metric(row["_value"])
                for column, value in row.items():
                    if column.startswith(TAG_PREFIX) and value is not None:
                        reading.tags[column[len(TAG_PREFIX) :]] = value
        return list(merged.values())

    async def _rollup_rows(self, flux: str) -> dict[str, list[dict[str, str]]]:
        """Rows of a rollup read (several ``yield``s), by yield name, values as text."""
        text = await self._api().query_api().query_raw(flux, org=self._org, dialect=_PLAIN_CSV)
        rows: dict[str, list[dict[str, str]]] = defaultdict(list)
        header: list[str] | None = None
        for row in csv.reader(io.StringIO(text)):
            if not any(row):
                header = None
            elif header is None:
                header = row
            elif "error" in header and "reference" in header:
                raise RuntimeError(f"Flux query failed: {dict(zip(header, row)).get('error')}")
            else:
                record = dict(zip(header, row))
                rows[record["result"]].append(record)
        return rows

    async def _by_result(self, flux: str) -> dict[str, list[dict[str, Any]]]:
        """Rows of a query with several ``yield``s, by yield name."""
        rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for table in await self._api().query_api().query(flux, org=self._org):
            for record in table.records:
                rows[record.values["result"]].append(record.values)
        return rows

    @staticmethod
    def _buckets(
        rows: dict[str, list[dict[str, Any]]], interval_ns: int, *, percentiles: bool
    ) -> list[Bucket]:
        # A window clamped to the range starts mid-bucket: floor it to the bucket start.
        by_bucket: dict[int, dict[str, Any]] = defaultdict(dict)
        for name, result in rows.items():
            for row in result:
                by_bucket[row["_b"] - row["_b"] % interval_ns][name] = row["_value"]
        buckets = []
        for start, values in sorted(by_bucket.items()):
            if not values.get("count"):
                continue
            extra = (
                [float(values[f"p{round(q * 100)}"]) for q in PERCENTILES] if percentiles else []
            )
            buckets.append(
                Bucket(
                    start,
                    int(values["count"]),
                    float(values["sum"]),
                    float(values["min"]),
                    float(values["max"]),
                    *extra,
                )
            )
        return buckets

    async def _aggregate_raw(self, query: AggregateQuery) -> list[Bucket]:
        types = (await self._field_types()).get(query.metric, set())
        if not types & _NUMERIC_TYPES:
            return []
        if "string" in types:
            raise ValueError(
                f"metric {query.metric!r} holds both strings and numbers in InfluxDB; "
                "it cannot be aggregated"
            )
        to_float = "|> map(fn: (r) => ({r with _value: float(v: r._value)}))" if types != {"float"} else ""
        flux = f"""
            data = {self._from(
                query.start_ns,
                query.end_ns,
                f'r._measurement == "{MEASUREMENT}" and r._field == {flux_string(query.metric)}',
                *self._device_filters(query),
            )}
              {to_float}
              |> group()
              |> window(every: {query.interval_ns}ns)
        """
        steps = {name: f"{name}()" for name in _AGGREGATES}
        if query.percentiles:
            for q in PERCENTILES:
                steps[f"p{round(q * 100)}"] = f'quantile(q: {q}, method: "exact_selector")'
        for name, step in steps.items():
            flux += (
                f"data |> {step} |> map(fn: (r) => ({{r with _b: int(v: r._start)}}))"
                f' |> yield(name: "{name}")\n'
            )
        return self._buckets(
            await self._by_result(flux), query.interval_ns, percentiles=query.percentiles
        )

    def _bucket_read(self, start_ns: int, width_ns: int, predicate: str) -> str:
        """One bucket's points of each series, in a form 1.8 pushes down to storage together
        with a following count/sum/min/max (about 20x faster here than any ``window``, ``map``,
        ``group`` or time filter, which all take the query off that path). The stop is one
        nanosecond before the bucket end because 1.8's storage includes the stop."""
        return (
            f"from(bucket: {flux_string(self._bucket)})"
            f" |> range(start: {_flux_time(start_ns)}, stop: {_flux_time(start_ns + width_ns - 1)})"
            f" |> filter(fn: (r) => {predicate})"
        )

    async def _without_empty_future(
        self,
        now_ns: int,
        partials: dict[int, set[str] | None],
        hours: dict[int, set[str] | None],
    ) -> tuple[dict[int, set[str] | None], dict[int, set[str] | None]]:
        """The first maintain's partials, less those after the current one when there is no
        raw data there at all (the usual case): one query instead of two per partial. A write
        landing there meanwhile is marked for the next maintain."""
        future_from = now_ns - now_ns % PARTIAL_NS + PARTIAL_NS
        future = [start for start in partials if start >= future_from]
        if not future:
            return partials, hours
        probe = self._bucket_read(
            future_from, max(future) + PARTIAL_NS - future_from, f'r._measurement == "{MEASUREMENT}"'
        )
        if await self._rollup_rows(f'{probe} |> limit(n: 1) |> yield(name: "any")'):
            return partials, hours
        kept = {start: keys for start, keys in partials.items() if start < future_from}
        kept_hours = {start - start % NS_PER_HOUR for start in kept}
        return kept, {hour: keys for hour, keys in hours.items() if hour in kept_hours}

    @staticmethod
    def _narrowed(predicate: str, devices: set[str] | None) -> str:
        if devices is None or len(devices) > _MAX_NAMED_DEVICES:
            return predicate
        return f"{predicate} and ({_any_of('device_id', sorted(devices))})"

    async def _roll_up_raw(
        self, target: str, start: int, width: int, kinds: _FieldKinds, devices: set[str] | None
    ) -> None:
        """Per-series aggregates of one bucket of raw data, merged here over the reading tags
        into one rollup per device, type and metric. Booleans cannot be summed or compared in
        1.8's Flux: their count and the count of true ones give sum, min and max."""
        measurement = self._narrowed(f'r._measurement == "{MEASUREMENT}"', devices)
        rollups: dict[_RollupKey, list[float]] = {}
        if kinds.numbers:
            numbers = measurement + "".join(
                f" and r._field != {flux_string(f)}" for f in kinds.not_numbers
            )
            flux = "".join(
                f"{self._bucket_read(start, width, numbers)} |> {name}()"
                f' |> yield(name: "{name}")\n'
                for name in _AGGREGATES
            )
            for name, rows in (await self._rollup_rows(flux)).items():
                for row in rows:
                    key = (row["device_id"], row.get("device_type") or None, row["_field"], start)
                    _merge(rollups, key, name, float(row["_value"]))
        if kinds.booleans:
            booleans = self._bucket_read(
                start, width, f"{measurement} and ({_any_of('_field', kinds.booleans)})"
            )
            flux = (
                f'{booleans} |> count() |> yield(name: "count")\n'
                f"{booleans} |> filter(fn: (r) => r._value == true) |> count()"
                ' |> yield(name: "true")\n'
            )
            counted: dict[_RollupKey, list[int]] = defaultdict(lambda: [0, 0])
            for name, rows in (await self._rollup_rows(flux)).items():
                for row in rows:
                    key = (row["device_id"], row.get("device_type") or None, row["_field"], start)
                    counted[key][name == "true"] += int(row["_value"])
            for key, (count, trues) in counted.items():
                rollups[key] = [float(count), float(trues), float(trues == count), float(trues > 0)]
        await self._write_rollups(target, rollups)

    async def _roll_up(
        self, source: str, target: str, start: int, width: int, devices: set[str] | None
    ) -> None:
        """One bucket of ``target`` from the rollup level below it."""
        flux = ""
        for name, combine in (("count", "sum"), ("sum", "sum"), ("min", "min"), ("max", "max")):
            predicate = self._narrowed(
                f'r._measurement == "{source}" and r._field == "{name}"', devices
            )
            flux += (
                f"{self._bucket_read(start, width, predicate)} |> {combine}()"
                f' |> yield(name: "{name}")\n'
            )
        rollups: dict[_RollupKey, list[float]] = {}
        for name, rows in (await self._rollup_rows(flux)).items():
            for row in rows:
                key = (row["device_id"], row.get("device_type") or None, row["metric"], start)
                _merge(rollups, key, name, float(row["_value"]))
        await self._write_rollups(target, rollups)

    async def _write_rollups(
        self, measurement: str, rollups: dict[_RollupKey, list[float]]
    ) -> None:
        lines = []
        for (device, device_type, metric, bucket), (count, total, low, high) in rollups.items():
            if not count:
                continue
            tags = f"{measurement},device_id={_key(device)},metric={_key(metric)}"
            if device_type:
                tags += f",device_type={_key(device_type)}"
            fields = f"count={int(count)}i,sum={total!r},min={low!r},max={high!r}"
            lines.append(f"{tags} {fields} {bucket}")
        for i in range(0, len(lines), _LINES_PER_WRITE):
            await self._write_lines(lines[i : i + _LINES_PER_WRITE])

    async def _drop_expired(self, plan: MaintenancePlan[str]) -> None:
        # A DELETE walks every series of the shards it touches: once an hour is plenty.
        raw_cutoff = plan.raw_cutoff_ns
        if self._expired_before is not None and raw_cutoff - self._expired_before < _RETENTION_EVERY_NS:
            return
        for measurement, keep_from in (
            (MEASUREMENT, raw_cutoff),
            (PARTIAL, plan.partial_keep_from_ns),
            (HOURLY, plan.hourly_keep_from_ns),
            (DAILY, plan.daily_keep_from_ns),
        ):
            await self._influxql(f'DELETE FROM "{measurement}" WHERE time < {keep_from}')
        self._expired_before = raw_cutoff

    async def _field_types(self) -> dict[str, set[str]]:
        """Field key -> its types (more than one when shards disagree)."""
        source = f'"{MEASUREMENT}"'
        if self._retention_policy:
            source = f'"{self._retention_policy.replace(chr(34), chr(92) + chr(34))}".{source}'
        types: dict[str, set[str]] = defaultdict(set)
        for result in await self._influxql(f"SHOW FIELD KEYS FROM {source}"):
            for series in result.get("series", []):
                for key, field_type in series["values"]:
                    types[key].add(field_type)
        return types

    async def _influxql(self, statement: str) -> list[dict[str, Any]]:
        """One statement on 1.8's ``/query`` endpoint, through the client's own session (same
        auth header, TLS settings and timeout). InfluxQL reports failures inside a 200."""
        client = self._api()
        response = await client.api_client.call_api(  # type: ignore[no-untyped-call]
            "/query",
            "POST",
            query_params=[("db", self._database), ("q", statement)],
            header_params={"Accept": "application/json"},
            response_type="object",
            auth_settings=[],
            _return_http_data_only=True,
        )
        if not isinstance(response, dict):
            raise RuntimeError(f"InfluxQL {statement!r}: unexpected answer {response!r:.200}")
        results: list[dict[str, Any]] = response.get("results", [])
        errors = [r["error"] for r in results if "error" in r]
        if "error" in response or errors:
            raise RuntimeError(f"InfluxQL {statement!r} failed: {response.get('error') or errors[0]}")
        return results

"""The embedded time-series store: one SQLite file, worked by one dedicated thread.

This is the hot path of ingestion (tens of thousands of values a second), so it talks to the
stdlib ``sqlite3`` module directly rather than through SQLAlchemy like the event store does:
SQLAlchemy's per-row parameter processing costs more than SQLite's own insert, while
``executemany`` on one prepared statement hands rows to SQLite at C speed.

Every call runs on a single-thread executor. SQLite has one writer at a time anyway; one thread
owns the connection, the series cache and the dirty-bucket set, so none of them needs a lock,
calls are served in the order they were made, and the event loop never waits on disk.
WAL with synchronous=NORMAL: a committed batch survives a crash of the process; a power cut may
lose the last commits but never corrupts the file.

Schema, narrow so a value costs a few bytes:

- ``series``: one row per (device, metric), with the device's type; cached in memory on write.
- ``points``: (series_id, ts, value), WITHOUT ROWID, keyed (series_id, ts), so a rewrite of the
  same device + timestamp + metric replaces the value. ``value`` has no declared type and keeps
  SQLite's storage class: REAL for numbers, INTEGER 0/1 for booleans, TEXT for strings.
- ``tags``: one row per reading tag, keyed (key, value, ts, device_id) for ``search_by_tag``,
  indexed (device_id, ts) to give a reading back its tags.
- ``rollup_5m`` / ``rollup_hourly`` / ``rollup_daily``: count, sum, min, max per series and
  bucket. Recomputed by ``maintain`` (partials from points, hours from partials, days from
  hours; see ``rollups``), never incremented on write, so a redelivered reading cannot be
  counted twice. A write marks the (partial bucket, series) pairs it touched.

``maintain`` works in short jobs, each one transaction on the worker thread, so writes queued
meanwhile are served between them: one bucket of a slice of the series, the slice sized after
each job so a job lasts about ``_JOB_TARGET_S`` (the rows behind a series vary a thousandfold
between deployments). A job still running at ``_JOB_LIMIT_S`` is interrupted, rolled back and
retried on a quarter of the series, so no job holds the writer much longer than that.

Statements that visit many series walk ``series`` first (``CROSS JOIN`` fixes that join order)
and seek each series' key range in the other table, so no time index is needed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

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
from iot_platform.infrastructure.files import private_sqlite
from iot_platform.infrastructure.timeseries.rollups import (
    PARTIAL_NS,
    DirtyBuckets,
    MaintenancePlan,
    check_rollup_interval,
    plan_maintenance,
)
from iot_platform.infrastructure.timeseries.values import StoredValue, percentiles, storable

T = TypeVar("T")

# How long one maintenance job should hold the writer thread, and when it is cut short.
_JOB_TARGET_S = 0.04
_JOB_LIMIT_S = 0.1
_MAX_SERIES_PER_JOB = 5000

_SCHEMA = """
BEGIN;
CREATE TABLE IF NOT EXISTS series (
    series_id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    device_type TEXT NOT NULL,
    UNIQUE (device_id, metric)
);
CREATE INDEX IF NOT EXISTS series_by_metric ON series (metric, device_type);
CREATE TABLE IF NOT EXISTS points (
    series_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    ts INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (key, value, ts, device_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_reading ON tags (device_id, ts);
CREATE TABLE IF NOT EXISTS rollup_5m (
    series_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_hourly (
    series_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_daily (
    series_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    count INTEGER NOT NULL,
    sum REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
COMMIT;
"""

_INSERT_POINT = "INSERT OR REPLACE INTO points (series_id, ts, value) VALUES (?, ?, ?)"
_INSERT_TAG = "INSERT OR REPLACE INTO tags (key, value, ts, device_id) VALUES (?, ?, ?, ?)"

_NUMERIC = "typeof(p.value) != 'text'"


def _bucket_sql(column: str) -> str:
    # SQLite's % truncates toward zero; step back one interval for pre-1970 timestamps so
    # buckets floor like Python's. (ts % iv + iv) would overflow near the int64 limit.
    return f"({column} - {column} % :iv - CASE WHEN {column} % :iv < 0 THEN :iv ELSE 0 END)"


@dataclass(frozen=True, slots=True)
class _Level:
    """One rollup table recomputed from the level below, one ``width`` bucket at a time."""

    target: str
    source: str
    time_column: str
    columns: str
    where: str
    width: int


_FROM_POINTS = ("points", "ts", "count(*), total(p.value), min(p.value), max(p.value)", _NUMERIC)
_FROM_ROLLUPS = "bucket", "sum(p.count), total(p.sum), min(p.min), max(p.max)", "1"
_PARTIALS = _Level("rollup_5m", *_FROM_POINTS, PARTIAL_NS)
_HOURS_FROM_POINTS = _Level("rollup_hourly", *_FROM_POINTS, NS_PER_HOUR)
_HOURS = _Level("rollup_hourly", "rollup_5m", *_FROM_ROLLUPS, NS_PER_HOUR)
_DAYS = _Level("rollup_daily", "rollup_hourly", *_FROM_ROLLUPS, NS_PER_DAY)


class _JobSizer:
    """Series per job of one kind, adapted after each job so the next lasts ``_JOB_TARGET_S``
    (at most doubling, so a run of empty buckets cannot make the next full one huge)."""

    def __init__(self) -> None:
        self.size = 64

    def done(self, series: int, seconds: float) -> None:
        fitting = int(series * _JOB_TARGET_S / max(seconds, 1e-6))
        self.size = max(1, min(fitting, 2 * self.size, _MAX_SERIES_PER_JOB))

    def interrupted(self) -> None:
        self.size = max(1, self.size // 4)


class _Interrupted(Exception):
    pass


def sqlite_path(url: str) -> str:
    """``sqlite:///./data/timeseries.db`` -> ``./data/timeseries.db`` (four slashes: absolute)."""
    scheme, sep, path = url.partition(":///")
    if not sep or not scheme.startswith("sqlite") or not path:
        raise ValueError(f"not a sqlite:/// URL: {url!r}")
    return path


_point_key = itemgetter(0, 1)


def _loaded(value: StoredValue) -> MetricValue:
    return bool(value) if isinstance(value, int) else value


class SqliteTimeSeriesStore:
    """``TimeSeriesStore`` on a SQLite file (created with its directory on first use)."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention_days: int = 30,
        rollup_retention_days: int = 730,
        dirty_limit: int = 200_000,
    ) -> None:
        """``dirty_limit``: (partial bucket, series) pairs, and at most 20,000 buckets,
        remembered between two ``maintain`` before they are coarsened (see ``DirtyBuckets``)."""
        self._path = str(path)
        self._retention_days = retention_days
        self._rollup_retention_days = rollup_retention_days
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="timeseries-sqlite")
        self._closed = False
        self._trusted_from: int | None = None
        self._sizers: dict[object, _JobSizer] = {}
        # Owned by the worker thread.
        self._db: sqlite3.Connection | None = None
        self._series: dict[tuple[str, str], int] = {}
        self._device_types: dict[str, str] = {}
        self._dirty: DirtyBuckets[int] = DirtyBuckets(dirty_limit, min(dirty_limit, 20_000))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- the port

    async def write(self, readings: Sequence[Reading]) -> None:
        if readings:
            await self._run(self._write, readings)

    async def query(self, query: RawQuery) -> list[StoredReading]:
        return await self._run(self._query, query)

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        return await self._run(self._aggregate, query)

    async def search_by_tag(self, query: TagQuery) -> list[StoredReading]:
        return await self._run(self._search_by_tag, query)

    async def maintain(self, now_ns: int) -> None:
        drained = await self._run(self._dirty.drain)
        try:
            plan = plan_maintenance(
                now_ns, drained, self._trusted_from, self._retention_days, self._rollup_retention_days
            )
            for level, buckets in (
                (_PARTIALS, plan.partials),
                (_HOURS_FROM_POINTS, plan.raw_hours),
                (_HOURS, plan.hours),
                (_DAYS, plan.days),
            ):
                for bucket, series_ids in buckets.items():
                    await self._in_jobs(
                        level, series_ids, partial(self._roll_up, level, bucket)
                    )
            await self._in_jobs("retention", None, partial(self._drop_expired, plan))
            self._trusted_from = plan.trusted_from_ns
        except BaseException:
            # Not awaited: a cancelled maintain must still hand its work to the next one.
            if not self._closed:
                self._executor.submit(self._dirty.restore, drained)
            raise

    async def _in_jobs(
        self,
        kind: object,
        series_ids: set[int] | None,
        work: Callable[[sqlite3.Connection, list[int]], None],
    ) -> None:
        """``work`` over these series (None: all), one job per slice of them."""
        ids = sorted(series_ids) if series_ids is not None else await self._run(self._all_series)
        sizer = self._sizers.setdefault(kind, _JobSizer())
        done = 0
        while done < len(ids):
            chunk = ids[done : done + sizer.size]
            if await self._run(self._job, work, chunk, sizer):
                done += len(chunk)

    async def check(self) -> None:
        await self._run(self._check)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._run(self._close_db)
        finally:
            self._executor.shutdown(wait=True)

    # --- worker thread

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            private_sqlite(Path(self._path))
        db = sqlite3.connect(self._path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA cache_size=-65536")  # 64 MiB
            # A batch dirties a leaf page per series; checkpointing every 64 MiB rather than
            # 4 MiB writes each page back once for many batches (+45% write throughput).
            db.execute("PRAGMA wal_autocheckpoint=16384")
            db.executescript(_SCHEMA)
            for series_id, device_id, metric, device_type in db.execute(
                "SELECT series_id, device_id, metric, device_type FROM series"
            ):
                self._series[device_id, metric] = series_id
                self._device_types[device_id] = device_type
        except BaseException:
            db.close()
            raise
        return db

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _check(self) -> None:
        self._conn().execute("SELECT 1").fetchone()

    def _write(self, readings: Sequence[Reading]) -> None:
        db = self._conn()
        series = self._series
        points: list[tuple[int, int, StoredValue]] = []
        tags: list[tuple[str, str, int, str]] = []
        touched: dict[int, set[int]] = {}
        new_series: list[tuple[str, str]] = []
        old_types: dict[str, str | None] = {}
        db.execute("BEGIN IMMEDIATE")
        try:
            for reading in readings:
                device, ts = reading.device_id, reading.timestamp_ns
                if reading.device_type:
                    self._note_device_type(db, device, reading.device_type, old_types)
                partial_start = ts - ts % PARTIAL_NS
                written = touched.get(partial_start)
                if written is None:
                    written = touched[partial_start] = set()
                stored = False
                for metric, raw in reading.metrics.items():
                    value = storable(raw)
                    if value is None:
                        continue
                    series_id = series.get((device, metric))
                    if series_id is None:
                        series_id = self._create_series(db, device, metric)
                        new_series.append((device, metric))
                    points.append((series_id, ts, value))
                    written.add(series_id)
                    stored = True
                if stored:
                    tags.extend((key, value, ts, device) for key, value in reading.tags.items())
            # In key order each series' leaf page is touched once per batch, not once per
            # reading; stable, so a repeat later in the batch still wins.
            points.sort(key=_point_key)
            db.executemany(_INSERT_POINT, points)
            if tags:
                db.executemany(_INSERT_TAG, tags)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.rollback()
            for key in new_series:
                del series[key]
            for device, old_type in old_types.items():
                if old_type is None:
                    self._device_types.pop(device, None)
                else:
                    self._device_types[device] = old_type
            raise
        for partial_start, series_ids in touched.items():
            if series_ids:
                self._dirty.mark(partial_start, series_ids)

    def _note_device_type(
        self, db: sqlite3.Connection, device: str, device_type: str, old_types: dict[str, str | None]
    ) -> None:
        """A device's type is the latest non-empty one it reported; all its series follow it."""
        known = self._device_types.get(device)
        if known == device_type:
            return
        old_types.setdefault(device, known)
        self._device_types[device] = device_type
        if known is not None:
            db.execute("UPDATE series SET device_type = ? WHERE device_id = ?", (device_type, device))

    def _create_series(self, db: sqlite3.Connection, device: str, metric: str) -> int:
        device_type = self._device_types.setdefault(device, "")
        cursor = db.execute(
            "INSERT INTO series (device_id, metric, device_type) VALUES (?, ?, ?)",
            (device, metric, device_type),
        )
        assert cursor.lastrowid is not None
        self._series[device, metric] = cursor.lastrowid
        return cursor.lastrowid

    def _query(self, query: RawQuery) -> list[StoredReading]:
        if query.limit <= 0:
            return []
        db = self._conn()
        order = "DESC" if query.descending else "ASC"
        wanted = set(query.metrics)
        metrics_at: dict[int, dict[str, MetricValue]] = {}
        # Each series gives at most `limit` rows in key order; the first `limit` distinct
        # timestamps across them are the answer, without sorting the whole range.
        for series_id, metric in db.execute(
            "SELECT series_id, metric FROM series WHERE device_id = ?", (query.device_id,)
        ).fetchall():
            if wanted and metric not in wanted:
                continue
            for ts, value in db.execute(
                f"SELECT ts, value FROM points WHERE series_id = ? AND ts >= ? AND ts < ? "
                f"ORDER BY ts {order} LIMIT ?",
                (series_id, query.start_ns, query.end_ns, query.limit),
            ):
                metrics_at.setdefault(ts, {})[metric] = _loaded(value)
        chosen = sorted(metrics_at, reverse=query.descending)[: query.limit]
        tags_at: dict[int, dict[str, str]] = {}
        if chosen:
            for ts, key, value in db.execute(
                "SELECT ts, key, value FROM tags WHERE device_id = ? "
                "AND ts IN (SELECT value FROM json_each(?))",
                (query.device_id, json.dumps(chosen)),
            ):
                tags_at.setdefault(ts, {})[key] = value
        return [
            StoredReading(query.device_id, ts, metrics_at[ts], tags_at.get(ts, {}))
            for ts in chosen
        ]

    def _search_by_tag(self, query: TagQuery) -> list[StoredReading]:
        if query.limit <= 0:
            return []
        db = self._conn()
        found: list[StoredReading] = []
        for ts, device in db.execute(
            "SELECT ts, device_id FROM tags WHERE key = ? AND value = ? AND ts >= ? AND ts < ? "
            "ORDER BY ts, device_id LIMIT ?",
            (query.key, query.value, query.start_ns, query.end_ns, query.limit),
        ).fetchall():
            metrics = {
                metric: _loaded(value)
                for metric, value in db.execute(
                    "SELECT s.metric, p.value FROM series AS s CROSS JOIN points AS p "
                    "ON p.series_id = s.series_id AND p.ts = ? WHERE s.device_id = ?",
                    (ts, device),
                )
            }
            tags = dict(
                db.execute("SELECT key, value FROM tags WHERE device_id = ? AND ts = ?", (device, ts))
            )
            if metrics:
                found.append(StoredReading(device, ts, metrics, tags))
        return found

    def _aggregate(self, query: AggregateQuery) -> list[Bucket]:
        if query.device_ids is not None and not query.device_ids:
            return []
        if query.resolution is Resolution.RAW:
            source, time_column = "points", "ts"
            columns = "count(*), total(p.value), min(p.value), max(p.value)"
            numeric = f" AND {_NUMERIC}"
        else:
            granularity = NS_PER_HOUR if query.resolution is Resolution.HOURLY else NS_PER_DAY
            check_rollup_interval(query.interval_ns, granularity)
            source = "rollup_hourly" if query.resolution is Resolution.HOURLY else "rollup_daily"
            time_column = "bucket"
            columns = "sum(p.count), total(p.sum), min(p.min), max(p.max)"
            numeric = ""
        params: dict[str, Any] = {
            "metric": query.metric,
            "start": query.start_ns,
            "end": query.end_ns,
            "iv": query.interval_ns,
        }
        where = f"s.metric = :metric AND p.{time_column} >= :start AND p.{time_column} < :end"
        if query.device_ids is not None:
            where += " AND s.device_id IN (SELECT value FROM json_each(:devices))"
            params["devices"] = json.dumps(query.device_ids)
        if query.device_type is not None:
            where += " AND s.device_type = :device_type"
            params["device_type"] = query.device_type
        from_ = f"series AS s CROSS JOIN {source} AS p ON p.series_id = s.series_id"
        bucket = _bucket_sql(f"p.{time_column}")
        rows = self._conn().execute(
            f"SELECT {bucket} AS b, {columns} FROM {from_} WHERE {where}{numeric} "
            "GROUP BY b ORDER BY b",
            params,
        ).fetchall()
        if query.percentiles and query.resolution is Resolution.RAW and rows:
            values: dict[int, list[float]] = {}
            for b, value in self._conn().execute(
                f"SELECT {bucket}, p.value FROM {from_} WHERE {where}{numeric}", params
            ):
                values.setdefault(b, []).append(float(value))
            return [
                Bucket(b, count, total, float(low), float(high), *percentiles(values[b]))
                for b, count, total, low, high in rows
            ]
        return [
            Bucket(b, count, total, float(low), float(high))
            for b, count, total, low, high in rows
        ]

    def _all_series(self) -> list[int]:
        self._conn()  # loads the series
        return sorted(self._series.values())

    def _job(
        self,
        work: Callable[[sqlite3.Connection, list[int]], None],
        series_ids: list[int],
        sizer: _JobSizer,
    ) -> bool:
        """One transaction of maintenance work. False: it ran past ``_JOB_LIMIT_S`` and was
        rolled back (the sizer now holds a smaller slice); one series alone is never cut short."""
        db = self._conn()
        started = time.perf_counter()
        deadline = started + _JOB_LIMIT_S
        interruptible = len(series_ids) > 1

        def past_deadline() -> int:
            return int(time.perf_counter() > deadline)

        db.execute("BEGIN IMMEDIATE")
        try:
            if interruptible:
                db.set_progress_handler(past_deadline, 1000)
            try:
                work(db, series_ids)
            except sqlite3.OperationalError as error:
                if interruptible and time.perf_counter() > deadline and "interrupt" in str(error):
                    raise _Interrupted from error
                raise
            finally:
                if interruptible:
                    db.set_progress_handler(None, 0)
            db.execute("COMMIT")
        except _Interrupted:
            db.rollback()
            sizer.interrupted()
            return False
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise
        sizer.done(len(series_ids), time.perf_counter() - started)
        return True

    @staticmethod
    def _roll_up(level: _Level, bucket: int, db: sqlite3.Connection, series_ids: list[int]) -> None:
        """Recomputes ``level`` rows of these series for one bucket, from the level below."""
        db.executemany(
            f"DELETE FROM {level.target} WHERE series_id = ? AND bucket = ?",
            [(series_id, bucket) for series_id in series_ids],
        )
        db.execute(
            f"INSERT INTO {level.target} (series_id, bucket, count, sum, min, max) "
            f"SELECT s.series_id, :bucket, {level.columns} "
            f"FROM series AS s CROSS JOIN {level.source} AS p ON p.series_id = s.series_id "
            f"WHERE s.series_id IN (SELECT value FROM json_each(:ids)) "
            f"AND p.{level.time_column} >= :bucket AND p.{level.time_column} < :end "
            f"AND {level.where} GROUP BY s.series_id",
            {"bucket": bucket, "end": bucket + level.width, "ids": json.dumps(series_ids)},
        )

    @staticmethod
    def _drop_expired(
        plan: MaintenancePlan[int], db: sqlite3.Connection, series_ids: list[int]
    ) -> None:
        for table, column, keep_from in (
            ("points", "ts", plan.raw_cutoff_ns),
            ("rollup_5m", "bucket", plan.partial_keep_from_ns),
            ("rollup_hourly", "bucket", plan.hourly_keep_from_ns),
            ("rollup_daily", "bucket", plan.daily_keep_from_ns),
        ):
            db.executemany(
                f"DELETE FROM {table} WHERE series_id = ? AND {column} < ?",
                [(series_id, keep_from) for series_id in series_ids],
            )
        devices = db.execute(
            "SELECT DISTINCT device_id FROM series "
            "WHERE series_id IN (SELECT value FROM json_each(?))",
            (json.dumps(series_ids),),
        ).fetchall()
        db.executemany(
            "DELETE FROM tags WHERE device_id = ? AND ts < ?",
            [(device, plan.raw_cutoff_ns) for (device,) in devices],
        )

"""Benchmark of the SQLAlchemy event store on SQLite and PostgreSQL.

What it measures, per backend, in one run:

1. Append throughput, single: ``--events / 10`` appends of ONE event each (one transaction
   each, expected_version increasing on one stream) -> events/s.
2. Append throughput, batched: ``--events`` events appended 100 per call -> events/s.
3. Baselines for 1 and 2: raw INSERTs of the same rows (the same serialized payloads the store
   writes, pre-serialized) into a scratch table ``bench_raw_events`` with the columns of
   ``events`` and no constraint but the primary key, on the same engine and driver: one row per
   transaction, and 100-row executemany transactions. The ratio is store rate / raw rate.
   Tests 1-3 run interleaved, ``--rounds`` times (default 3), after an untimed warm-up; each
   reported rate is the median over the rounds.
4. Rehydration latency of one 10,000-event Device aggregate (p50/p99):
   (a) no snapshot: ``EventSourcedRepository(snapshot_every=0).load`` folds all events
       (``min(--samples, 30)`` loads: each one reads and deserializes every event);
   (b) snapshot: ``EventSourcedRepository(snapshot_every=100).load`` of an identical stream
       whose snapshot sits 99 events before the head, i.e. snapshot + the longest tail that
       snapshot_every=100 allows (worst case), ``--samples`` loads.
   Both rehydrated aggregates, and a snapshot-free replay of the snapshotted stream, must have
   the same state (status, tags, ..., version); the script asserts and prints it.

Then it prints the targets and whether they are met: batched appends >= 50% of the raw-insert
rate, and snapshot rehydration p99 < 5 ms. It exits 0 whether or not they are met: it is a
measurement, not a test.

SQLite runs on a fresh temporary file. PostgreSQL runs on the test database of
``--postgres-url`` (default: ``$IOT_TEST_POSTGRES_URL``) but in its own schema,
``--postgres-schema`` (default ``bench_eventstore``; every connection gets it as search_path),
so that it neither sees nor clobbers the ``public`` schema that test runs reset concurrently.
That schema is made clean at the start (alembic downgrade to base, leftover platform and bench
tables dropped, upgrade to head) and dropped at the end. Point it only at a test database.

Run (from the repository root)::

    eval "$(bash tools/services.sh env)"   # optional: exports IOT_TEST_POSTGRES_URL
    .venv/bin/python -m tools.bench_eventstore --backend all
    .venv/bin/python -m tools.bench_eventstore --backend sqlite --events 5000 --samples 50
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, Table, event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.clock import utcnow
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.aggregate import EventContext, Snapshot
from iot_platform.domain.devices.device import Device
from iot_platform.domain.events import DomainEvent
from iot_platform.infrastructure.eventstore.serialization import (
    EventSerializer,
    build_event_serializer,
)
from iot_platform.infrastructure.eventstore.sqlalchemy_store import (
    SqlAlchemyEventStore,
    stream_id_of,
)
from iot_platform.infrastructure.persistence import migrate
from iot_platform.infrastructure.persistence.database import create_engine
from iot_platform.infrastructure.persistence.schema import events as events_table
from iot_platform.infrastructure.persistence.schema import metadata as platform_metadata
from tools.harness import nearest_rank

BATCH = 100  # events per append call / rows per raw executemany transaction
SNAPSHOT_EVERY = 100
NO_SNAPSHOT_SAMPLES_MAX = 30
TARGET_BATCHED_RATIO = 0.50
TARGET_SNAPSHOT_P99_MS = 5.0

# The baseline table: the columns (and types, so the same bind processing) of ``events``,
# no unique constraint, only the primary key.
_raw_metadata = MetaData()
raw_events = Table(
    "bench_raw_events",
    _raw_metadata,
    *[
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, autoincrement=False)
        for c in events_table.columns
    ],
)


# -- results ------------------------------------------------------------------------------------


@dataclass
class Row:
    measurement: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: str = ""
    target_value: float | None = None  # what a target is checked against


@dataclass
class BackendResult:
    backend: str
    rows: list[Row]
    batched_ratio: float
    snapshot_p99_ms: float
    notes: list[str]


# -- workload -------------------------------------------------------------------------------------


def device_events(
    aggregate_id: str, total: int, snapshot_at: int | None = None
) -> tuple[Device, list[DomainEvent], Snapshot | None]:
    """``total`` events of one device: register, provision, activate, a suspend/resume, and tag
    changes (one DeviceTagsChanged each). Returns the aggregate, its events and, if asked, the
    snapshot of its state at version ``snapshot_at``."""
    device = Device(aggregate_id)
    context = EventContext(at=utcnow())
    device.register(name="bench device", device_type="th", context=context)
    snapshot = None
    i = 0
    while device.version < total:
        if device.version == snapshot_at:
            snapshot = device.snapshot()
        i += 1
        if device.version == 1:
            device.provision(credential_type="psk", credential_fingerprint="ab" * 16, context=context)
        elif device.version == 2:
            device.activate(context)
        elif i == total // 2:
            device.suspend(reason="bench", context=context)
        elif i == total // 2 + 1:
            device.resume(context)
        else:
            device.update(tags={"n": str(i), "site": "bench"}, context=context)
    if device.version == snapshot_at:
        snapshot = device.snapshot()
    pending = list(device.pending_events)
    device.mark_committed()
    assert len(pending) == total == device.version
    return device, pending, snapshot


def tag_events(aggregate_id: str, count: int) -> tuple[DomainEvent, list[DomainEvent]]:
    """A DeviceRegistered event and ``count`` DeviceTagsChanged events after it."""
    device = Device(aggregate_id)
    context = EventContext(at=utcnow())
    device.register(name=None, device_type="th", context=context)
    for i in range(count):
        device.update(tags={"n": str(i)}, context=context)
    pending = list(device.pending_events)
    return pending[0], pending[1:]


def raw_rows(
    serializer: EventSerializer, stream_id: str, events_: Sequence[DomainEvent], first_position: int
) -> list[dict[str, Any]]:
    """The rows the store would write for ``events_`` (serialized here, before any timing)."""
    recorded_at = utcnow()
    return [
        {
            "position": first_position + i,
            "stream_id": stream_id,
            "version": i + 2,
            "event_type": event.event_type(),
            "schema_version": event.schema_version,
            "occurred_at": event.occurred_at,
            "recorded_at": recorded_at,
            "correlation_id": event.correlation_id,
            "data": serializer.serialize(event),
        }
        for i, event in enumerate(events_)
    ]


async def append_in_batches(
    store: SqlAlchemyEventStore,
    aggregate_id: str,
    events_: Sequence[DomainEvent],
    expected_version: int = 0,
    snapshot: Snapshot | None = None,
) -> int:
    """Appends ``BATCH`` events per call; the call ending at ``snapshot.version`` carries it."""
    version = expected_version
    while version - expected_version < len(events_):
        start = version - expected_version
        end = min(start + BATCH, len(events_))
        if snapshot is not None and version < snapshot.version:
            end = min(end, snapshot.version - expected_version)
        ends_at_snapshot = snapshot is not None and expected_version + end == snapshot.version
        with_snapshot = snapshot if ends_at_snapshot else None
        result = await store.append(
            Device.stream_type, aggregate_id, events_[start:end], version, snapshot=with_snapshot
        )
        version = result.version
    return version


# -- database lifecycle ---------------------------------------------------------------------------


def postgres_engine_in_schema(url: str, schema: str) -> AsyncEngine:
    """The platform's own engine (same pool and driver settings), its connections confined to
    ``schema``: asyncpg sets the search_path at connect, before SQLAlchemy or Alembic look."""
    engine = create_engine(url)

    @event.listens_for(engine.sync_engine, "do_connect")
    def _search_path(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.setdefault("server_settings", {})["search_path"] = schema

    return engine


async def create_schema(url: str, schema: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        await engine.dispose()


async def drop_schema(url: str, schema: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


async def reset_schema(engine: AsyncEngine) -> None:
    """Alembic downgrade to base, drop whatever platform or bench table is left, upgrade."""
    try:
        await migrate.downgrade(engine)
    except Exception as exc:  # a half-migrated test database: drop by hand below
        print(f"  note: alembic downgrade failed ({type(exc).__name__}: {exc}); dropping tables")
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: _raw_metadata.drop_all(sync, checkfirst=True))
        await conn.run_sync(lambda sync: platform_metadata.drop_all(sync, checkfirst=True))
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await migrate.upgrade(engine)


async def other_sessions(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        value = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    return int(value or 0)


async def server_settings(engine: AsyncEngine) -> str:
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            version = await conn.scalar(text("SHOW server_version"))
            fsync = await conn.scalar(text("SHOW fsync"))
            sync_commit = await conn.scalar(text("SHOW synchronous_commit"))
            return f"PostgreSQL {version}, fsync={fsync}, synchronous_commit={sync_commit}"
        version = await conn.scalar(text("SELECT sqlite_version()"))
        mode = await conn.scalar(text("PRAGMA journal_mode"))
        sync = await conn.scalar(text("PRAGMA synchronous"))
        return f"SQLite {version}, journal_mode={mode}, synchronous={sync} (1=NORMAL)"


# -- timing ---------------------------------------------------------------------------------------


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def latencies_ms(fn: Callable[[], Awaitable[Any]], samples: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        await fn()
    result = []
    for _ in range(samples):
        start = time.perf_counter()
        await fn()
        result.append((time.perf_counter() - start) * 1000)
    return result


# -- the benchmark --------------------------------------------------------------------------------


async def measure_appends(
    engine: AsyncEngine,
    store: SqlAlchemyEventStore,
    serializer: EventSerializer,
    args: argparse.Namespace,
    notes: list[str],
) -> list[Row]:
    """Tests 1-3. Everything it builds is garbage when it returns (see bench_backend)."""
    n_batched = max(BATCH, args.events // BATCH * BATCH)
    n_single = max(1, args.events // 10)
    warm_single, warm_batched = 200, 10 * BATCH
    rounds = args.rounds

    # Every event is built (and, for the raw baselines, serialized) before any timing.
    single_reg, single_evs = tag_events("bench-single", warm_single + rounds * n_single)
    batch_reg, batch_evs = tag_events("bench-batched", warm_batched + rounds * n_batched)
    position = 10_000_000  # raw positions never meet the store's
    raw_single = raw_rows(serializer, "device:raw-single", single_evs, position)
    position += len(raw_single)
    raw_batched = raw_rows(serializer, "device:raw-batched", batch_evs, position)

    # 3a. raw single-row transactions.
    async def raw_insert_single(rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            async with engine.begin() as conn:
                await conn.execute(insert(raw_events), row)

    # 1. store appends of one event each, on one stream.
    async def append_single(evs: Sequence[DomainEvent], version: int) -> None:
        for domain_event in evs:
            version = (
                await store.append(Device.stream_type, "bench-single", [domain_event], version)
            ).version

    # 3b. raw 100-row executemany transactions.
    async def raw_insert_batched(rows: Sequence[dict[str, Any]]) -> None:
        for i in range(0, len(rows), BATCH):
            async with engine.begin() as conn:
                await conn.execute(insert(raw_events), rows[i : i + BATCH])

    # Warm-up (connections, statement caches, table pages), untimed.
    await raw_insert_single(raw_single[:warm_single])
    await store.append(Device.stream_type, "bench-single", [single_reg], 0)
    await append_single(single_evs[:warm_single], 1)
    await raw_insert_batched(raw_batched[:warm_batched])
    await store.append(Device.stream_type, "bench-batched", [batch_reg], 0)
    await append_in_batches(store, "bench-batched", batch_evs[:warm_batched], 1)

    # Timed: the four measurements interleaved, ``rounds`` times; the median rate is kept,
    # so that a burst of load from something else on the box skews neither side alone.
    rates: dict[str, list[float]] = {"raw1": [], "store1": [], "rawN": [], "storeN": []}
    for r in range(rounds):
        s0, s1 = warm_single + r * n_single, warm_single + (r + 1) * n_single
        b0, b1 = warm_batched + r * n_batched, warm_batched + (r + 1) * n_batched
        rates["raw1"].append(n_single / await timed(lambda: raw_insert_single(raw_single[s0:s1])))
        rates["store1"].append(
            n_single / await timed(lambda: append_single(single_evs[s0:s1], 1 + s0))
        )
        rates["rawN"].append(
            n_batched / await timed(lambda: raw_insert_batched(raw_batched[b0:b1]))
        )
        rates["storeN"].append(
            n_batched
            / await timed(
                lambda: append_in_batches(store, "bench-batched", batch_evs[b0:b1], 1 + b0)
            )
        )
    single_rate, raw_single_rate = (statistics.median(rates[k]) for k in ("store1", "raw1"))
    batched_rate, raw_batched_rate = (statistics.median(rates[k]) for k in ("storeN", "rawN"))
    spread = {k: f"{min(v):,.0f}-{max(v):,.0f}" for k, v in rates.items()}
    notes.append(
        f"throughput = median of {rounds} interleaved rounds; per-round range/s: "
        f"store 1-event {spread['store1']}, raw 1-row {spread['raw1']}, "
        f"store {BATCH}-event {spread['storeN']}, raw {BATCH}-row {spread['rawN']}"
    )

    # Where the append time goes, without a database: serialization alone.
    ser_sample = batch_evs[: min(len(batch_evs), 5000)]

    async def serialize_only() -> None:
        for domain_event in ser_sample:
            serializer.serialize(domain_event)

    serialize_rate = len(ser_sample) / await timed(serialize_only)

    return [
        Row(
            f"append single (1 event/txn, {n_single} txns)",
            single_rate,
            "events/s",
            raw_single_rate,
            "raw 1-row insert rows/s",
            f"{single_rate / raw_single_rate:.0%} of raw",
            single_rate / raw_single_rate,
        ),
        Row(
            f"append batched ({BATCH} events/txn, {n_batched} events)",
            batched_rate,
            "events/s",
            raw_batched_rate,
            f"raw {BATCH}-row insert rows/s",
            f"{batched_rate / raw_batched_rate:.0%} of raw",
            batched_rate / raw_batched_rate,
        ),
        Row("  info: serialize only (no DB)", serialize_rate, "events/s"),
    ]


async def measure_rehydration(
    engine: AsyncEngine, store: SqlAlchemyEventStore, args: argparse.Namespace, notes: list[str]
) -> list[Row]:
    """Test 4. Two streams of identical histories: one without any snapshot, one whose snapshot
    is 99 events behind the head (load always consults the snapshot table, so "no snapshot"
    needs a stream that has none)."""
    total = args.rehydrate_events
    snap_at = max(1, total - (SNAPSHOT_EVERY - 1))
    built, full_evs, _ = device_events("bench-rehydrate-full", total)
    _, snap_evs, snapshot = device_events("bench-rehydrate-snap", total, snapshot_at=snap_at)
    assert snapshot is not None and snapshot.version == snap_at
    await append_in_batches(store, "bench-rehydrate-full", full_evs)
    await append_in_batches(store, "bench-rehydrate-snap", snap_evs, snapshot=snapshot)
    del full_evs, snap_evs
    stored = await store.latest_snapshot(Device.stream_type, "bench-rehydrate-snap")
    assert stored is not None and stored.version == snap_at, stored
    assert await store.latest_snapshot(Device.stream_type, "bench-rehydrate-full") is None

    repo_plain = EventSourcedRepository(store, Device, snapshot_every=0)
    repo_snap = EventSourcedRepository(store, Device, snapshot_every=SNAPSHOT_EVERY)

    # The same state three ways: full replay through the repository, snapshot + tail through
    # the repository, and a snapshot-free fold of the snapshotted stream.
    full = await repo_plain.load("bench-rehydrate-full")
    via_snapshot = await repo_snap.load("bench-rehydrate-snap")
    replayed = Device.rehydrate(
        "bench-rehydrate-snap",
        (r.event for r in await store.read_stream(Device.stream_type, "bench-rehydrate-snap")),
    )
    expected = built.snapshot().state
    for name, agg in (("full", full), ("snapshot", via_snapshot), ("replayed", replayed)):
        assert agg.version == total, (name, agg.version)
        assert agg.snapshot().state == expected, (name, agg.snapshot().state, expected)
    tail = len(await store.read_stream(Device.stream_type, "bench-rehydrate-snap", snap_at))
    status = via_snapshot.status.value if via_snapshot.status else None
    notes.append(
        f"state check OK: no-snapshot load == snapshot(v{snap_at})+{tail}-event-tail load "
        f"== full replay of the snapshotted stream (status={status}, "
        f"tags={via_snapshot.tags}, version={via_snapshot.version})"
    )
    del full, replayed

    plain_samples = min(args.samples, NO_SNAPSHOT_SAMPLES_MAX)
    gc.collect()
    plain_ms = await latencies_ms(
        lambda: repo_plain.load("bench-rehydrate-full"), plain_samples, warmup=2
    )
    gc.collect()
    snap_ms = await latencies_ms(
        lambda: repo_snap.load("bench-rehydrate-snap"), args.samples, warmup=20
    )

    # Read-side split for the no-snapshot load: fetching the rows alone.
    async def fetch_rows_only() -> None:
        async with engine.connect() as conn:
            result = await conn.execute(
                events_table.select()
                .where(events_table.c.stream_id == stream_id_of("device", "bench-rehydrate-full"))
                .order_by(events_table.c.version)
            )
            result.all()

    fetch_ms = await latencies_ms(fetch_rows_only, min(plain_samples, 10), warmup=1)

    p50_plain, p99_plain = statistics.median(plain_ms), nearest_rank(plain_ms, 99)
    p50_snap, p99_snap = statistics.median(snap_ms), nearest_rank(snap_ms, 99)
    over = sum(1 for v in snap_ms if v >= TARGET_SNAPSHOT_P99_MS)
    notes.append(
        f"snapshot loads: min {min(snap_ms):.2f} ms, max {max(snap_ms):.2f} ms, "
        f"{over}/{len(snap_ms)} at or over {TARGET_SNAPSHOT_P99_MS:g} ms"
    )
    return [
        Row(f"rehydrate {total} events, no snapshot p50 (n={plain_samples})", p50_plain, "ms"),
        Row(f"rehydrate {total} events, no snapshot p99 (n={plain_samples})", p99_plain, "ms"),
        Row(
            f"rehydrate snapshot+{tail} tail p50 (n={args.samples})",
            p50_snap,
            "ms",
            p50_plain,
            "no-snapshot p50 ms",
            f"{p50_plain / p50_snap:.0f}x faster",
        ),
        Row(
            f"rehydrate snapshot+{tail} tail p99 (n={args.samples})",
            p99_snap,
            "ms",
            p99_plain,
            "no-snapshot p99 ms",
            f"{p99_plain / p99_snap:.0f}x faster",
            p99_snap,
        ),
        Row(f"  info: fetch {total} rows, no deserialize p50", statistics.median(fetch_ms), "ms"),
    ]


async def bench_backend(backend: str, url: str, args: argparse.Namespace) -> BackendResult:
    notes: list[str] = []
    if backend == "postgres":
        await create_schema(url, args.postgres_schema)
        engine = postgres_engine_in_schema(url, args.postgres_schema)
    else:
        engine = create_engine(url)
    serializer = build_event_serializer()
    store = SqlAlchemyEventStore(engine, serializer)
    try:
        if backend == "postgres":
            others = await other_sessions(engine)
            if others:
                notes.append(
                    f"{others} other session(s) were connected to the database at the start "
                    "(their load on the server is in these numbers)"
                )
            await reset_schema(engine)
            async with engine.connect() as conn:
                where = await conn.scalar(text("SELECT current_schema()"))
            assert where == args.postgres_schema, where
            notes.append(f"schema {where!r} (dropped at the end)")
        else:
            await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: _raw_metadata.create_all(sync))
        notes.append(await server_settings(engine))

        append_rows = await measure_appends(engine, store, serializer, args, notes)
        # The append tests' ~10^5 pre-built objects are garbage now; collect them so that the
        # latency samples do not pay for traversing them.
        gc.collect()
        rehydrate_rows = await measure_rehydration(engine, store, args, notes)
        rows = [*append_rows[:2], *rehydrate_rows[:4], append_rows[2], *rehydrate_rows[4:]]
        batched_ratio = append_rows[1].target_value
        snapshot_p99 = rehydrate_rows[3].target_value
        assert batched_ratio is not None and snapshot_p99 is not None
        return BackendResult(backend, rows, batched_ratio, snapshot_p99, notes)
    finally:
        try:
            if backend != "postgres":
                async with engine.begin() as conn:
                    await conn.run_sync(lambda sync: _raw_metadata.drop_all(sync, checkfirst=True))
        finally:
            await engine.dispose()
            if backend == "postgres":
                await drop_schema(url, args.postgres_schema)


# -- output ---------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if unit == "ms" or value < 100:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def print_table(results: Sequence[BackendResult]) -> None:
    header = ("backend", "measurement", "value", "unit", "baseline", "baseline is", "ratio")
    lines = [header]
    for result in results:
        for row in result.rows:
            lines.append(
                (
                    result.backend,
                    row.measurement,
                    fmt(row.value, row.unit),
                    row.unit,
                    fmt(row.baseline, "ms" if row.unit == "ms" else ""),
                    row.baseline_label,
                    row.ratio,
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {2, 4}

    def render(line: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        return " | ".join(cells).rstrip()

    print(render(header))
    print("-+-".join("-" * w for w in widths))
    previous = None
    for line in lines[1:]:
        if previous is not None and line[0] != previous:
            print("-+-".join("-" * w for w in widths))
        print(render(line))
        previous = line[0]


def print_targets(results: Sequence[BackendResult]) -> None:
    print()
    print("Targets:")
    for result in results:
        ok = result.batched_ratio >= TARGET_BATCHED_RATIO
        print(
            f"  [{result.backend}] batched appends >= {TARGET_BATCHED_RATIO:.0%} "
            "of raw-insert rate: "
            f"{result.batched_ratio:.0%} -> {'MET' if ok else 'NOT MET'}"
        )
        ok = result.snapshot_p99_ms < TARGET_SNAPSHOT_P99_MS
        print(
            f"  [{result.backend}] snapshot rehydration p99 < {TARGET_SNAPSHOT_P99_MS:g} ms: "
            f"{result.snapshot_p99_ms:.2f} ms -> {'MET' if ok else 'NOT MET'}"
        )


# -- entry point ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Event store append throughput and rehydration latency (SQLite/PostgreSQL).",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("IOT_TEST_POSTGRES_URL"),
        help="test database; only --postgres-schema in it is touched "
        "(default $IOT_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--postgres-schema",
        default="bench_eventstore",
        help="schema the PostgreSQL run works (and is dropped) in (default bench_eventstore)",
    )
    parser.add_argument(
        "--events", type=int, default=20_000,
        help="events for the batched append test; the single test uses a tenth (default 20000)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="interleaved repetitions of the append/insert tests, median reported (default 3)",
    )
    parser.add_argument(
        "--rehydrate-events", type=int, default=10_000,
        help="events in the rehydrated aggregate (default 10000)",
    )
    parser.add_argument(
        "--samples", type=int, default=200,
        help=f"loads per latency test (at most {NO_SNAPSHOT_SAMPLES_MAX} without a snapshot; "
        "default 200)",
    )
    args = parser.parse_args(argv)
    if not args.postgres_schema.replace("_", "").isalnum():
        parser.error("--postgres-schema must be letters, digits and underscores")
    if args.events < 10 or args.rehydrate_events < 10 or args.samples < 1 or args.rounds < 1:
        parser.error("--events, --rehydrate-events must be >= 10; --samples, --rounds >= 1")
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends: list[tuple[str, str]] = []
    tmpdir: str | None = None
    if args.backend in ("sqlite", "all"):
        tmpdir = tempfile.mkdtemp(prefix="bench-eventstore-")
        backends.append(("sqlite", f"sqlite:///{Path(tmpdir) / 'bench.db'}"))
    if args.backend in ("postgres", "all"):
        if args.postgres_url:
            backends.append(("postgres", args.postgres_url))
        elif args.backend == "all":
            print("note: skipping postgres: no --postgres-url and IOT_TEST_POSTGRES_URL is unset")
        else:
            print("error: --backend postgres needs --postgres-url or IOT_TEST_POSTGRES_URL")
            return 2

    results: list[BackendResult] = []
    try:
        for backend, url in backends:
            print(f"running {backend} ...", flush=True)
            started = time.perf_counter()
            result = await bench_backend(backend, url, args)
            results.append(result)
            for note in result.notes:
                print(f"  {note}")
            print(f"  {backend} done in {time.perf_counter() - started:.1f} s", flush=True)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if results:
        print()
        print_table(results)
        print_targets(results)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

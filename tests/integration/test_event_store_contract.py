"""The EventStore contract, run against every backend: process memory, SQLite (file) and
PostgreSQL (server). What only a database has (its migrations, its locks) is checked on the two
SQL backends alone."""

from __future__ import annotations

import asyncio
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.errors import ConcurrencyError
from iot_platform.application.ports import EventStore, Outbox
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.devices import Device, DeviceRegistered, DeviceRenamed, Protocol
from iot_platform.infrastructure.eventstore.memory import InMemoryEventStore
from iot_platform.infrastructure.eventstore.serialization import build_event_serializer
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.persistence import migrate
from iot_platform.infrastructure.persistence.database import create_engine
from iot_platform.infrastructure.persistence.schema import events, metadata, outbox
from tests.conftest import reset_postgres

pytestmark = pytest.mark.asyncio

AT = datetime(2026, 1, 1, tzinfo=UTC)
NOW = EventContext(at=AT)


def registered(device_id: str) -> DeviceRegistered:
    return DeviceRegistered(aggregate_id=device_id, occurred_at=AT, name=device_id, device_type="th", protocol=Protocol.MQTT)


def renamed(device_id: str, name: str) -> DeviceRenamed:
    return DeviceRenamed(aggregate_id=device_id, occurred_at=AT, name=name)


class StoreUnderTest(EventStore, Outbox, typing.Protocol):
    """What every backend is: the event store and its outbox."""


@dataclass
class Backend:
    store: StoreUnderTest
    engine: AsyncEngine | None
    """The database under a SQL store, where the contract also looks at the tables."""


@pytest_asyncio.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each contract test runs once per backend, on an empty store."""
    if request.param == "memory":
        yield Backend(InMemoryEventStore(), None)
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'iot.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
        await reset_postgres(url)
    engine = create_engine(url)
    await migrate.upgrade(engine)
    try:
        yield Backend(SqlAlchemyEventStore(engine, build_event_serializer()), engine)
    finally:
        await engine.dispose()


@pytest.fixture
def store(backend: Backend) -> StoreUnderTest:
    return backend.store


async def outbox_positions(backend: Backend) -> list[int]:
    """The outbox as its table holds it (a SQL store), or as the store hands it out (memory)."""
    if backend.engine is None:
        return [r.position for r in await backend.store.pending_outbox(1_000_000)]
    async with backend.engine.connect() as conn:
        return list((await conn.execute(select(outbox.c.position).order_by(outbox.c.position))).scalars().all())


@pytest.fixture
def sql_store(engine: AsyncEngine) -> SqlAlchemyEventStore:
    return SqlAlchemyEventStore(engine, build_event_serializer())


async def test_migrations_create_exactly_the_declared_schema(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )
    assert diff == []
    assert await migrate.current_revision(engine) == migrate.head_revision()
    await migrate.upgrade(engine)  # a second upgrade is a no-op


async def test_append_then_read_back_the_stream_in_order(store: StoreUnderTest) -> None:
    batch = [registered("d1"), renamed("d1", "a"), renamed("d1", "b")]
    result = await store.append("device", "d1", batch, expected_version=0)
    assert (result.version, result.first_position, result.last_position) == (3, 1, 3)
    stream = await store.read_stream("device", "d1")
    assert [r.event for r in stream] == batch
    assert [r.version for r in stream] == [1, 2, 3]
    assert [r.version for r in await store.read_stream("device", "d1", after_version=2)] == [3]


async def test_a_stale_expected_version_raises_and_writes_nothing(store: StoreUnderTest, backend: Backend) -> None:
    await store.append("device", "d1", [registered("d1")], expected_version=0)
    with pytest.raises(ConcurrencyError):
        await store.append("device", "d1", [renamed("d1", "x")], expected_version=0)
    with pytest.raises(ConcurrencyError) as stale:
        await store.append("device", "d1", [renamed("d1", "x")], expected_version=5)
    assert stale.value.actual == 1
    assert await store.last_position() == 1
    assert await outbox_positions(backend) == [1]
    if backend.engine is not None:
        async with backend.engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(outbox)) == 1


async def test_two_concurrent_appends_at_the_same_version_exactly_one_wins(
    store: StoreUnderTest,
) -> None:
    await store.append("device", "d1", [registered("d1")], expected_version=0)
    for round_ in range(5):
        version = 1 + round_
        outcomes = await asyncio.gather(
            store.append("device", "d1", [renamed("d1", f"a{round_}")], expected_version=version),
            store.append("device", "d1", [renamed("d1", f"b{round_}")], expected_version=version),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if not isinstance(o, BaseException)]
        losers = [o for o in outcomes if isinstance(o, ConcurrencyError)]
        assert (len(winners), len(losers)) == (1, 1), outcomes
    assert len(await store.read_stream("device", "d1")) == 6


async def test_two_concurrent_first_appends_to_a_new_stream_exactly_one_wins(
    store: StoreUnderTest,
) -> None:
    outcomes = await asyncio.gather(
        *(store.append("device", "new", [registered("new")], expected_version=0) for _ in range(4)),
        return_exceptions=True,
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, ConcurrencyError) for o in outcomes if isinstance(o, BaseException))


async def test_the_global_order_is_gap_free_under_concurrent_writers(
    store: StoreUnderTest, backend: Backend
) -> None:
    async def writer(n: int) -> None:
        await store.append("device", f"w{n}", [registered(f"w{n}")], expected_version=0)
        for i in range(5):
            await store.append("device", f"w{n}", [renamed(f"w{n}", str(i))] * 2, expected_version=1 + 2 * i)

    # One doomed append mixed in: its rollback must not leave a hole in the positions.
    async def doomed() -> None:
        with pytest.raises(ConcurrencyError):
            await store.append("device", "w0", [renamed("w0", "late")], expected_version=99)

    await asyncio.gather(*(writer(n) for n in range(6)), doomed())
    everything = await store.read_all(0, 10_000)
    assert [r.position for r in everything] == list(range(1, 6 * 11 + 1))
    event_positions = [r.position for r in everything]
    if backend.engine is not None:
        async with backend.engine.connect() as conn:
            rows = await conn.execute(select(events.c.position).order_by(events.c.position))
            event_positions = list(rows.scalars().all())
    assert await outbox_positions(backend) == event_positions


async def test_read_all_pages_through_the_global_order(store: StoreUnderTest) -> None:
    for n in range(7):
        await store.append("device", f"d{n}", [registered(f"d{n}")], expected_version=0)
    first = await store.read_all(0, 3)
    rest = await store.read_all(first[-1].position, 100)
    assert [r.aggregate_id for r in first + rest] == [f"d{n}" for n in range(7)]


async def test_snapshot_plus_tail_rehydrates_identically(store: StoreUnderTest) -> None:
    with_snapshots = EventSourcedRepository(store, Device, snapshot_every=10)
    device = await with_snapshots.load("sensor-001")
    device.register(name=None, device_type="th", context=NOW)
    await with_snapshots.save(device)
    for i in range(34):
        device = await with_snapshots.load("sensor-001")
        device.update(tags={"i": str(i)}, name=f"n{i}", context=NOW)
        await with_snapshots.save(device)
    snapshot = await store.latest_snapshot("device", "sensor-001")
    # Each save adds two events; the one that crossed version 60 took the snapshot, at 61.
    assert snapshot is not None and snapshot.version == 61
    from_snapshot = await with_snapshots.load("sensor-001")
    from_events = await EventSourcedRepository(store, Device, snapshot_every=0).load("sensor-001")
    assert from_snapshot.version == from_events.version == 69
    assert from_snapshot.snapshot() == from_events.snapshot()


async def test_device_ids_with_colons_keep_their_stream(store: StoreUnderTest) -> None:
    await store.append("device", "urn:dev:1", [registered("urn:dev:1")], expected_version=0)
    (recorded,) = await store.read_all(0, 10)
    assert (recorded.stream_type, recorded.aggregate_id) == ("device", "urn:dev:1")


async def test_reads_are_not_blocked_by_a_writer_holding_its_transaction(
    sql_store: SqlAlchemyEventStore, engine: AsyncEngine
) -> None:
    store = sql_store
    await store.append("device", "d1", [registered("d1")], expected_version=0)
    read_done = asyncio.Event()

    async def slow_writer() -> None:
        async with engine.begin() as conn:  # holds the write lock until the read has finished
            await conn.execute(text("UPDATE event_position_counter SET last_position = last_position"))
            await read_done.wait()

    async def reader() -> None:
        await asyncio.sleep(0)  # let the writer take its lock first
        # If reads queued behind the writer this would deadlock until busy_timeout and fail.
        assert [r.aggregate_id for r in await store.read_all(0, 10)] == ["d1"]
        device = await EventSourcedRepository(store, Device, 10).load("d1")
        assert device.exists
        read_done.set()

    await asyncio.gather(slow_writer(), reader())

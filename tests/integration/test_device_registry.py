"""The device registry read model on every backend: catch-up, rebuild, search."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iot_platform.application.clock import utcnow
from iot_platform.application.devices.commands import (
    DecommissionDevice,
    RegisterDevice,
    SuspendDevice,
    UpdateDevice,
)
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.devices.queries import DeviceSearch, InvalidCursor, Near
from iot_platform.application.ports import RecordedEvent
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.application.telemetry.model import Reading
from iot_platform.domain.devices import Device, DeviceMetadata, DeviceStatus, Location
from iot_platform.infrastructure.eventstore.serialization import build_event_serializer
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.persistence.schema import rm_device_tags, rm_devices
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.device_registry import (
    DeviceRegistryProjection,
    SqlDeviceRegistry,
)
from iot_platform.infrastructure.readmodels.device_state import SqlDeviceState

pytestmark = pytest.mark.asyncio

SAN_FRANCISCO = Location(37.7749, -122.4194)
OAKLAND = Location(37.8044, -122.2712)  # ~13 km from SF
SAN_JOSE = Location(37.3382, -121.8863)  # ~68 km from SF
TOKYO = Location(35.6762, 139.6503)


class World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.store = SqlAlchemyEventStore(engine, build_event_serializer())
        self.runner = self.new_runner()
        self.devices = DeviceCommandHandler(EventSourcedRepository(self.store, Device, 3))
        self.registry = SqlDeviceRegistry(engine)

    def new_runner(self, *projections: Any) -> ProjectionRunner:
        return ProjectionRunner(
            self.engine, self.store, projections or [DeviceRegistryProjection()], batch_size=4
        )

    async def register(self, device_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("device_type", "th")
        await self.devices.register(RegisterDevice(device_id, **kwargs))

    async def rows(self) -> list[Any]:
        async with self.engine.connect() as conn:
            devices = (await conn.execute(select(rm_devices).order_by(rm_devices.c.device_id))).all()
            tags = (
                await conn.execute(
                    select(rm_device_tags).order_by(rm_device_tags.c.device_id, rm_device_tags.c.key)
                )
            ).all()
        return [tuple(r) for r in devices] + [tuple(r) for r in tags]


@pytest.fixture
def world(engine: AsyncEngine) -> World:
    return World(engine)


async def populate(world: World) -> None:
    await world.register("sf-1", location=SAN_FRANCISCO, tags={"site": "sf", "floor": "1"})
    await world.register("oak-1", location=OAKLAND, tags={"site": "oak"}, device_type="gateway")
    await world.register("sj-1", location=SAN_JOSE, tags={"site": "sj"})
    await world.register("tyo-1", location=TOKYO, tags={"site": "tyo"})
    await world.register("nowhere", metadata=DeviceMetadata(manufacturer="ACME"))
    await world.devices.update(UpdateDevice("sf-1", name="Lobby", tags={"site": "sf", "floor": "2"}))
    await world.devices.suspend(SuspendDevice("sj-1"))
    await world.devices.update(UpdateDevice("nowhere", location=OAKLAND))
    await world.devices.update(UpdateDevice("nowhere", clear_location=True))
    await world.register("gone")
    await world.devices.decommission(DecommissionDevice("gone"))


async def test_a_crash_between_append_and_projection_loses_nothing(world: World) -> None:
    await populate(world)  # appended, never projected: the process "died" here
    assert await world.registry.get("sf-1") is None
    restarted = world.new_runner()
    applied = await restarted.catch_up()
    assert applied == await world.store.last_position()
    view = await world.registry.get("sf-1")
    assert view is not None and view.name == "Lobby" and view.tags == {"site": "sf", "floor": "2"}
    assert await restarted.catch_up() == 0  # nothing applied twice


class ExplodingProjection(DeviceRegistryProjection):
    """Fails on the event at position 6, every time: a crash in the middle of a batch."""

    async def apply(self, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        if recorded.position == 6:
            raise RuntimeError("power cut")
        await super().apply(conn, recorded)


async def test_a_crash_inside_a_batch_rolls_back_to_the_checkpoint(world: World) -> None:
    await populate(world)
    exploding = world.new_runner(ExplodingProjection())
    await exploding.catch_up()
    # The batch 5-8 rolled back; 5 was then applied alone and the projection stalled at 6.
    assert await exploding.checkpoint("device_registry") == 5
    assert [s.position for s in await exploding.stalled()] == [6]
    await world.new_runner().catch_up()
    rebuilt_from_scratch = World(world.engine)
    expected = await world.rows()
    await rebuilt_from_scratch.new_runner().rebuild()
    assert await world.rows() == expected


async def test_a_rebuild_equals_the_incrementally_built_model(world: World) -> None:
    await world.register("a")
    await world.runner.catch_up()
    await populate(world)
    await world.runner.catch_up()
    await world.devices.update(UpdateDevice("a", tags={"k": "v"}, location=TOKYO))
    await world.runner.catch_up()
    incremental = await world.rows()
    assert len(incremental) > 10
    async with world.engine.begin() as conn:  # a corrupted read model, for good measure
        await conn.execute(text("UPDATE rm_devices SET name = 'garbage'"))
    assert await world.new_runner().rebuild() == await world.store.last_position()
    assert await world.rows() == incremental


async def test_two_runners_of_one_projection_never_apply_an_event_twice(world: World) -> None:
    await populate(world)
    first, second = world.new_runner(), world.new_runner()
    await asyncio.gather(first.catch_up(), second.catch_up())
    await first.catch_up()
    expected_world = World(world.engine)
    rows = await world.rows()
    await expected_world.new_runner().rebuild()
    assert await world.rows() == rows
    assert await first.checkpoint("device_registry") == await world.store.last_position()


async def test_wait_for_returns_once_projections_reach_a_position(world: World) -> None:
    task = asyncio.create_task(world.runner.run())
    try:
        await world.register("sensor-1")
        position = await world.store.last_position()
        assert await world.runner.wait_for(position, timeout=10)
        assert await world.registry.get("sensor-1") is not None
        assert not await world.runner.wait_for(position + 1, timeout=0.01)
    finally:
        task.cancel()


async def ids(world: World, **criteria: Any) -> list[str]:
    page = await world.registry.search(DeviceSearch(**criteria))
    return [v.device_id for v in page.items]


async def test_search_by_type_status_and_tags(world: World) -> None:
    await populate(world)
    await world.runner.catch_up()
    assert await ids(world) == ["nowhere", "oak-1", "sf-1", "sj-1", "tyo-1"]
    assert await ids(world, include_decommissioned=True) == [
        "gone", "nowhere", "oak-1", "sf-1", "sj-1", "tyo-1"
    ]
    assert await ids(world, device_type="gateway") == ["oak-1"]
    assert await ids(world, status=DeviceStatus.SUSPENDED) == ["sj-1"]
    assert await ids(world, status=DeviceStatus.DECOMMISSIONED) == ["gone"]
    assert await ids(world, tags={"site": "sf"}) == ["sf-1"]
    assert await ids(world, tags={"site": "sf", "floor": "1"}) == []  # the floor changed to 2
    assert await ids(world, tags={"site": "sf", "floor": "2"}) == ["sf-1"]


async def test_near_search_is_nearest_first_with_the_distance(world: World) -> None:
    await populate(world)
    await world.runner.catch_up()
    page = await world.registry.search(
        DeviceSearch(near=Near(SAN_FRANCISCO.latitude, SAN_FRANCISCO.longitude, 100))
    )
    assert [v.device_id for v in page.items] == ["sf-1", "oak-1", "sj-1"]
    distances = [v.distance_km for v in page.items]
    assert distances[0] == pytest.approx(0, abs=1e-6)
    assert distances[1] == pytest.approx(13.4, abs=0.5)
    assert distances[2] == pytest.approx(67.8, abs=1.0)
    near_tokyo = await ids(world, near=Near(35.0, 139.0, 150))
    assert near_tokyo == ["tyo-1"]
    assert await ids(world, near=Near(SAN_FRANCISCO.latitude, SAN_FRANCISCO.longitude, 20)) == [
        "sf-1", "oak-1"
    ]


async def test_active_within_uses_last_seen_from_telemetry(world: World) -> None:
    await populate(world)
    await world.runner.catch_up()
    now = utcnow()
    clock = [now - timedelta(hours=3)]
    state = SqlDeviceState(world.engine, clock=lambda: clock[0])
    await state.handle([Reading("oak-1", 1, {"t": 1.0})])
    clock[0] = now - timedelta(minutes=2)
    await state.handle([Reading("sf-1", 1, {"t": 2.0})])
    assert await ids(world, active_within_minutes=10) == ["sf-1"]
    assert await ids(world, active_within_minutes=240) == ["oak-1", "sf-1"]
    view = await world.registry.get("oak-1")
    assert view is not None and view.last_seen is not None
    assert abs((view.last_seen - (now - timedelta(hours=3))).total_seconds()) < 1


async def test_paging_with_a_cursor_visits_every_device_once(world: World) -> None:
    for n in range(23):
        await world.register(f"d{n:02d}", location=Location(10 + n / 100, 10))
    await world.runner.catch_up()
    for criteria in ({}, {"near": Near(10, 10, 500)}):
        seen: list[str] = []
        cursor = None
        while True:
            page = await world.registry.search(DeviceSearch(limit=5, cursor=cursor, **criteria))
            seen += [v.device_id for v in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [f"d{n:02d}" for n in range(23)]
    with pytest.raises(InvalidCursor):
        await world.registry.search(DeviceSearch(cursor="not-a-cursor"))
    page = await world.registry.search(DeviceSearch(limit=5))
    with pytest.raises(InvalidCursor):
        await world.registry.search(DeviceSearch(near=Near(10, 10, 5), cursor=page.next_cursor))

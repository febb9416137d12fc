"""The command-status read model on every backend: projection, queries, expiry, rebuild."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.commands.changes import CommandChanges
from iot_platform.application.commands.commands import AcknowledgeCommand, IssueCommand
from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.handlers import CommandHandler, CommandLimits
from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.commands import CommandStatus, DeviceCommand
from iot_platform.domain.devices import Device, Protocol
from iot_platform.infrastructure.eventstore.serialization import build_event_serializer
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.persistence.schema import rm_device_commands
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.device_commands import (
    DeviceCommandsProjection,
    SqlCommandQueries,
)
from iot_platform.infrastructure.readmodels.device_registry import DeviceRegistryProjection
from tests.unit.command_fakes import T0, FakeClock, RecordingPublisher

pytestmark = pytest.mark.asyncio


class World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.store = SqlAlchemyEventStore(engine, build_event_serializer())
        self.clock = FakeClock()
        self.queries = SqlCommandQueries(engine)
        self.runner = ProjectionRunner(
            engine, self.store, [DeviceRegistryProjection(), DeviceCommandsProjection()], batch_size=3
        )
        self.devices = DeviceCommandHandler(EventSourcedRepository(self.store, Device, 0))
        ids = itertools.count(1)
        self.commands = CommandHandler(
            EventSourcedRepository(self.store, DeviceCommand, 2),
            EventSourcedRepository(self.store, Device, 0),
            self.queries,
            self.clock,
            CommandLimits(60, 3600),
            new_id=lambda: f"cmd-{next(ids)}",
        )
        self.publisher = RecordingPublisher()
        self.delivery = CommandDelivery(
            self.commands, self.queries, self.clock, self.publisher, CommandChanges()
        )

    async def issue(self, device_id: str, command: str, ttl: float = 60, **parameters: Any) -> str:
        self.clock.advance(1)
        issued = await self.delivery.issue(
            IssueCommand(device_id, command, parameters, ttl, EventContext(actor="alice"))
        )
        return issued.command_id

    async def ack(self, device_id: str, command_id: str, status: CommandStatus, result: Any = None) -> None:
        self.clock.advance(1)
        await self.commands.acknowledge(AcknowledgeCommand(device_id, command_id, status, result))

    async def rows(self) -> list[tuple[Any, ...]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(select(rm_device_commands).order_by(rm_device_commands.c.command_id))
            return [tuple(r) for r in result]


@pytest.fixture
def world(engine: AsyncEngine) -> World:
    return World(engine)


async def test_the_read_model_follows_each_command_through_its_states(world: World) -> None:
    await world.devices.register(RegisterDevice("d1", "th"))
    await world.devices.register(RegisterDevice("h1", "th", protocol=Protocol.HTTP))
    done = await world.issue("d1", "set_sampling_rate", hz=2)
    failed = await world.issue("d1", "reboot")
    waiting = await world.issue("h1", "calibrate", ttl=30, offset=0.5)
    await world.ack("d1", done, CommandStatus.DELIVERED)
    await world.ack("d1", done, CommandStatus.SUCCEEDED, {"rate": 2, "unit": "Hz"})
    await world.ack("d1", failed, CommandStatus.FAILED, "busy")
    await world.runner.catch_up()

    view = await world.queries.get(done)
    assert view is not None
    assert (view.status, view.result, view.parameters, view.issued_by, view.version) == (
        CommandStatus.SUCCEEDED, {"rate": 2, "unit": "Hz"}, {"hz": 2}, "alice", 4)
    assert view.issued_at == T0.replace(second=1) and (view.expires_at - view.issued_at).total_seconds() == 60
    assert view.sent_at is not None and view.delivered_at is not None and view.completed_at is not None
    assert view.issued_at <= view.sent_at <= view.delivered_at < view.completed_at
    failure = await world.queries.get(failed)
    assert failure is not None and (failure.status, failure.result) == (CommandStatus.FAILED, "busy")
    assert failure.delivered_at is None

    assert [v.command_id for v in await world.queries.for_device("d1")] == [failed, done]
    assert [v.command_id for v in await world.queries.for_device("d1", CommandStatus.SUCCEEDED)] == [done]
    assert [v.command_id for v in await world.queries.for_device("d1", limit=1)] == [failed]
    assert [v.command_id for v in await world.queries.pending("h1", world.clock.now())] == [waiting]
    assert await world.queries.pending("d1", world.clock.now()) == []
    assert await world.queries.get("nope") is None


async def test_due_commands_expire_and_leave_the_pending_list(world: World) -> None:
    await world.devices.register(RegisterDevice("h1", "th", protocol=Protocol.HTTP))
    short = await world.issue("h1", "reboot", ttl=10)
    long = await world.issue("h1", "reboot", ttl=3600)
    await world.runner.catch_up()
    world.clock.advance(9)
    assert await world.queries.due(world.clock.now(), 10) == [short]
    assert [v.command_id for v in await world.queries.pending("h1", world.clock.now())] == [long]
    assert await world.commands.expire_due() == 1
    await world.runner.catch_up()
    expired = await world.queries.get(short)
    assert expired is not None and expired.status is CommandStatus.EXPIRED
    assert expired.completed_at == world.clock.now()
    assert await world.queries.due(world.clock.now(), 10) == []


async def test_rebuilding_the_read_model_gives_the_same_rows(world: World) -> None:
    await world.devices.register(RegisterDevice("d1", "th"))
    first = await world.issue("d1", "a")
    await world.issue("d1", "b", ttl=1)
    await world.ack("d1", first, CommandStatus.SUCCEEDED, [1, 2, 3])
    world.clock.advance(5)
    await world.commands.expire_due()
    await world.runner.catch_up()
    before = await world.rows()
    assert len(before) == 2
    await world.runner.rebuild(["device_commands"])
    assert await world.rows() == before

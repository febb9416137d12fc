"""Device command use cases over fakes: issue, push, poll, acknowledge, expire, wait.

The clock is a fake that tests move, so expiry needs no sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta

import pytest

from iot_platform.application.commands.changes import CommandChanges
from iot_platform.application.commands.commands import AcknowledgeCommand, CommandMessage, IssueCommand
from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.handlers import CommandHandler, CommandLimits
from iot_platform.application.commands.queries import CommandStatusReader
from iot_platform.application.devices.commands import DecommissionDevice, RecordConnectivity, RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.errors import NotFound
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.commands import CommandStatus, DeviceCommand
from iot_platform.domain.devices import Device, Protocol
from iot_platform.domain.errors import InvalidTransition, InvalidValue
from tests.unit.command_fakes import FakeClock, InMemoryCommandQueries, RecordingPublisher
from tests.unit.fakes import InMemoryEventStore

pytestmark = pytest.mark.asyncio


class World:
    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.clock = FakeClock()
        self.publisher = RecordingPublisher()
        self.changes = CommandChanges()
        self.queries = InMemoryCommandQueries(self.store)
        ids = itertools.count(1)
        self.devices = DeviceCommandHandler(EventSourcedRepository(self.store, Device, 0))
        self.commands = CommandHandler(
            EventSourcedRepository(self.store, DeviceCommand, 0),
            EventSourcedRepository(self.store, Device, 0),
            self.queries,
            self.clock,
            CommandLimits(default_ttl_seconds=60, max_ttl_seconds=3600),
            changes=self.changes,
            new_id=lambda: f"cmd-{next(ids)}",
        )
        self.delivery = CommandDelivery(
            self.commands, self.queries, self.clock, self.publisher, self.changes, poll_interval=30
        )
        self.status = CommandStatusReader(self.queries, self.changes, poll_interval=30)

    async def device(self, device_id: str, protocol: Protocol = Protocol.MQTT, online: bool | None = None) -> None:
        await self.devices.register(RegisterDevice(device_id, "th", protocol=protocol))
        if online is not None:
            await self.devices.record_connectivity(RecordConnectivity(device_id, online))

    async def issue(self, device_id: str = "d1", ttl: float | None = None) -> str:
        issued = await self.delivery.issue(IssueCommand(device_id, "reboot", {"delay": 5}, ttl))
        return issued.command_id

    async def ack(self, command_id: str, status: CommandStatus, device_id: str = "d1", result: object = None) -> None:
        await self.commands.acknowledge(AcknowledgeCommand(device_id, command_id, status, result))

    def history(self, command_id: str) -> list[tuple[str, ...]]:
        """The command's events, with the channel of each send."""
        return [
            (r.event.event_type(), *([r.event.channel] if hasattr(r.event, "channel") else []))
            for r in self.store.events if r.aggregate_id == command_id
        ]


@pytest.fixture
def world() -> World:
    return World()


async def test_a_command_to_an_mqtt_device_of_unknown_connectivity_is_pushed_at_once(world: World) -> None:
    await world.device("d1")
    command_id = await world.issue()
    assert world.history(command_id) == [("CommandIssued",), ("CommandSent", "mqtt")]
    [message] = world.publisher.sent
    now = world.clock.now()
    assert message == CommandMessage(command_id, "d1", "reboot", {"delay": 5}, now, now + timedelta(seconds=60))


async def test_a_command_to_an_offline_device_waits_until_it_comes_online(world: World) -> None:
    await world.device("d1", online=False)
    command_id = await world.issue()
    assert world.history(command_id) == [("CommandIssued",)] and world.publisher.sent == []
    await world.devices.record_connectivity(RecordConnectivity("d1", True))
    assert await world.delivery.device_online("d1") == 1
    assert world.history(command_id) == [("CommandIssued",), ("CommandSent", "mqtt")]
    assert [m.command_id for m in world.publisher.sent] == [command_id]


async def test_coming_online_again_repeats_what_the_device_has_not_confirmed(world: World) -> None:
    await world.device("d1", online=True)
    confirmed, unconfirmed = await world.issue(), await world.issue()
    await world.ack(confirmed, CommandStatus.DELIVERED)
    assert await world.delivery.device_online("d1") == 1
    assert [m.command_id for m in world.publisher.sent] == [confirmed, unconfirmed, unconfirmed]
    assert world.history(unconfirmed)[-1] == ("CommandSent", "mqtt")


async def test_a_failed_push_leaves_the_command_issued_for_the_next_online(world: World) -> None:
    await world.device("d1", online=True)
    world.publisher.down = True
    command_id = await world.issue()
    assert world.history(command_id) == [("CommandIssued",)]
    world.publisher.down = False
    assert await world.delivery.device_online("d1") == 1
    assert world.history(command_id) == [("CommandIssued",), ("CommandSent", "mqtt")]


async def test_a_device_answering_before_the_send_is_recorded_loses_nothing(world: World) -> None:
    await world.device("d1")

    class FastDevice(RecordingPublisher):
        async def publish(self, message: CommandMessage) -> None:
            await world.ack(message.command_id, CommandStatus.SUCCEEDED, result="done")

    world.delivery = CommandDelivery(world.commands, world.queries, world.clock, FastDevice(), world.changes)
    command_id = await world.issue()
    assert world.history(command_id) == [("CommandIssued",), ("CommandSucceeded",)]


async def test_an_http_device_polls_and_gets_its_command_until_it_confirms_it(world: World) -> None:
    await world.device("h1", protocol=Protocol.HTTP)
    command_id = await world.issue("h1")
    assert world.publisher.sent == []
    [message] = await world.delivery.poll("h1", wait=0)
    assert message.command_id == command_id
    assert world.history(command_id) == [("CommandIssued",), ("CommandSent", "http")]
    assert [m.command_id for m in await world.delivery.poll("h1", wait=0)] == [command_id]
    await world.ack(command_id, CommandStatus.DELIVERED, device_id="h1")
    assert await world.delivery.poll("h1", wait=0) == []


async def test_a_long_poll_is_answered_by_a_command_issued_while_it_waits(world: World) -> None:
    await world.device("h1", protocol=Protocol.HTTP)
    poll = asyncio.create_task(world.delivery.poll("h1", wait=30))
    await asyncio.sleep(0)  # the poll finds nothing and waits
    command_id = await world.issue("h1")
    assert [m.command_id for m in await poll] == [command_id]


async def test_waiting_for_an_outcome_is_woken_by_the_acknowledgement(world: World) -> None:
    await world.device("d1")
    command_id = await world.issue()
    waiter = asyncio.create_task(world.status.get("d1", command_id, wait=30))
    await asyncio.sleep(0)
    assert not waiter.done()
    await world.ack(command_id, CommandStatus.SUCCEEDED, result={"rate": 2})
    view = await waiter
    assert (view.status, view.result) == (CommandStatus.SUCCEEDED, {"rate": 2})


async def test_expiry_follows_the_clock(world: World) -> None:
    await world.device("d1", online=False)
    command_id = await world.issue(ttl=60)
    world.clock.advance(59)
    assert await world.commands.expire_due() == 0
    world.clock.advance(1)
    assert await world.commands.expire_due() == 1
    assert await world.commands.expire_due() == 0
    assert world.history(command_id) == [("CommandIssued",), ("CommandExpired",)]
    assert await world.delivery.device_online("d1") == 0
    with pytest.raises(InvalidTransition, match="expired"):
        await world.ack(command_id, CommandStatus.SUCCEEDED)


async def test_a_finished_command_does_not_expire(world: World) -> None:
    await world.device("d1")
    command_id = await world.issue(ttl=60)
    await world.ack(command_id, CommandStatus.FAILED, result={"error": "busy"})
    world.clock.advance(120)
    assert await world.commands.expire_due() == 0
    view = await world.status.get("d1", command_id)
    assert (view.status, view.result) == (CommandStatus.FAILED, {"error": "busy"})


async def test_the_ttl_defaults_and_is_bounded(world: World) -> None:
    await world.device("d1")
    command_id = await world.issue(ttl=None)
    view = await world.status.get("d1", command_id)
    assert (view.expires_at - view.issued_at).total_seconds() == 60
    with pytest.raises(InvalidValue) as too_long:
        await world.issue(ttl=3601)
    assert too_long.value.field == "ttl_seconds"


async def test_commands_need_a_live_registered_device(world: World) -> None:
    with pytest.raises(NotFound):
        await world.issue("ghost")
    await world.device("d1")
    await world.devices.decommission(DecommissionDevice("d1"))
    with pytest.raises(InvalidTransition, match="decommissioned"):
        await world.issue("d1")


async def test_an_acknowledgement_must_name_a_command_of_that_device(world: World) -> None:
    await world.device("d1")
    await world.device("d2")
    command_id = await world.issue("d1")
    with pytest.raises(NotFound):
        await world.ack(command_id, CommandStatus.SUCCEEDED, device_id="d2")
    with pytest.raises(NotFound):
        await world.ack("nope", CommandStatus.SUCCEEDED)
    with pytest.raises(NotFound):
        await world.status.get("d2", command_id)


async def test_the_last_command_sent_and_not_confirmed_is_what_a_lorawan_ack_acknowledges(world: World) -> None:
    await world.device("lw", Protocol.LORAWAN)
    first = await world.delivery.issue(IssueCommand("lw", "a", {"payload_hex": "01"}))
    second = await world.delivery.issue(IssueCommand("lw", "b", {"payload_hex": "02", "confirmed": False}))
    assert await world.delivery.last_sent("lw") is None  # nothing sent yet
    assert (await world.delivery.take("lw", "lorawan")).command_id == first.command_id  # type: ignore[union-attr]
    world.clock.advance(1)
    assert (await world.delivery.take("lw", "lorawan")).command_id == first.command_id  # type: ignore[union-attr]
    assert await world.delivery.last_sent("lw") == first.command_id
    await world.ack(first.command_id, CommandStatus.DELIVERED, "lw")
    assert (await world.delivery.take("lw", "lorawan")).command_id == second.command_id  # type: ignore[union-attr]
    assert await world.delivery.last_sent("lw") == second.command_id
    assert await world.delivery.last_sent("lw", confirmed_only=True) is None  # an unconfirmed one draws no ACK

"""The device use cases over a fake event store: load, decide, save, snapshot, read-your-writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from iot_platform.application.devices.commands import (
    DecommissionDevice,
    RegisterDevice,
    ResumeDevice,
    SuspendDevice,
    UpdateDevice,
)
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.devices.queries import device_history
from iot_platform.application.errors import ConcurrencyError, NotFound
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.devices import Device, DeviceStatus
from iot_platform.domain.errors import AlreadyExists, InvalidTransition
from tests.unit.fakes import InMemoryEventStore, RecordingReadModel

pytestmark = pytest.mark.asyncio


def handler(store: InMemoryEventStore, snapshot_every: int = 0) -> DeviceCommandHandler:
    return DeviceCommandHandler(EventSourcedRepository(store, Device, snapshot_every), RecordingReadModel())


async def test_register_appends_one_event_and_waits_for_the_read_model() -> None:
    store = InMemoryEventStore()
    read_model = RecordingReadModel()
    devices = DeviceCommandHandler(EventSourcedRepository(store, Device, 0), read_model)
    result = await devices.register(RegisterDevice("sensor-001", "th"))
    assert (result.version, result.position) == (1, 1)
    assert [r.event.event_type() for r in store.events] == ["DeviceRegistered"]
    assert [r.position for r in await store.pending_outbox(10)] == [1]
    assert read_model.waited_for == [1]


async def test_registering_an_existing_device_is_refused_and_appends_nothing() -> None:
    store = InMemoryEventStore()
    devices = handler(store)
    await devices.register(RegisterDevice("sensor-001", "th"))
    with pytest.raises(AlreadyExists):
        await devices.register(RegisterDevice("sensor-001", "th"))
    assert len(store.events) == 1


async def test_commands_for_an_unknown_device_are_not_found() -> None:
    devices = handler(InMemoryEventStore())
    with pytest.raises(NotFound):
        await devices.suspend(SuspendDevice("ghost"))
    with pytest.raises(NotFound):
        await device_history(InMemoryEventStore(), "ghost")


async def test_a_stale_expected_version_is_a_concurrency_error() -> None:
    store = InMemoryEventStore()
    devices = handler(store)
    await devices.register(RegisterDevice("sensor-001", "th"))
    await devices.update(UpdateDevice("sensor-001", name="Lobby", expected_version=1))
    with pytest.raises(ConcurrencyError) as stale:
        await devices.update(UpdateDevice("sensor-001", name="Hall", expected_version=1))
    assert (stale.value.expected, stale.value.actual) == (1, 2)


async def test_an_update_that_changes_nothing_appends_nothing() -> None:
    store = InMemoryEventStore()
    devices = handler(store)
    await devices.register(RegisterDevice("sensor-001", "th", name="Lobby"))
    result = await devices.update(UpdateDevice("sensor-001", name="Lobby"))
    assert result.position is None and len(store.events) == 1


async def test_lifecycle_through_the_handler() -> None:
    store = InMemoryEventStore()
    devices = handler(store)
    await devices.register(RegisterDevice("sensor-001", "th"))
    await devices.suspend(SuspendDevice("sensor-001", reason="maintenance"))
    await devices.resume(ResumeDevice("sensor-001"))
    await devices.decommission(DecommissionDevice("sensor-001"))
    with pytest.raises(InvalidTransition):
        await devices.resume(ResumeDevice("sensor-001"))
    history = await device_history(store, "sensor-001")
    assert [r.event.event_type() for r in history] == [
        "DeviceRegistered",
        "DeviceSuspended",
        "DeviceResumed",
        "DeviceDecommissioned",
    ]


async def test_snapshots_are_taken_every_n_events_and_used_on_load() -> None:
    store = InMemoryEventStore()
    devices = handler(store, snapshot_every=5)
    await devices.register(RegisterDevice("sensor-001", "th"))
    for i in range(11):
        await devices.update(UpdateDevice("sensor-001", tags={"n": str(i)}))
    snapshot = await store.latest_snapshot("device", "sensor-001")
    assert snapshot is not None and snapshot.version == 10
    repository = EventSourcedRepository(store, Device, 5)
    loaded = await repository.load("sensor-001")
    assert loaded.version == 12 and loaded.tags == {"n": "10"}
    assert loaded.status is DeviceStatus.REGISTERED


async def test_device_events_occur_at_the_time_of_the_handlers_clock() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    store = InMemoryEventStore()
    devices = DeviceCommandHandler(EventSourcedRepository(store, Device, 0), clock=lambda: at)
    await devices.register(RegisterDevice("sensor-001", "th"))
    await devices.suspend(SuspendDevice("sensor-001", reason="maintenance"))
    assert [r.event.occurred_at for r in store.events] == [at, at]


async def test_a_time_given_with_the_command_wins_over_the_handlers_clock() -> None:
    given = datetime(2029, 6, 1, tzinfo=UTC)
    store = InMemoryEventStore()
    devices = DeviceCommandHandler(
        EventSourcedRepository(store, Device, 0), clock=lambda: datetime(2030, 1, 1, tzinfo=UTC)
    )
    await devices.register(RegisterDevice("sensor-001", "th", context=EventContext(at=given)))
    assert store.events[0].event.occurred_at == given

"""The outbox relay and the Kafka-fed projections, against the harness Kafka broker.

Given domain events in the store (SQLite and PostgreSQL), the relay publishes every one to a
topic of its own; a relay that dies between publishing and marking publishes that batch again;
projections fed from the topic drop the repeats and come out identical to a rebuild from the
store.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.alerts.commands import ChangeRule, CreateRule, DeleteRule
from iot_platform.application.alerts.handlers import RuleHandler
from iot_platform.application.devices.commands import (
    DecommissionDevice,
    RegisterDevice,
    ResumeDevice,
    SuspendDevice,
    UpdateDevice,
)
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.outbox import OutboxRelay
from iot_platform.application.ports import RecordedEvent
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.alerts import AlertRule, Condition, DeviceSelector, Operator, RuleDefinition
from iot_platform.domain.devices import Device
from iot_platform.infrastructure.eventstore.serialization import build_event_serializer
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.projections.kafka_feed import KafkaProjectionFeed
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.alerts import AlertRulesProjection, AlertsProjection
from iot_platform.infrastructure.readmodels.device_commands import DeviceCommandsProjection
from iot_platform.infrastructure.readmodels.device_registry import DeviceRegistryProjection
from iot_platform.infrastructure.streaming.kafka_events import KafkaDomainEventPublisher
from tests.conftest import require_service
from tests.integration.kafka_topics import read_records

pytestmark = pytest.mark.asyncio


@pytest.fixture
def brokers() -> list[str]:
    return require_service("IOT_TEST_KAFKA_BROKERS", "Kafka").split(",")


class DiesBeforeMarking:
    """The store's outbox, except that the first mark fails: a relay killed between the
    broker's acknowledgement and the mark."""

    def __init__(self, store: SqlAlchemyEventStore) -> None:
        self._store = store
        self.died = False

    async def pending_outbox(self, limit: int) -> list[RecordedEvent]:
        return await self._store.pending_outbox(limit)

    async def mark_published(self, positions: Sequence[int]) -> None:
        if not self.died:
            self.died = True
            raise ConnectionError("killed between publish and mark")
        await self._store.mark_published(positions)


async def write_history(store: SqlAlchemyEventStore) -> None:
    devices = DeviceCommandHandler(EventSourcedRepository(store, Device, 0))
    rules = RuleHandler(EventSourcedRepository(store, AlertRule, 0))
    for i in range(6):
        await devices.register(RegisterDevice(f"sensor-{i}", "th", tags={"floor": str(i % 2)}))
    await devices.update(UpdateDevice("sensor-1", name="lobby", tags={"floor": "0"}))
    await devices.suspend(SuspendDevice("sensor-2", reason="maintenance"))
    await devices.resume(ResumeDevice("sensor-2"))
    await devices.decommission(DecommissionDevice("sensor-5"))
    hot = RuleDefinition("hot", DeviceSelector("sensor-*"), Condition("temperature", Operator.GT, 30.0))
    await rules.create(CreateRule("r1", hot))
    await rules.change(ChangeRule("r1", {"threshold": 35.0}))
    await rules.create(CreateRule("r2", hot))
    await rules.delete(DeleteRule("r2"))


def projections() -> list[Any]:
    return [DeviceRegistryProjection(), AlertRulesProjection(), AlertsProjection(), DeviceCommandsProjection()]


async def read_models(engine: AsyncEngine, runner_projections: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
    tables = {}
    async with engine.connect() as conn:
        for projection in runner_projections:
            for table in projection.tables:
                rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
                tables[table.name] = [tuple(r) for r in rows]
    return tables


async def relay_everything(store: SqlAlchemyEventStore, brokers: list[str], batch_size: int) -> str:
    """Relays the whole outbox to a new topic, the relay killed once between publish and mark
    (so the first batch is on the topic twice); returns the topic."""
    topic = f"iot-domain-events-{uuid4().hex[:8]}"
    publisher = KafkaDomainEventPublisher(brokers, topic, build_event_serializer())
    relay = OutboxRelay(DiesBeforeMarking(store), publisher, batch_size=batch_size)
    try:
        with pytest.raises(ConnectionError):
            await relay.relay_once()
        while await relay.relay_once():
            pass
    finally:
        await publisher.close()
    return topic


@pytest_asyncio.fixture
async def store(engine: AsyncEngine) -> SqlAlchemyEventStore:
    """An event store holding the history above, none of it relayed yet."""
    given = SqlAlchemyEventStore(engine, build_event_serializer())
    await write_history(given)
    return given


async def test_every_event_is_relayed_once_marked_and_a_killed_relay_only_repeats(
    store: SqlAlchemyEventStore, brokers: list[str]
) -> None:
    total = await store.last_position()
    topic = await relay_everything(store, brokers, batch_size=7)
    assert await store.pending_outbox(100) == []
    messages = await read_records(brokers, topic, total + 7)
    positions = [int(json.loads(m.value)["position"]) for m in messages]
    assert positions == list(range(1, 8)) + list(range(1, total + 1))  # in order; 1..7 twice
    first = messages[0]
    headers = dict(first.headers)
    assert first.key == b"sensor-0"
    assert headers["event_type"] == b"DeviceRegistered" and headers["position"] == b"1"
    assert headers["schema_version"] == b"1" and headers["correlation_id"]


async def test_projections_fed_from_the_topic_equal_a_rebuild_from_the_store(
    engine: AsyncEngine, store: SqlAlchemyEventStore, brokers: list[str]
) -> None:
    serializer = build_event_serializer()
    total = await store.last_position()
    topic = await relay_everything(store, brokers, batch_size=5)

    fed = projections()
    runner = ProjectionRunner(engine, store, fed, batch_size=4)
    feed = KafkaProjectionFeed(brokers, topic, f"test-{uuid4().hex[:8]}", runner, serializer)
    following = asyncio.create_task(feed.run())
    give_up = time.monotonic() + 60  # fail with the counts rather than hang
    try:
        # The feed's own count, not just the checkpoints: the runner commits them before the
        # feed counts what it applied, and cancelling in between would lose the count.
        while feed.applied < total:
            assert not following.done(), following
            assert time.monotonic() < give_up, (feed.applied, feed.repeats, await runner.position())
            await asyncio.sleep(0.1)
        assert await runner.position() == total
    finally:
        following.cancel()
        with pytest.raises(asyncio.CancelledError):
            await following
    assert (feed.applied, feed.repeats) == (total, 5)
    from_kafka = await read_models(engine, fed)
    assert from_kafka["rm_devices"] and from_kafka["rm_alert_rules"]

    await runner.rebuild()
    assert await read_models(engine, fed) == from_kafka

"""A projection that meets an event it cannot apply stalls alone, says so, and resumes.

Specification of the projection runner's stall, retry and skip, on every backend (SQLite and
PostgreSQL). Why: one unreadable ``AlertRuleChanged`` stopped every
projection for good, so new devices never appeared and every write waited out its timeout.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.alerts.commands import ChangeRule, CreateRule
from iot_platform.application.alerts.handlers import RuleHandler, minimal_definition
from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.errors import UnreadableHistory
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.alerts import AlertRule
from iot_platform.domain.devices import Device
from iot_platform.infrastructure.eventstore.serialization import build_event_serializer
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.persistence.schema import projection_failures
from iot_platform.infrastructure.projections.runner import NotStalled, ProjectionRunner
from iot_platform.infrastructure.readmodels.alerts import AlertRulesProjection, SqlAlertReadModel
from iot_platform.infrastructure.readmodels.device_registry import (
    DeviceRegistryProjection,
    SqlDeviceRegistry,
)

pytestmark = pytest.mark.asyncio

RETRY = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.store = SqlAlchemyEventStore(engine, build_event_serializer())
        self.clock = Clock()
        self.runner = self.new_runner()
        self.devices = DeviceCommandHandler(EventSourcedRepository(self.store, Device, 0))
        self.rules = RuleHandler(EventSourcedRepository(self.store, AlertRule, 0))
        self.registry = SqlDeviceRegistry(engine)
        self.rule_views = SqlAlertReadModel(engine)

    def new_runner(self) -> ProjectionRunner:
        return ProjectionRunner(self.engine, self.store, [DeviceRegistryProjection(), AlertRulesProjection()],
                                batch_size=50, retry_interval=RETRY, monotonic=self.clock)

    async def rule_with_a_poisoned_change(self) -> tuple[str, int, str]:
        """A rule whose last change is stored as the old bug stored it: ``"enabled": null``.
        Returns the rule id, the poisoned event's position and its good data."""
        await self.rules.create(CreateRule("r1", minimal_definition({"metric": "t", "op": ">", "threshold": 1})))
        result = await self.rules.change(ChangeRule("r1", {"threshold": 2.0}))
        assert result.position is not None
        position = result.position
        async with self.engine.begin() as conn:
            good = (await conn.execute(text("SELECT data FROM events WHERE position = :p"), {"p": position})).scalar_one()
            bad = json.loads(good)
            bad["definition"]["enabled"] = None
            await conn.execute(text("UPDATE events SET data = :d WHERE position = :p"),
                               {"d": json.dumps(bad), "p": position})
        return "r1", position, good

    async def restore(self, position: int, data: str) -> None:
        """Stands for a release that can read the event (an upcaster shipped)."""
        async with self.engine.begin() as conn:
            await conn.execute(text("UPDATE events SET data = :d WHERE position = :p"), {"d": data, "p": position})

    async def failures(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(projection_failures).order_by(projection_failures.c.id))).mappings()
            return [dict(r) for r in rows]


@pytest.fixture
def world(engine: AsyncEngine) -> World:
    return World(engine)


async def test_an_unreadable_event_stalls_only_the_projection_that_reads_its_stream(world: World) -> None:
    # Given a rule change stored unreadable, then a device registered after it
    _, poisoned, _ = await world.rule_with_a_poisoned_change()
    await world.devices.register(RegisterDevice("after-1", device_type="th"))
    # When the projections catch up
    await world.runner.catch_up()
    # Then the rules projection stopped just before the event, and says which and why
    assert await world.runner.checkpoint("alert_rules") == poisoned - 1
    [stall] = await world.runner.stalled()
    assert (stall.projection, stall.position, stall.event_type, stall.stream_id) == (
        "alert_rules", poisoned, "AlertRuleChanged", "alert_rule:r1")
    assert "enabled" in stall.error
    # And the device registry went on: the new device is there
    assert await world.registry.get("after-1") is not None
    assert await world.runner.checkpoint("device_registry") == await world.store.last_position()
    # And read-your-writes does not wait behind the stalled projection
    assert await world.runner.wait_for(await world.store.last_position(), timeout=0.01)
    assert world.runner.failures["alert_rules"] == 1


async def test_loading_the_aggregate_of_an_unreadable_event_is_refused_by_name(world: World) -> None:
    # Given a rule whose stream holds an unreadable event
    rule_id, poisoned, _ = await world.rule_with_a_poisoned_change()
    # When it is changed, Then the refusal names the event, and nothing is appended
    last = await world.store.last_position()
    with pytest.raises(UnreadableHistory, match=f"position {poisoned}"):
        await world.rules.change(ChangeRule(rule_id, {"threshold": 3.0}))
    assert await world.store.last_position() == last


async def test_a_stalled_projection_retries_and_resumes_once_the_event_can_be_applied(world: World) -> None:
    # Given the rules projection stalled on an unreadable change
    rule_id, poisoned, good = await world.rule_with_a_poisoned_change()
    await world.runner.catch_up()
    # When a release that reads it ships, but the retry is not due yet
    await world.restore(poisoned, good)
    await world.runner.catch_up()
    # Then it is still stalled
    assert [s.position for s in await world.runner.stalled()] == [poisoned]
    # When the retry interval has passed
    world.clock.now += RETRY + 1
    await world.runner.catch_up()
    # Then it resumed, applied the change, and the record says so
    assert await world.runner.stalled() == []
    assert world.runner.stalls == {}
    view = await world.rule_views.rule(rule_id)
    assert view is not None and view.definition.condition.threshold == 2.0
    [failure] = await world.failures()
    assert failure["resolution"] == "applied" and failure["resolved_at"] is not None


async def test_each_failed_retry_is_counted_on_the_same_record(world: World) -> None:
    # Given a stalled projection
    await world.rule_with_a_poisoned_change()
    await world.runner.catch_up()
    # When it retries twice and still cannot apply the event
    for _ in range(2):
        world.clock.now += RETRY + 1
        await world.runner.catch_up()
    # Then one record, three attempts
    [failure] = await world.failures()
    assert failure["attempts"] == 3 and failure["resolved_at"] is None
    assert world.runner.failures["alert_rules"] == 3


async def test_an_operator_skips_the_event_and_the_running_projection_resumes(world: World) -> None:
    # Given the rules projection stalled, and a rule created after the poisoned change
    rule_id, poisoned, _ = await world.rule_with_a_poisoned_change()
    await world.rules.create(CreateRule("r2", minimal_definition({"metric": "h", "op": "<", "threshold": 5})))
    await world.runner.catch_up()
    # When an operator skips it (from another process: another runner on the same database)
    stall = await world.new_runner().skip("alert_rules", poisoned, "cli:ops", "bad PATCH of issue 12")
    # Then the skip is recorded: who, when, why
    assert stall.event_type == "AlertRuleChanged"
    [failure] = await world.failures()
    assert (failure["resolution"], failure["resolved_by"], failure["note"]) == (
        "skipped", "cli:ops", "bad PATCH of issue 12")
    # And the running runner resumes without waiting for its retry, past the skipped event
    await world.runner.catch_up()
    assert await world.runner.stalled() == [] and world.runner.stalls == {}
    assert await world.runner.checkpoint("alert_rules") == await world.store.last_position()
    assert await world.rule_views.rule("r2") is not None
    view = await world.rule_views.rule(rule_id)
    assert view is not None and view.definition.condition.threshold == 1  # the change never applied


async def test_a_skip_must_name_the_event_the_projection_is_stalled_on(world: World) -> None:
    # Given the rules projection stalled at one position
    _, poisoned, _ = await world.rule_with_a_poisoned_change()
    await world.runner.catch_up()
    # When an operator names another position, or another projection, Then nothing is skipped
    with pytest.raises(NotStalled, match=f"stalled at {poisoned}"):
        await world.runner.skip("alert_rules", poisoned - 1, "cli:ops")
    with pytest.raises(NotStalled, match="not stalled"):
        await world.runner.skip("device_registry", poisoned, "cli:ops")
    with pytest.raises(NotStalled, match="no projection named"):
        await world.runner.skip("nope", poisoned, "cli:ops")
    assert await world.runner.checkpoint("alert_rules") == poisoned - 1


async def test_after_a_restart_a_recorded_stall_is_retried_at_once(world: World) -> None:
    # Given a stall recorded by a process that stopped, and the event readable since
    _, poisoned, good = await world.rule_with_a_poisoned_change()
    await world.runner.catch_up()
    await world.restore(poisoned, good)
    # When a new process catches up (its clock has not moved)
    restarted = world.new_runner()
    await restarted.catch_up()
    # Then it applied the event and closed the record
    assert await restarted.stalled() == []
    assert await restarted.checkpoint("alert_rules") == await world.store.last_position()


async def test_events_fed_from_the_domain_events_topic_stall_the_same_way(world: World) -> None:
    """``apply`` is how the Kafka feed hands events over; it must not be stopped by one either."""
    # Given a poisoned rule change and a device after it, fed as the topic would feed them
    _, poisoned, _ = await world.rule_with_a_poisoned_change()
    await world.devices.register(RegisterDevice("after-2", device_type="th"))
    fed = await world.store.read_all(0, 100)
    # When they are applied
    reached = await world.runner.apply(fed)
    # Then the registry has everything, the rules projection stalled before the poisoned event,
    # and the position read-your-writes waits on is not held back by it
    assert await world.registry.get("after-2") is not None
    assert [s.position for s in await world.runner.stalled()] == [poisoned]
    assert reached == await world.store.last_position()

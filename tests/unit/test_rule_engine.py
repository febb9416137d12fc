"""The rule engine over fakes: given rules and readings, which alerts are raised and resolved.

The read model here is folded from the fake event store, so "restart" means a new engine that
loads what the old one stored. Time is the readings' timestamps and a fake clock: no sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from iot_platform.application.alerts.commands import ChangeRule, CreateRule, DeleteRule, ResolveAlert
from iot_platform.application.alerts.engine import RuleEngine
from iot_platform.application.alerts.handlers import AlertHandler, RuleHandler
from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.application.alerts.views import AlertSearch, AlertView, DevicePresence, RuleView
from iot_platform.application.realtime import AlertFilter, LiveFeed
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.application.telemetry.model import NS_PER_SECOND, Reading
from iot_platform.application.telemetry.ports import DeviceInfo
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.alerts import (
    Alert,
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    AlertRule,
    AlertRuleChanged,
    AlertRuleCreated,
    AlertRuleDeleted,
    AlertStatus,
    Condition,
    DeviceSelector,
    Operator,
    RuleDefinition,
)
from iot_platform.domain.devices import DeviceStatus
from tests.unit.fakes import InMemoryEventStore

pytestmark = pytest.mark.asyncio

T0 = 1_800_000_000.0
HOT = RuleDefinition("hot", DeviceSelector("sensor-*"), Condition("temperature", Operator.GT, 30.0))


class FoldedReadModel:
    """Rules and alerts as the projections would show them, folded from the fake store."""

    def __init__(self, store: InMemoryEventStore, presence: Iterable[DevicePresence] = ()) -> None:
        self._store = store
        self._presence = list(presence)

    async def rules(self, *, include_disabled: bool = True) -> list[RuleView]:
        rules: dict[str, RuleView] = {}
        for r in self._store.events:
            e = r.event
            if isinstance(e, AlertRuleCreated | AlertRuleChanged):
                rules[r.aggregate_id] = RuleView(r.aggregate_id, e.definition, r.version, e.occurred_at, e.occurred_at)
            elif isinstance(e, AlertRuleDeleted):
                rules.pop(r.aggregate_id, None)
        return list(rules.values())

    async def rule(self, rule_id: str) -> RuleView | None:
        return next((r for r in await self.rules() if r.rule_id == rule_id), None)

    async def alerts(self, search: AlertSearch) -> list[AlertView]:
        alerts: dict[str, AlertView] = {}
        for r in self._store.events:
            e = r.event
            if isinstance(e, AlertRaised):
                alerts[r.aggregate_id] = AlertView(
                    r.aggregate_id, e.rule_id, e.rule_name, e.device_id, e.metric, e.severity,
                    AlertStatus.RAISED, e.value, e.message, e.raised_at)
            elif isinstance(e, AlertAcknowledged):
                alerts[r.aggregate_id] = replace(alerts[r.aggregate_id], status=AlertStatus.ACKNOWLEDGED)
            elif isinstance(e, AlertResolved):
                alerts[r.aggregate_id] = replace(alerts[r.aggregate_id], status=AlertStatus.RESOLVED)
        return list(alerts.values())

    async def alert(self, alert_id: str) -> AlertView | None:
        return next((a for a in await self.alerts(AlertSearch()) if a.alert_id == alert_id), None)

    async def open_alerts(self) -> list[AlertView]:
        return [a for a in await self.alerts(AlertSearch()) if a.status is not AlertStatus.RESOLVED]

    async def presence(self) -> list[DevicePresence]:
        return self._presence


class Directory:
    def __init__(self, tags: dict[str, dict[str, str]] | None = None) -> None:
        self.tags = tags or {}
        self.asked = 0

    async def lookup(self, device_ids: Iterable[str]) -> dict[str, DeviceInfo]:
        self.asked += 1
        return {d: DeviceInfo(DeviceStatus.ACTIVE, "th", self.tags.get(d, {})) for d in device_ids}

    def forget(self, device_id: str) -> None: ...

    def activated(self, device_id: str, info: DeviceInfo) -> None: ...


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


class Platform:
    """The alerting use cases wired as the composition root wires them, over one fake store."""

    def __init__(self, store: InMemoryEventStore | None = None, *, clock: Clock | None = None,
                 directory: Directory | None = None, presence: Iterable[DevicePresence] = (),
                 max_states: int = 100_000) -> None:
        self.store = store or InMemoryEventStore()
        self.clock = clock or Clock()
        self.read_model = FoldedReadModel(self.store, presence)
        self.rules = RuleHandler(EventSourcedRepository(self.store, AlertRule, 0))
        self.alerts = AlertHandler(EventSourcedRepository(self.store, Alert, 0))
        self.engine = RuleEngine(self.alerts, self.read_model, directory or Directory(), self.clock,
                                 max_states=max_states)
        self.notices: list[AlertNotice] = []
        self.rules.listeners.append(self.engine.rule_changed)
        self.alerts.listeners += [self.engine.alert_changed, self.notices.append]

    async def rule(self, definition: RuleDefinition = HOT, rule_id: str = "r1") -> str:
        await self.rules.create(CreateRule(rule_id, definition))
        return rule_id

    async def send(self, device_id: str, at: float, **metrics: float) -> None:
        await self.engine.handle([Reading(device_id, int(at * NS_PER_SECOND), metrics, device_type="th")])

    def kinds(self) -> list[tuple[str, str]]:
        return [(n.kind, n.device_id) for n in self.notices]

    async def open(self) -> list[AlertView]:
        return await self.read_model.open_alerts()


async def test_a_reading_over_threshold_raises_one_alert_and_more_of_them_raise_no_more() -> None:
    given = Platform()
    await given.rule()
    await given.engine.load()
    await given.send("sensor-1", T0, temperature=35)
    await given.send("sensor-1", T0 + 1, temperature=36)
    assert given.kinds() == [("raised", "sensor-1")]
    [alert] = await given.open()
    assert (alert.rule_id, alert.value, alert.severity.value) == ("r1", 35.0, "warning")
    assert alert.raised_at == datetime.fromtimestamp(T0, UTC)


async def test_each_device_gets_its_own_alert_and_unmatched_devices_none() -> None:
    given = Platform()
    await given.rule()
    await given.engine.load()
    await given.send("sensor-1", T0, temperature=35)
    await given.send("sensor-2", T0, temperature=35)
    await given.send("pump-1", T0, temperature=99)
    assert sorted(a.device_id for a in await given.open()) == ["sensor-1", "sensor-2"]


async def test_the_alert_resolves_itself_once_the_condition_has_cleared_for_the_hold() -> None:
    given = Platform()
    await given.rule(replace(HOT, duration_seconds=60))
    await given.engine.load()
    await given.send("sensor-1", T0, temperature=35)
    await given.send("sensor-1", T0 + 59, temperature=35)
    assert given.kinds() == []
    await given.send("sensor-1", T0 + 60, temperature=35)
    assert given.kinds() == [("raised", "sensor-1")]
    await given.send("sensor-1", T0 + 70, temperature=20)
    await given.send("sensor-1", T0 + 129, temperature=20)
    assert await given.open() != []
    await given.send("sensor-1", T0 + 130, temperature=20)
    assert given.kinds() == [("raised", "sensor-1"), ("resolved", "sensor-1")]
    assert given.notices[-1].automatic and await given.open() == []


async def test_after_resolution_a_new_breach_raises_a_new_alert() -> None:
    given = Platform()
    await given.rule()
    await given.engine.load()
    await given.send("sensor-1", T0, temperature=35)
    await given.send("sensor-1", T0 + 1, temperature=20)
    await given.send("sensor-1", T0 + 2, temperature=35)
    raised = [n.alert_id for n in given.notices if n.kind == "raised"]
    assert len(raised) == 2 and raised[0] != raised[1]


async def test_a_restarted_engine_neither_re_raises_nor_forgets_an_open_alert() -> None:
    before = Platform()
    await before.rule()
    await before.engine.load()
    await before.send("sensor-1", T0, temperature=35)
    [open_alert] = await before.open()

    after = Platform(before.store)
    await after.engine.load()
    await after.send("sensor-1", T0 + 1, temperature=36)  # redelivered or new: still the same alert
    assert after.kinds() == []
    await after.send("sensor-1", T0 + 2, temperature=20)
    assert after.kinds() == [("resolved", "sensor-1")]
    assert after.notices[0].alert_id == open_alert.alert_id


async def test_resolving_by_hand_frees_the_rule_to_raise_again() -> None:
    given = Platform()
    await given.rule()
    await given.engine.load()
    await given.send("sensor-1", T0, temperature=35)
    [alert] = await given.open()
    await given.alerts.resolve(ResolveAlert(alert.alert_id, "fixed", EventContext("alice")))
    await given.send("sensor-1", T0 + 1, temperature=35)
    [again] = await given.open()
    assert again.alert_id != alert.alert_id


async def test_deleting_a_rule_resolves_its_open_alerts() -> None:
    given = Platform()
    await given.rule()
    await given.engine.load()
    await given.send("sensor-1", T0, temperature=35)
    await given.rules.delete(DeleteRule("r1"))
    await asyncio.sleep(0)  # the resolution runs as its own task
    await asyncio.sleep(0)
    assert await given.open() == []
    await given.send("sensor-1", T0 + 1, temperature=35)
    assert await given.open() == []


async def test_no_data_is_judged_by_the_clock_and_resolved_by_the_next_reading() -> None:
    clock = Clock()
    given = Platform(clock=clock, presence=[DevicePresence("sensor-1", "th", {}, T0 - 10)])
    await given.rule(RuleDefinition("silent", DeviceSelector("sensor-*"),
                                    Condition("temperature", Operator.NO_DATA, 60.0)))
    await given.engine.load()
    clock.t = T0 + 49
    await given.engine.sweep()
    assert given.kinds() == []
    clock.t = T0 + 50  # 60 s since last seen (T0 - 10)
    await given.engine.sweep()
    assert given.kinds() == [("raised", "sensor-1")]
    assert given.notices[0].value == 60.0
    clock.t = T0 + 51
    await given.send("sensor-1", T0 + 51, temperature=20)
    assert given.kinds() == [("raised", "sensor-1"), ("resolved", "sensor-1")]


async def test_tag_selectors_ask_the_device_directory() -> None:
    directory = Directory({"sensor-1": {"site": "lobby"}})
    given = Platform(directory=directory)
    await given.rule(replace(HOT, selector=DeviceSelector(tags={"site": "lobby"})))
    await given.engine.load()
    await given.send("sensor-1", T0, temperature=35)
    await given.send("sensor-2", T0, temperature=35)
    assert given.kinds() == [("raised", "sensor-1")]
    assert directory.asked == 2


async def test_readings_are_judged_only_against_rules_whose_selector_and_metric_match() -> None:
    given = Platform()
    for i in range(100):
        await given.rule(RuleDefinition(f"r{i}", DeviceSelector(f"dev-{i}"), Condition("t", Operator.GT, 1.0)),
                         rule_id=f"r{i}")
    await given.rule(RuleDefinition("wide", DeviceSelector("dev-*"), Condition("h", Operator.GT, 1.0)),
                     rule_id="wide")
    await given.engine.load()
    await given.send("dev-7", T0, t=0.0, h=0.0, other=5.0)
    assert given.engine.evaluations == 2  # dev-7's own "t" rule and the "h" glob rule


class LaggingReadModel(FoldedReadModel):
    """Shows the rules as they were when ``freeze`` was called: a projection running behind."""

    frozen: list[RuleView] | None = None

    async def freeze(self) -> None:
        self.frozen = await super().rules()

    async def rules(self, *, include_disabled: bool = True) -> list[RuleView]:
        return list(self.frozen) if self.frozen is not None else await super().rules()


async def test_a_refresh_from_a_lagging_read_model_never_undoes_a_change_made_here() -> None:
    given = Platform()
    lagging = LaggingReadModel(given.store)
    given.engine._read_model = lagging
    await given.rule()
    await given.engine.load()
    await lagging.freeze()  # the read model still shows r1 enabled, and no r2
    await given.rules.change(ChangeRule("r1", {"enabled": False}))
    await given.rule(replace(HOT, name="warm", condition=Condition("temperature", Operator.GT, 25.0)), "r2")
    await given.engine.refresh()
    await given.send("sensor-1", T0, temperature=35)
    assert [n.rule_id for n in given.notices] == ["r2"]
    lagging.frozen = None  # caught up; then another process deletes r2
    await given.engine.refresh()
    await DeletingElsewhere(given.store).delete("r2")
    await given.engine.refresh()
    await given.send("sensor-2", T0, temperature=35)
    assert [n.rule_id for n in given.notices if n.kind == "raised"] == ["r2"]


class DeletingElsewhere:
    """Another platform process's rule handler over the same store (its listeners are not ours)."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.rules = RuleHandler(EventSourcedRepository(store, AlertRule, 0))

    async def delete(self, rule_id: str) -> None:
        await self.rules.delete(DeleteRule(rule_id))


async def test_evaluation_state_is_bounded_and_eviction_never_duplicates_an_open_alert() -> None:
    given = Platform(max_states=100)
    await given.rule()
    await given.engine.load()
    await given.send("sensor-0", T0, temperature=35)
    for i in range(1, 300):
        await given.send(f"sensor-{i}", T0, temperature=20)
    assert given.engine.states <= 100
    await given.send("sensor-0", T0 + 1, temperature=36)
    assert len(await given.open()) == 1


async def test_live_feed_drops_a_slow_subscriber_without_holding_back_the_others() -> None:
    feed = LiveFeed(buffer=3)
    slow = feed.subscribe(alerts=AlertFilter())
    critical_only = feed.subscribe(alerts=AlertFilter(frozenset({"critical"})))
    notice = AlertNotice("raised", "a", "r", "hot", "sensor-1", "t", "warning", "raised", 1.0, "m",
                         datetime.now(UTC), "rule-engine")
    for _ in range(5):
        feed.send(notice)
    assert slow.dropped and feed.dropped == 1
    assert [await slow.next() for _ in range(4)][-1] is None  # three messages, then the end
    assert critical_only.queue.empty() and not critical_only.dropped
    feed.send(replace(notice, severity="critical"))
    assert (await critical_only.next()) is not None

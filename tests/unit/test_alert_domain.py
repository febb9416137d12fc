"""Alert rules and alerts as aggregates, and how a rule judges readings (no I/O, no clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.alerts import (
    Alert,
    AlertRule,
    AlertStatus,
    Channel,
    Condition,
    DeviceSelector,
    Operator,
    RuleDefinition,
    SeriesState,
    Severity,
    Verdict,
    evaluate,
)
from iot_platform.domain.errors import AlreadyExists, InvalidTransition, InvalidValue

HOT = RuleDefinition(
    name="hot lobby",
    selector=DeviceSelector(device_pattern="sensor-*"),
    condition=Condition("temperature", Operator.GT, 30.0),
    severity=Severity.CRITICAL,
)
AT = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = EventContext(actor="alice", at=AT)
NOW = EventContext(at=AT)


def names(aggregate: AlertRule | Alert) -> list[str]:
    return [e.event_type() for e in aggregate.pending_events]


# -- rules ----------------------------------------------------------------------------------

def test_a_created_rule_can_be_changed_and_deleted_and_then_nothing_more() -> None:
    rule = AlertRule("r1")
    rule.create(HOT, ALICE)
    rule.change(replace(HOT, enabled=False), ALICE)
    rule.change(replace(HOT, enabled=False), ALICE)  # no difference: no event
    rule.delete(ALICE)
    assert names(rule) == ["AlertRuleCreated", "AlertRuleChanged", "AlertRuleDeleted"]
    assert all(e.actor == "alice" for e in rule.pending_events)
    with pytest.raises(InvalidTransition):
        rule.change(HOT, NOW)
    with pytest.raises(AlreadyExists):
        rule.create(HOT, NOW)


def test_a_rule_rehydrates_from_its_events_and_from_a_snapshot() -> None:
    rule = AlertRule("r1")
    rule.create(HOT, NOW)
    again = AlertRule.rehydrate("r1", rule.pending_events)
    assert again.definition == HOT and again.exists
    restored = AlertRule.rehydrate("r1", [], rule.snapshot())
    assert restored.definition == HOT


@pytest.mark.parametrize(
    ("condition", "field"),
    [
        (lambda: Condition("t", Operator.GT, None), "threshold"),
        (lambda: Condition("t", Operator.GT, float("nan")), "threshold"),
        (lambda: Condition("t", Operator.OUTSIDE, min=1.0), "max"),
        (lambda: Condition("t", Operator.INSIDE, min=5.0, max=1.0), "min"),
        (lambda: Condition("t", Operator.ZSCORE, 0.0), "threshold"),
        (lambda: Condition("t", Operator.NO_DATA, -1.0), "threshold"),
        (lambda: Condition("t", Operator.ZSCORE, 3.0, window=2), "window"),
        (lambda: Condition("", Operator.GT, 1.0), "metric"),
    ],
)
def test_a_condition_that_cannot_be_evaluated_is_refused_naming_the_field(condition, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidValue) as refused:
        condition()
    assert refused.value.field == field


def test_channels_that_need_an_address_are_refused_without_one() -> None:
    with pytest.raises(InvalidValue) as refused:
        RuleDefinition("x", DeviceSelector(), HOT.condition, channels=(Channel.WEBHOOK,))
    assert refused.value.field == "webhook_url"
    with pytest.raises(InvalidValue) as refused:
        RuleDefinition("x", DeviceSelector(), HOT.condition, channels=(Channel.MQTT,), mqtt_topic="a/#")
    assert refused.value.field == "mqtt_topic"


def test_selectors_match_by_glob_type_and_tags() -> None:
    selector = DeviceSelector("sensor-*", "th", {"site": "lobby"})
    assert selector.matches("sensor-1", "th", {"site": "lobby", "x": "y"})
    assert not selector.matches("pump-1", "th", {"site": "lobby"})
    assert not selector.matches("sensor-1", "gps", {"site": "lobby"})
    assert not selector.matches("sensor-1", "th", {"site": "roof"})
    assert DeviceSelector("sensor-1").exact_device == "sensor-1"
    assert DeviceSelector("sensor-?").exact_device is None
    assert DeviceSelector().matches("anything", "any", {})


# -- alerts ---------------------------------------------------------------------------------

def raised(alert_id: str = "a1") -> Alert:
    alert = Alert(alert_id)
    alert.raise_(rule_id="r1", rule_name="hot", device_id="sensor-1", metric="temperature",
                 severity=Severity.CRITICAL, value=35.0, message="hot",
                 raised_at=AT, context=NOW)
    return alert


def test_an_alert_is_raised_acknowledged_then_resolved() -> None:
    alert = raised()
    alert.acknowledge("on it", ALICE)
    alert.resolve("fan fixed", ALICE)
    assert names(alert) == ["AlertRaised", "AlertAcknowledged", "AlertResolved"]
    assert alert.status is AlertStatus.RESOLVED
    assert Alert.rehydrate("a1", alert.pending_events).status is AlertStatus.RESOLVED


def test_an_alert_may_be_resolved_without_acknowledgement_but_not_twice() -> None:
    alert = raised()
    alert.resolve(None, EventContext("rule-engine", at=AT), automatic=True)
    with pytest.raises(InvalidTransition):
        alert.resolve(None, ALICE)
    with pytest.raises(InvalidTransition):
        alert.acknowledge(None, ALICE)


def test_an_acknowledged_alert_cannot_be_acknowledged_again_nor_raised_twice() -> None:
    alert = raised()
    alert.acknowledge(None, ALICE)
    with pytest.raises(InvalidTransition):
        alert.acknowledge(None, ALICE)
    with pytest.raises(AlreadyExists):
        alert.raise_(rule_id="r1", rule_name="hot", device_id="d", metric="m",
                     severity=Severity.INFO, value=None, message="", raised_at=AT, context=NOW)


# -- judging readings ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("condition", "value", "expected"),
    [
        (Condition("t", Operator.GT, 30.0), 30.5, True),
        (Condition("t", Operator.GT, 30.0), 30.0, False),
        (Condition("t", Operator.GE, 30.0), 30.0, True),
        (Condition("t", Operator.LT, 0.0), -1.0, True),
        (Condition("t", Operator.LE, 0.0), 0.5, False),
        (Condition("t", Operator.EQ, 1.0), 1.0, True),
        (Condition("t", Operator.NE, 1.0), 1.0, False),
        (Condition("t", Operator.OUTSIDE, min=10.0, max=20.0), 25.0, True),
        (Condition("t", Operator.OUTSIDE, min=10.0, max=20.0), 20.0, False),
        (Condition("t", Operator.INSIDE, min=10.0, max=20.0), 10.0, True),
        (Condition("t", Operator.INSIDE, min=10.0, max=20.0), 9.0, False),
    ],
)
def test_threshold_and_range_conditions(condition: Condition, value: float, expected: bool) -> None:
    verdict = evaluate(condition, 0.0, SeriesState(), value, 100.0)
    assert (verdict is Verdict.RAISE) is expected


def test_rate_of_change_compares_consecutive_readings_per_second() -> None:
    condition, state = Condition("t", Operator.RATE_OF_CHANGE, 2.0), SeriesState()
    assert evaluate(condition, 0, state, 10.0, 0.0) is Verdict.NOTHING  # nothing to compare yet
    assert evaluate(condition, 0, state, 14.0, 2.0) is Verdict.NOTHING  # 2/s is not above 2/s
    assert evaluate(condition, 0, state, 4.0, 4.0) is Verdict.RAISE  # -5/s


def test_zscore_judges_against_the_previous_window_only() -> None:
    condition, state = Condition("t", Operator.ZSCORE, 3.0, window=5), SeriesState()
    for i, value in enumerate([10.0, 11.0, 9.0, 10.0]):
        assert evaluate(condition, 0, state, value, float(i)) is Verdict.NOTHING
    assert evaluate(condition, 0, state, 50.0, 4.0) is Verdict.NOTHING  # 4 samples: too few
    assert len(state.window) == 5
    state = SeriesState()
    for i, value in enumerate([10.0, 11.0, 9.0, 10.0, 10.0]):
        evaluate(condition, 0, state, value, float(i))
    assert evaluate(condition, 0, state, 50.0, 5.0) is Verdict.RAISE


def test_the_condition_must_hold_for_the_hold_duration_before_raising_and_clear_as_long_to_resolve() -> None:
    condition, state = Condition("t", Operator.GT, 30.0), SeriesState()
    assert evaluate(condition, 60, state, 35.0, 1000.0) is Verdict.NOTHING
    assert evaluate(condition, 60, state, 36.0, 1059.0) is Verdict.NOTHING
    assert evaluate(condition, 60, state, 36.0, 1060.0) is Verdict.RAISE
    state.open_alert = "a1"
    assert evaluate(condition, 60, state, 37.0, 1100.0) is Verdict.NOTHING  # already open
    assert evaluate(condition, 60, state, 20.0, 1110.0) is Verdict.NOTHING
    assert evaluate(condition, 60, state, 35.0, 1120.0) is Verdict.NOTHING  # flapped back: hold again
    assert evaluate(condition, 60, state, 20.0, 1130.0) is Verdict.NOTHING
    assert evaluate(condition, 60, state, 20.0, 1190.0) is Verdict.RESOLVE


def test_a_dip_within_the_hold_restarts_it() -> None:
    condition, state = Condition("t", Operator.GT, 30.0), SeriesState()
    evaluate(condition, 60, state, 35.0, 0.0)
    evaluate(condition, 60, state, 20.0, 30.0)
    assert evaluate(condition, 60, state, 35.0, 61.0) is Verdict.NOTHING
    assert evaluate(condition, 60, state, 35.0, 121.0) is Verdict.RAISE


def test_a_reading_older_than_one_already_judged_changes_nothing() -> None:
    condition, state = Condition("t", Operator.GT, 30.0), SeriesState()
    assert evaluate(condition, 0, state, 20.0, 10.0) is Verdict.NOTHING
    assert evaluate(condition, 0, state, 35.0, 9.0) is Verdict.NOTHING  # late: the newest says cool


def test_rule_and_alert_events_occur_at_the_time_the_context_gives() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    rule = AlertRule("r-1")
    rule.create(HOT, EventContext(actor="alice", at=at))
    assert [e.occurred_at for e in rule.pending_events] == [at]

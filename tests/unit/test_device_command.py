"""The DeviceCommand aggregate: given its past events, when a command is decided, then these events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from iot_platform.domain.commands import (
    CommandDelivered,
    CommandExpired,
    CommandFailed,
    CommandIssued,
    CommandSent,
    CommandStatus,
    CommandSucceeded,
    DeviceCommand,
)
from iot_platform.domain.errors import AlreadyExists, InvalidTransition, InvalidValue
from iot_platform.domain.events import DomainEvent
from tests.unit.command_fakes import T0

TTL = timedelta(minutes=10)
LATER = T0 + timedelta(minutes=1)
AFTER_EXPIRY = T0 + TTL


def issued() -> CommandIssued:
    return CommandIssued(aggregate_id="c1", occurred_at=T0, device_id="d1", command="reboot",
                         parameters={"delay": 5}, ttl_seconds=TTL.total_seconds(), expires_at=T0 + TTL)


def sent(attempt: int = 1) -> CommandSent:
    return CommandSent(aggregate_id="c1", occurred_at=T0, channel="mqtt", attempt=attempt)


def delivered() -> CommandDelivered:
    return CommandDelivered(aggregate_id="c1", occurred_at=T0)


def succeeded(result: Any = None) -> CommandSucceeded:
    return CommandSucceeded(aggregate_id="c1", occurred_at=T0, result=result)


def given(*events: DomainEvent) -> DeviceCommand:
    return DeviceCommand.rehydrate("c1", events)


def decided(command: DeviceCommand) -> list[tuple[str, dict[str, Any]]]:
    """The new events, without the metadata every event carries."""
    base = {"aggregate_id", "occurred_at", "actor", "correlation_id"}
    return [(type(e).__name__, {k: v for k, v in e.__dict__.items() if k not in base})
            for e in command.pending_events]


def test_issuing_sets_the_expiry_from_the_given_time_and_ttl() -> None:
    command = given()
    command.issue(device_id="d1", command="set_sampling_rate", parameters={"hz": 2}, ttl=TTL, now=T0)
    assert decided(command) == [("CommandIssued", {
        "device_id": "d1", "command": "set_sampling_rate", "parameters": {"hz": 2},
        "ttl_seconds": 600.0, "expires_at": T0 + TTL})]
    assert command.pending_events[0].occurred_at == T0
    assert command.status is CommandStatus.ISSUED


@pytest.mark.parametrize(("name", "ttl", "field"), [
    ("reboot now", TTL, "command"), ("", TTL, "command"), ("x" * 101, TTL, "command"),
    ("reboot", timedelta(0), "ttl_seconds"), ("reboot", timedelta(seconds=-1), "ttl_seconds"),
])
def test_a_bad_name_or_ttl_is_refused_naming_the_field(name: str, ttl: timedelta, field: str) -> None:
    command = given()
    with pytest.raises(InvalidValue) as bad:
        command.issue(device_id="d1", command=name, parameters={}, ttl=ttl, now=T0)
    assert bad.value.field == field and not command.pending_events


def test_a_command_is_issued_once() -> None:
    with pytest.raises(AlreadyExists):
        given(issued()).issue(device_id="d1", command="reboot", parameters={}, ttl=TTL, now=T0)


def test_sending_counts_attempts() -> None:
    command = given(issued(), sent())
    command.mark_sent("mqtt", LATER)
    assert decided(command) == [("CommandSent", {"channel": "mqtt", "attempt": 2})]
    assert command.status is CommandStatus.SENT


def test_the_happy_path_issued_sent_delivered_succeeded() -> None:
    command = given(issued(), sent())
    command.acknowledge(CommandStatus.DELIVERED, LATER)
    command.acknowledge(CommandStatus.SUCCEEDED, LATER, result={"rate": 2})
    assert decided(command) == [("CommandDelivered", {}), ("CommandSucceeded", {"result": {"rate": 2}})]
    assert command.status is CommandStatus.SUCCEEDED and command.result == {"rate": 2}


def test_succeeded_may_come_straight_after_sent() -> None:
    command = given(issued(), sent())
    command.acknowledge(CommandStatus.SUCCEEDED, LATER, result="ok")
    assert decided(command) == [("CommandSucceeded", {"result": "ok"})]


def test_a_device_may_answer_before_the_send_is_recorded_and_the_late_record_is_moot() -> None:
    command = given(issued())
    command.acknowledge(CommandStatus.DELIVERED, LATER)
    command.mark_sent("mqtt", LATER)
    assert decided(command) == [("CommandDelivered", {})]


def test_failure_keeps_what_the_device_said() -> None:
    command = given(issued(), sent(), delivered())
    command.acknowledge(CommandStatus.FAILED, LATER, result={"error": "rate out of range"})
    assert decided(command) == [("CommandFailed", {"result": {"error": "rate out of range"}})]
    assert command.status is CommandStatus.FAILED


def test_the_same_final_acknowledgement_again_records_nothing() -> None:
    command = given(issued(), sent(), succeeded("ok"))
    command.acknowledge(CommandStatus.SUCCEEDED, LATER, result="ok")
    assert decided(command) == []


@pytest.mark.parametrize("answer", [CommandStatus.FAILED, CommandStatus.DELIVERED])
def test_a_different_answer_to_a_finished_command_is_refused(answer: CommandStatus) -> None:
    command = given(issued(), sent(), succeeded("ok"))
    with pytest.raises(InvalidTransition, match="already succeeded"):
        command.acknowledge(answer, LATER)


def test_an_acknowledgement_after_the_expiry_time_is_refused_even_before_the_sweep() -> None:
    command = given(issued(), sent())
    with pytest.raises(InvalidTransition, match="expired"):
        command.acknowledge(CommandStatus.SUCCEEDED, AFTER_EXPIRY)
    assert command.pending_events == ()


def test_an_acknowledgement_of_an_expired_command_is_refused() -> None:
    expired = CommandExpired(aggregate_id="c1", occurred_at=AFTER_EXPIRY, status_at_expiry="sent")
    with pytest.raises(InvalidTransition, match="expired"):
        given(issued(), sent(), expired).acknowledge(CommandStatus.DELIVERED, LATER)


def test_only_device_answers_are_acknowledgements() -> None:
    with pytest.raises(InvalidValue):
        given(issued()).acknowledge(CommandStatus.EXPIRED, LATER)


def test_expiry_happens_only_once_the_ttl_has_run_out() -> None:
    command = given(issued(), sent(), delivered())
    assert not command.is_due(AFTER_EXPIRY - timedelta(microseconds=1))
    with pytest.raises(InvalidTransition, match="not reached"):
        command.expire(AFTER_EXPIRY - timedelta(microseconds=1))
    command.expire(AFTER_EXPIRY)
    assert decided(command) == [("CommandExpired", {"status_at_expiry": "delivered"})]
    assert command.status is CommandStatus.EXPIRED and not command.is_due(AFTER_EXPIRY)


@pytest.mark.parametrize("final", [succeeded(), CommandFailed(aggregate_id="c1", occurred_at=T0)])
def test_a_finished_command_neither_expires_nor_is_sent(final: DomainEvent) -> None:
    command = given(issued(), sent(), final)
    assert not command.is_due(AFTER_EXPIRY) and not command.deliverable(LATER)
    with pytest.raises(InvalidTransition):
        command.expire(AFTER_EXPIRY)
    with pytest.raises(InvalidTransition):
        command.mark_sent("mqtt", LATER)


def test_an_expired_command_is_not_sent() -> None:
    command = given(issued())
    assert command.deliverable(LATER) and not command.deliverable(AFTER_EXPIRY)
    with pytest.raises(InvalidTransition, match="expired"):
        command.mark_sent("mqtt", AFTER_EXPIRY)


def test_a_never_issued_command_refuses_everything() -> None:
    for decide in (lambda c: c.mark_sent("mqtt", T0), lambda c: c.expire(T0),
                   lambda c: c.acknowledge(CommandStatus.DELIVERED, T0)):
        with pytest.raises(InvalidTransition, match="never issued"):
            decide(given())


def test_a_snapshot_restores_the_same_state() -> None:
    command = given(issued(), sent(), delivered(), succeeded({"a": 1}))
    restored = DeviceCommand.rehydrate("c1", [], command.snapshot())
    assert restored._state() == command._state() and restored.version == 4

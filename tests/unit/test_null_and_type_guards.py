"""Values that cannot be stored and read back are refused where they enter, naming the field.

Why: a rule PATCH with ``"enabled": null`` was accepted and stored as an event no release could
read. Three guards now stand in line: the REST schema (422 before any
command), the domain's value objects (``InvalidValue``), and the serializer, which refuses an
event that would not read back equal (``EventNotStorable``) before it reaches the store.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from iot_platform.application.alerts.commands import ChangeRule, CreateRule
from iot_platform.application.alerts.handlers import RuleHandler, apply_changes, minimal_definition
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.alerts import AlertRule, RuleDefinition
from iot_platform.domain.alerts.events import AlertRuleChanged
from iot_platform.domain.commands import DeviceCommand
from iot_platform.domain.commands.events import CommandIssued
from iot_platform.domain.devices import DeviceMetadata, Location
from iot_platform.domain.errors import InvalidValue
from iot_platform.infrastructure.eventstore.serialization import EventNotStorable, build_event_serializer
from iot_platform.presentation.rest.schemas.alerts import RuleCreate, RuleUpdate
from iot_platform.presentation.rest.schemas.devices import DeviceUpdate
from tests.unit.fakes import InMemoryEventStore

RULE = minimal_definition({"metric": "t", "op": ">", "threshold": 1})


@pytest.mark.parametrize("field", ["enabled", "severity", "name", "duration_seconds",
                                   "notification_channels", "metric", "op"])
def test_a_rule_patch_refuses_null_for_a_field_that_has_no_nothing_value(field: str) -> None:
    # Given a PATCH body with the field sent as null, When it is parsed, Then it names the field
    with pytest.raises(ValidationError) as refused:
        RuleUpdate.model_validate({field: None})
    assert refused.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("field", ["device_pattern", "device_type", "threshold", "min", "max", "window",
                                   "webhook_url", "mqtt_topic", "tags", "expected_version"])
def test_a_rule_patch_takes_null_where_null_means_none(field: str) -> None:
    assert RuleUpdate.model_validate({field: None}).model_dump(exclude_unset=True) == {field: None}


def test_the_openapi_schema_says_which_fields_cannot_be_null() -> None:
    """Clients and schemathesis read the document: no null, no misleading default."""
    properties = RuleUpdate.model_json_schema()["properties"]
    assert properties["enabled"] == {"description": "default true", "title": "Enabled", "type": "boolean"}
    assert {"type": "null"} in properties["threshold"]["anyOf"]
    assert "default" not in RuleCreate.model_json_schema()["properties"]["severity"]


@pytest.mark.parametrize("field", ["name", "tags", "metadata"])
def test_a_device_patch_refuses_null_except_for_location(field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        DeviceUpdate.model_validate({field: None})
    assert refused.value.errors()[0]["loc"] == (field,)
    assert DeviceUpdate.model_validate({"location": None}).model_fields_set == {"location"}


@pytest.mark.parametrize(("changes", "field"), [
    ({"enabled": None}, "enabled"),
    ({"enabled": "yes"}, "enabled"),
    ({"severity": None}, "severity"),
    ({"severity": "loud"}, "severity"),
    ({"name": None}, "name"),
    ({"name": "a\x00b"}, "name"),
    ({"duration_seconds": None}, "duration_seconds"),
    ({"duration_seconds": True}, "duration_seconds"),
    ({"notification_channels": None}, "notification_channels"),
    ({"notification_channels": ["pigeon"]}, "notification_channels"),
    ({"metric": None}, "metric"),
    ({"op": None}, "op"),
    ({"threshold": math.nan}, "threshold"),
    ({"threshold": "3"}, "threshold"),
    ({"tags": {"k": None}}, "tags.k"),
    ({"webhook_url": 5}, "webhook_url"),
])
def test_a_rule_change_from_any_path_refuses_what_cannot_round_trip(changes: dict[str, Any], field: str) -> None:
    # Given a rule, When a change the REST schema would have refused comes by another path
    # (the CLI, a test, a future adapter), Then the domain refuses it, naming the field
    with pytest.raises(InvalidValue) as refused:
        apply_changes(RULE, changes)
    assert refused.value.field == field


@pytest.mark.asyncio
async def test_a_refused_rule_change_appends_nothing() -> None:
    store = InMemoryEventStore()
    rules = RuleHandler(EventSourcedRepository(store, AlertRule, 0))
    await rules.create(CreateRule("r", RULE))
    with pytest.raises(InvalidValue):
        await rules.change(ChangeRule("r", {"enabled": None}))
    assert len(store.events) == 1


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Location(None, 0), "location.latitude"),  # type: ignore[arg-type]
    (lambda: Location(0, 0, address="\ud800"), "location.address"),
    (lambda: DeviceMetadata(manufacturer=5), "metadata.manufacturer"),  # type: ignore[arg-type]
    (lambda: DeviceMetadata(extra={"x": math.inf}), "metadata"),
    (lambda: DeviceMetadata(extra={"x": {"y": [1, {"z": b"raw"}]}}), "metadata"),
])
def test_device_values_refuse_what_json_cannot_carry(make: Any, field: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        make()
    assert refused.value.field == field


def test_command_parameters_nested_past_the_limit_or_with_nan_are_refused() -> None:
    from datetime import UTC, datetime, timedelta

    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    for parameters in ({"deep": deep}, {"rate": math.nan}):
        with pytest.raises(InvalidValue) as refused:
            DeviceCommand("c").issue(device_id="d", command="reboot", parameters=parameters,
                                     ttl=timedelta(seconds=5), now=datetime.now(UTC))
        assert refused.value.field == "parameters"


def test_the_serializer_refuses_an_event_that_would_not_read_back() -> None:
    """The last guard: whatever the domain misses costs one refused request, not the store."""
    serializer = build_event_serializer()
    from datetime import UTC, datetime

    unreadable = AlertRuleChanged(aggregate_id="r", occurred_at=datetime.now(UTC),
                                  definition=RuleDefinition.__new__(RuleDefinition))
    object.__setattr__(unreadable.definition, "__dict__", {**RULE.__dict__, "enabled": None})
    with pytest.raises(EventNotStorable) as refused:
        serializer.serialize(unreadable)
    assert refused.value.field == "enabled"
    nan = CommandIssued(aggregate_id="c", occurred_at=datetime.now(UTC), device_id="d", command="x",
                        parameters={"v": math.nan}, ttl_seconds=1, expires_at=datetime.now(UTC))
    with pytest.raises(EventNotStorable):
        serializer.serialize(nan)


def test_alert_notes_that_a_read_model_could_not_hold_are_refused() -> None:
    """PostgreSQL refuses NUL in text: such a note would stall the alerts projection."""
    from iot_platform.domain.aggregate import EventContext
    from iot_platform.domain.alerts import Alert, Severity

    alert = Alert("a")
    alert.raise_(rule_id="r", rule_name="n", device_id="d", metric="t", severity=Severity.INFO, value=1.0,
                 message="m", raised_at=datetime_now(), context=EventContext(at=datetime_now()))
    with pytest.raises(InvalidValue) as refused:
        alert.acknowledge("a\x00b", EventContext(at=datetime_now()))
    assert refused.value.field == "note"
    with pytest.raises(InvalidValue) as refused:
        alert.resolve("\x00", EventContext(at=datetime_now()))
    assert refused.value.field == "resolution"


def datetime_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)

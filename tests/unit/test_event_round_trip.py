"""Every event the domain can make reads back equal to itself (a property, with hypothesis).

Why: an event that cannot be read back poisons the store for good (issue 12, defect 1: a rule
PATCH with ``"enabled": null`` made an ``AlertRuleChanged`` no release could read). The events
are generated from the registries (``DEVICE_EVENTS``, ``ALERT_EVENTS``, ``COMMAND_EVENTS``), field
by field from their type hints, so a new event type is covered without touching this file; a
field of a type this file cannot generate fails the test by name.

Value objects (a rule definition, a location, device metadata...) are drawn loosely, ``None``
and all, and kept only when the domain accepts them: the property is "whatever the domain
accepts round-trips", which is what failed before.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_platform.domain.alerts import Channel, Condition, DeviceSelector, Operator, RuleDefinition, Severity
from iot_platform.domain.alerts.events import ALERT_EVENTS, AlertRuleChanged
from iot_platform.domain.commands.events import COMMAND_EVENTS
from iot_platform.domain.devices import DeviceMetadata, Location
from iot_platform.domain.devices.events import DEVICE_EVENTS
from iot_platform.domain.errors import InvalidValue
from iot_platform.domain.events import DomainEvent
from iot_platform.domain.lorawan import Activation, LoRaWANProfile
from iot_platform.infrastructure.eventstore.serialization import build_event_serializer

AT = datetime(2026, 1, 1, tzinfo=UTC)
SERIALIZER = build_event_serializer()
EVENT_TYPES = [*DEVICE_EVENTS, *ALERT_EVENTS, *COMMAND_EVENTS]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
"""Anything a JSON body can carry, NaN included: the domain decides what it keeps."""


def _loose(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy``, or now and then ``None`` or a value of the wrong type."""
    return st.integers(0, 19).flatmap(
        lambda i: st.none() if i == 0 else json_scalars if i == 1 else strategy
    )


def _accepted(make: Any, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``make(**drawn)`` for the drawn fields the domain accepts (InvalidValue: drawn again)."""

    def build(drawn: dict[str, Any]) -> Any:
        try:
            return make(**drawn)
        except InvalidValue:
            return None

    return st.fixed_dictionaries(fields).map(build).filter(lambda v: v is not None)


finite = st.floats(allow_nan=False, allow_infinity=False)
moments = st.datetimes(timezones=st.just(UTC))

selectors = _accepted(
    DeviceSelector,
    device_pattern=_loose(st.none() | st.text(min_size=1)),
    device_type=_loose(st.none() | st.text(min_size=1)),
    tags=_loose(st.dictionaries(st.text(), st.text(), max_size=3)),
)
conditions = _accepted(
    Condition,
    metric=_loose(st.text(min_size=1, max_size=100)),
    op=_loose(st.sampled_from(Operator)),
    threshold=_loose(st.floats(min_value=0.001)),
    min=_loose(st.floats(max_value=0)),
    max=_loose(st.floats(min_value=0)),
    window=_loose(st.none() | st.integers(5, 10_000)),
)
definitions = _accepted(
    RuleDefinition,
    name=_loose(st.text(min_size=1, max_size=200)),
    selector=selectors,
    condition=conditions,
    duration_seconds=_loose(st.floats(0, 604_800)),
    severity=_loose(st.sampled_from(Severity)),
    channels=_loose(st.lists(st.sampled_from([Channel.SSE, Channel.WEBSOCKET, Channel.KAFKA]),
                             max_size=3).map(tuple)),
    webhook_url=_loose(st.none() | st.text()),
    mqtt_topic=_loose(st.none() | st.text()),
    enabled=_loose(st.booleans()),
)
locations = _accepted(
    Location,
    latitude=_loose(st.floats(-90, 90)),
    longitude=_loose(st.floats(-180, 180)),
    altitude=_loose(st.none() | st.floats(-11_000, 100_000)),
    address=_loose(st.none() | st.text()),
)
metadata = _accepted(
    DeviceMetadata,
    manufacturer=_loose(st.none() | st.text()),
    model=_loose(st.none() | st.text()),
    firmware_version=_loose(st.none() | st.text()),
    extra=_loose(st.dictionaries(st.text(), json_values, max_size=4)),
)
hex_digits = st.text("0123456789abcdef", min_size=16, max_size=16)
profiles = _accepted(
    LoRaWANProfile,
    dev_eui=hex_digits,
    activation=st.sampled_from(Activation),
    codec=st.text(min_size=1),
    join_eui=st.none() | hex_digits,
    dev_addr=st.none() | st.text("0123456789abcdef", min_size=8, max_size=8),
)

VALUE_TYPES: dict[Any, st.SearchStrategy[Any]] = {
    RuleDefinition: definitions,
    Location: locations,
    DeviceMetadata: metadata,
    LoRaWANProfile: profiles,
    str: st.text(),
    float: finite,
    int: st.integers(),
    bool: st.booleans(),
    datetime: moments,
    Any: json_values.filter(lambda v: _json_accepted(v)),
}


def _json_accepted(value: Any) -> bool:
    from iot_platform.domain.validation import require_json

    try:
        require_json(value, "value")
    except InvalidValue:
        return False
    return True


def strategy_for(hint: Any, where: str) -> st.SearchStrategy[Any]:
    if hint in VALUE_TYPES:
        return VALUE_TYPES[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(a, where) for a in args])
    if hint is type(None):
        return st.none()
    if origin in (dict, Mapping):
        return st.dictionaries(strategy_for(args[0], where), strategy_for(args[1], where), max_size=4)
    if origin in (list, tuple):
        return st.lists(strategy_for(args[0], where), max_size=4).map(origin)
    raise AssertionError(f"{where}: no strategy for {hint!r}; add the domain's own to VALUE_TYPES")


def events_of(cls: type[DomainEvent]) -> st.SearchStrategy[DomainEvent]:
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: strategy_for(hints[f.name], f"{cls.__name__}.{f.name}")
        for f in dataclasses.fields(cls)
    }
    return st.builds(cls, **fields)


@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda c: c.event_type())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_every_event_the_domain_accepts_reads_back_equal(event_type: type[DomainEvent], data: st.DataObject) -> None:
    # Given an event of this type, made of values the domain accepts
    event = data.draw(events_of(event_type))
    # When it is written as it would be stored, and read back
    stored = SERIALIZER.serialize(event)
    back = SERIALIZER.deserialize(event.event_type(), event.schema_version, stored)
    # Then it is the same event
    assert back == event


def test_every_registered_event_type_is_generated() -> None:
    """The registries are what the serializer knows: no event type escapes the property."""
    assert {c.event_type() for c in EVENT_TYPES} == set(SERIALIZER._types)


@pytest.mark.parametrize("bound", [2**53 + 1, -(2**53) - 3])
def test_a_rule_bound_beyond_the_exact_doubles_is_kept_as_the_nearest_one_and_reads_back(bound: int) -> None:
    # Given a range rule whose bound is an int no double holds exactly
    definition = RuleDefinition(
        name="huge", selector=DeviceSelector(),
        condition=Condition("t", Operator.INSIDE, min=min(bound, 0), max=max(bound, 0)),
    )
    event = AlertRuleChanged(aggregate_id="r1", occurred_at=AT, definition=definition)
    # When it is stored and read back
    back = SERIALIZER.deserialize(event.event_type(), event.schema_version, SERIALIZER.serialize(event))
    # Then it is the same event, its bound the nearest double
    assert back == event
    assert float(bound) in (back.definition.condition.min, back.definition.condition.max)


def test_a_rule_bound_beyond_the_double_range_is_refused_naming_it() -> None:
    with pytest.raises(InvalidValue) as refused:
        Condition("t", Operator.GT, threshold=10**400)
    assert refused.value.field == "threshold"

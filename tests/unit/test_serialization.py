"""Events survive JSON; older schema versions are upcast on the way in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from iot_platform.domain.devices import (
    DeviceMetadata,
    DeviceRegistered,
    DeviceStatus,
    DeviceSuspended,
    Location,
    Protocol,
)
from iot_platform.domain.devices.events import DEVICE_EVENTS
from iot_platform.domain.events import DomainEvent
from iot_platform.infrastructure.eventstore.serialization import (
    EventSerializer,
    UnknownEventType,
    build_event_serializer,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def test_every_device_event_round_trips_through_json() -> None:
    serializer = build_event_serializer()
    registered = DeviceRegistered(
        aggregate_id="sensor-001",
        occurred_at=AT,
        name="Lobby",
        device_type="th",
        protocol=Protocol.COAP,
        tags={"site": "sf"},
        location=Location(37.7, -122.4, 10.0, "SF"),
        metadata=DeviceMetadata(manufacturer="ACME", extra={"batch": 7}),
    )
    suspended = DeviceSuspended(aggregate_id="sensor-001", occurred_at=AT, previous_status=DeviceStatus.PROVISIONED)
    for event in (registered, suspended):
        data = serializer.serialize(event)
        assert serializer.deserialize(event.event_type(), event.schema_version, data) == event
    assert {cls.event_type() for cls in DEVICE_EVENTS} <= set(serializer._types)


@dataclass(frozen=True, kw_only=True)
class ThermostatSet(DomainEvent):
    """Version 3: v1 had ``temp`` in Fahrenheit; v2 renamed it; v3 is Celsius."""

    schema_version = 3
    celsius: float


def test_an_old_event_is_upcast_step_by_step_to_the_current_version() -> None:
    serializer = EventSerializer()
    serializer.register(ThermostatSet)
    serializer.register_upcaster("ThermostatSet", 1, lambda d: {**d, "fahrenheit": d.pop("temp")})
    serializer.register_upcaster(
        "ThermostatSet", 2, lambda d: {**d, "celsius": round((d.pop("fahrenheit") - 32) / 1.8, 2)}
    )
    v1 = json.dumps({"aggregate_id": "t-1", "occurred_at": "2026-01-01T00:00:00Z", "temp": 212})
    event = serializer.deserialize("ThermostatSet", 1, v1)
    assert isinstance(event, ThermostatSet) and event.celsius == 100.0


def test_a_missing_upcaster_or_unknown_type_is_an_error_not_a_guess() -> None:
    serializer = EventSerializer()
    serializer.register(ThermostatSet)
    with pytest.raises(UnknownEventType):
        serializer.deserialize("ThermostatSet", 1, "{}")
    with pytest.raises(UnknownEventType):
        serializer.deserialize("Nope", 1, "{}")

"""The Device aggregate, specified as: given these events, when this command, then these events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.devices import (
    CertificateIssued,
    CertificateRevoked,
    Device,
    DeviceActivated,
    DeviceDecommissioned,
    DeviceLocationChanged,
    DeviceMetadata,
    DeviceMetadataChanged,
    DeviceProvisioned,
    DeviceRegistered,
    DeviceRenamed,
    DeviceResumed,
    DeviceStatus,
    DeviceSuspended,
    DeviceTagsChanged,
    Location,
    Protocol,
)
from iot_platform.domain.errors import AlreadyExists, DomainError, InvalidTransition, InvalidValue
from iot_platform.domain.events import DomainEvent

ID = "sensor-001"
AT = datetime(2026, 1, 1, tzinfo=UTC)
NOW = EventContext(at=AT)
REGISTERED = DeviceRegistered(aggregate_id=ID, occurred_at=AT, name="Lobby", device_type="th", protocol=Protocol.MQTT)
PROVISIONED = DeviceProvisioned(aggregate_id=ID, occurred_at=AT, credential_type="x509", credential_fingerprint="ab")
ACTIVATED = DeviceActivated(aggregate_id=ID, occurred_at=AT)
SUSPENDED = DeviceSuspended(aggregate_id=ID, occurred_at=AT, previous_status=DeviceStatus.ACTIVE)
DECOMMISSIONED = DeviceDecommissioned(aggregate_id=ID, occurred_at=AT)


def given(*events: DomainEvent) -> Device:
    return Device.rehydrate(ID, events)


def then(device: Device, *expected: type[DomainEvent]) -> list[DomainEvent]:
    assert [type(e) for e in device.pending_events] == list(expected)
    return list(device.pending_events)


def test_register_records_the_device_with_its_attributes() -> None:
    device = given()
    device.register(
        name=None,
        device_type="temperature_humidity",
        protocol=Protocol.LORAWAN,
        tags={"site": "sf"},
        location=Location(37.77, -122.42, 12.0, "San Francisco"),
        metadata=DeviceMetadata(manufacturer="ACME", model="TH-2000", extra={"color": "red"}),
        context=EventContext(actor="alice", correlation_id="c-1", at=AT),
    )
    (event,) = then(device, DeviceRegistered)
    assert isinstance(event, DeviceRegistered)
    assert event.name == ID  # the id stands in for a missing name
    assert event.protocol is Protocol.LORAWAN
    assert (event.actor, event.correlation_id) == ("alice", "c-1")
    assert device.status is DeviceStatus.REGISTERED and device.version == 1


def test_a_device_cannot_be_registered_twice() -> None:
    with pytest.raises(AlreadyExists):
        given(REGISTERED).register(name=None, device_type="th", context=NOW)


@pytest.mark.parametrize("bad_id", ["", "has space", "a/b", "a+b", "#", "-leading", "x" * 129])
def test_device_ids_that_would_break_topics_or_paths_are_refused(bad_id: str) -> None:
    device = Device(bad_id)
    with pytest.raises(InvalidValue) as refused:
        device.register(name=None, device_type="th", context=NOW)
    assert refused.value.field == "device_id"


def test_a_lorawan_dev_eui_is_a_valid_device_id() -> None:
    device = Device("70B3D57ED0041234")
    device.register(name=None, device_type="lora", context=NOW)
    then(device, DeviceRegistered)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"latitude": 90.5, "longitude": 0}, "location.latitude"),
        ({"latitude": 0, "longitude": -180.1}, "location.longitude"),
        ({"latitude": 0, "longitude": 0, "altitude": 200_000}, "location.altitude"),
        ({"latitude": float("nan"), "longitude": 0}, "location.latitude"),
    ],
)
def test_locations_outside_the_earth_are_refused(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        Location(**kwargs)
    assert refused.value.field == field


def test_tag_keys_must_be_identifiers() -> None:
    with pytest.raises(InvalidValue) as refused:
        given().register(name=None, device_type="th", tags={"bad key": "x"}, context=NOW)
    assert refused.value.field == "tags.bad key"


def test_provisioning_moves_a_registered_device_to_provisioned() -> None:
    device = given(REGISTERED)
    device.provision(credential_type="x509", credential_fingerprint="ab", context=NOW)
    then(device, DeviceProvisioned)
    assert device.status is DeviceStatus.PROVISIONED


@pytest.mark.parametrize(
    ("history", "command"),
    [
        ((REGISTERED, DECOMMISSIONED), lambda d: d.provision(credential_type="x509", context=NOW)),
        ((REGISTERED, DECOMMISSIONED), lambda d: d.activate(context=NOW)),
        ((REGISTERED, DECOMMISSIONED), lambda d: d.ensure_accepts_telemetry()),
        ((REGISTERED, DECOMMISSIONED), lambda d: d.suspend(context=NOW)),
        ((REGISTERED, DECOMMISSIONED), lambda d: d.update(name="x", context=NOW)),
        ((REGISTERED, DECOMMISSIONED), lambda d: d.decommission(context=NOW)),
        ((REGISTERED,), lambda d: d.resume(context=NOW)),
        ((REGISTERED, ACTIVATED), lambda d: d.resume(context=NOW)),
        ((REGISTERED, ACTIVATED, SUSPENDED), lambda d: d.suspend(context=NOW)),
        ((REGISTERED, ACTIVATED, SUSPENDED), lambda d: d.ensure_accepts_telemetry()),
        ((REGISTERED, ACTIVATED, SUSPENDED), lambda d: d.provision(credential_type="x509", context=NOW)),
        ((), lambda d: d.suspend(context=NOW)),
    ],
    ids=[
        "no provisioning when decommissioned",
        "no activation when decommissioned",
        "no telemetry when decommissioned",
        "no suspension when decommissioned",
        "no update when decommissioned",
        "no second decommission",
        "no resume of a registered device",
        "no resume of an active device",
        "no second suspension",
        "no telemetry while suspended",
        "no provisioning while suspended",
        "nothing for an unregistered device",
    ],
)
def test_invariants(history: tuple[DomainEvent, ...], command: Callable[[Device], None]) -> None:
    device = given(*history)
    with pytest.raises(InvalidTransition):
        command(device)
    then(device)


def test_the_first_reading_activates_a_provisioned_device_once() -> None:
    device = given(REGISTERED, PROVISIONED)
    device.activate(context=NOW)
    device.activate(context=NOW)
    then(device, DeviceActivated)
    assert device.status is DeviceStatus.ACTIVE


def test_suspend_and_resume_return_to_the_state_suspended_from() -> None:
    device = given(REGISTERED, PROVISIONED)
    device.suspend("lost in transit", context=NOW)
    device.resume(context=NOW)
    suspended, resumed = then(device, DeviceSuspended, DeviceResumed)
    assert isinstance(suspended, DeviceSuspended) and suspended.reason == "lost in transit"
    assert isinstance(resumed, DeviceResumed) and resumed.resumed_status is DeviceStatus.PROVISIONED
    assert device.status is DeviceStatus.PROVISIONED


def test_an_active_device_suspended_and_resumed_is_active_again() -> None:
    device = given(REGISTERED, ACTIVATED, SUSPENDED)
    device.resume(context=NOW)
    then(device, DeviceResumed)
    assert device.status is DeviceStatus.ACTIVE


def test_a_suspended_device_can_be_decommissioned() -> None:
    device = given(REGISTERED, ACTIVATED, SUSPENDED)
    device.decommission("scrapped", context=NOW)
    then(device, DeviceDecommissioned)
    assert device.status is DeviceStatus.DECOMMISSIONED


def test_update_records_only_what_changed() -> None:
    device = given(REGISTERED)
    device.update(
        name="Lobby",  # unchanged
        tags={"floor": "1"},
        location=Location(1.0, 2.0),
        metadata=DeviceMetadata(firmware_version="2.0.0"),
        context=NOW,
    )
    then(device, DeviceTagsChanged, DeviceLocationChanged, DeviceMetadataChanged)


def test_update_renames_and_clears_the_location() -> None:
    device = given(
        REGISTERED, DeviceLocationChanged(aggregate_id=ID, occurred_at=AT, location=Location(1.0, 2.0))
    )
    device.update(name="Hall", clear_location=True, context=NOW)
    then(device, DeviceRenamed, DeviceLocationChanged)
    assert device.name == "Hall" and device.location is None


def test_an_update_that_changes_nothing_records_nothing() -> None:
    device = given(REGISTERED)
    device.update(name="Lobby", tags={}, context=NOW)
    then(device)


def test_a_snapshot_plus_its_tail_rehydrates_the_same_device() -> None:
    history: list[DomainEvent] = [REGISTERED, ACTIVATED]
    history += [DeviceTagsChanged(aggregate_id=ID, occurred_at=AT, tags={"n": str(i)}) for i in range(10)]
    history += [SUSPENDED]
    full = Device.rehydrate(ID, history)
    snapshot = Device.rehydrate(ID, history[:7]).snapshot()
    partial = Device.rehydrate(ID, history[7:], snapshot)
    assert partial.snapshot() == full.snapshot()
    assert partial.version == full.version == len(history)


def test_a_snapshot_of_an_older_layout_is_not_used() -> None:
    snapshot = given(REGISTERED).snapshot()
    stale = type(snapshot)(snapshot.aggregate_id, snapshot.version, 0, snapshot.state)
    assert not Device.accepts_snapshot(stale)
    with pytest.raises(ValueError):
        Device.rehydrate(ID, [], stale)


def test_domain_errors_name_the_field_they_are_about() -> None:
    with pytest.raises(DomainError) as refused:
        given().register(name="", device_type="th", context=NOW)
    assert refused.value.field == "name"


# -- certificates ---------------------------------------------------------------------------
NOT_AFTER = datetime(2027, 12, 1, tzinfo=UTC)


def issued(serial: str) -> DomainEvent:
    return CertificateIssued(
        aggregate_id=ID, occurred_at=AT, serial=serial, fingerprint=f"fp-{serial}", not_after=NOT_AFTER
    )


def test_the_first_certificate_provisions_the_device_and_a_renewal_only_adds_one() -> None:
    device = given(REGISTERED)
    device.record_certificate("01", "fp-01", NOT_AFTER, context=NOW)
    then(device, DeviceProvisioned, CertificateIssued)
    renewed = given(REGISTERED, PROVISIONED, issued("01"), ACTIVATED)
    renewed.record_certificate("02", "fp-02", NOT_AFTER, context=NOW)
    then(renewed, CertificateIssued)
    assert renewed.status is DeviceStatus.ACTIVE and set(renewed.certificates) == {"01", "02"}


def test_a_suspended_device_gets_no_certificate() -> None:
    with pytest.raises(InvalidTransition):
        given(REGISTERED, SUSPENDED).record_certificate("01", "fp", NOT_AFTER, context=NOW)


def test_only_a_live_certificate_of_the_device_can_be_revoked() -> None:
    device = given(REGISTERED, PROVISIONED, issued("01"))
    with pytest.raises(InvalidValue):
        device.revoke_certificate("99", "key_compromise", context=NOW)
    device.revoke_certificate("01", "key_compromise", context=NOW)
    then(device, CertificateRevoked)
    assert device.certificates == {}


def test_decommissioning_revokes_every_certificate_first() -> None:
    device = given(REGISTERED, PROVISIONED, issued("01"), issued("02"))
    device.decommission("scrapped", context=NOW)
    events = then(device, CertificateRevoked, CertificateRevoked, DeviceDecommissioned)
    assert [getattr(e, "serial", None) for e in events[:2]] == ["01", "02"]


def test_certificates_survive_a_snapshot() -> None:
    device = given(REGISTERED, PROVISIONED, issued("01"))
    restored = Device(ID)
    restored._restore(device._state())
    assert restored.certificates == {"01": NOT_AFTER}


def test_events_occur_at_the_time_the_context_gives() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    device = given(REGISTERED)
    device.decommission("retired", EventContext(at=at))
    assert [e.occurred_at for e in then(device, DeviceDecommissioned)] == [at]

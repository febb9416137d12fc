"""The device-side wire contract: topics, JSON and CBOR payloads, timestamps, tags."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import cbor2
import pytest

from iot_platform.application.telemetry.model import Candidate, Rejection
from iot_platform.presentation.mqtt.contract import StatusReport, parse_message
from iot_platform.presentation.wire import (
    WireError,
    format_timestamp,
    parse_interval,
    parse_tags,
    parse_timestamp,
)

T = 1_704_110_400  # 2024-01-01T12:00:00Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T12:00:00Z", T * 10**9),
        ("2024-01-01T12:00:00.123456789Z", T * 10**9 + 123_456_789),
        ("2024-01-01T14:00:00+02:00", T * 10**9),
        ("2024-01-01T12:00:00", T * 10**9),
        (T, T * 10**9),
        (T * 1000 + 5, T * 10**9 + 5_000_000),
        (str(T * 1000), T * 10**9),
        (T * 10**9 + 7, T * 10**9 + 7),
        (datetime(2024, 1, 1, 12, tzinfo=UTC), T * 10**9),
    ],
)
def test_timestamps_in_every_form_devices_send(value: object, expected: int) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("value", ["yesterday", True, float("nan"), [1]])
def test_unreadable_timestamps_are_errors(value: object) -> None:
    with pytest.raises(WireError):
        parse_timestamp(value)


def test_timestamps_format_back_with_nanoseconds() -> None:
    assert format_timestamp(T * 10**9 + 5) == "2024-01-01T12:00:00.000000005Z"
    assert format_timestamp(T * 10**9) == "2024-01-01T12:00:00Z"


def test_intervals_and_tags() -> None:
    assert parse_interval("10s") == 10 * 10**9
    assert parse_interval("1d") == 86_400 * 10**9
    for bad in ("0s", "1y", "s", "-1m"):
        with pytest.raises(WireError):
            parse_interval(bad)
    assert parse_tags(["room:101", "sensor:v2"]) == {"room": "101", "sensor": "v2"}
    assert parse_tags({"room": 101, "ok": True}) == {"room": "101", "ok": "true"}
    with pytest.raises(WireError):
        parse_tags(["nocolon"])


def test_flat_json_on_the_telemetry_topic() -> None:
    payload = b'{"temperature": 23.5, "humidity": 45.2, "timestamp": "2024-01-01T12:00:00Z"}'
    candidate = parse_message("devices/sensor-001/telemetry", payload)
    assert candidate == Candidate(
        "sensor-001", T * 10**9, {"temperature": 23.5, "humidity": 45.2}, payload_bytes=len(payload)
    )


def test_envelope_cbor_on_the_telemetry_topic() -> None:
    body = {"message_id": "m-1", "timestamp": T * 1000, "metrics": {"t": 1, "ok": True},
            "tags": ["room:101"]}
    candidate = parse_message("devices/d1/telemetry", cbor2.dumps(body))
    assert isinstance(candidate, Candidate)
    assert (candidate.message_id, candidate.timestamp_ns) == ("m-1", T * 10**9)
    assert candidate.metrics == {"t": 1, "ok": True} and candidate.tags == {"room": "101"}


def test_cbor_datetime_tags_are_understood() -> None:
    payload = cbor2.dumps({"t": 1.5, "timestamp": datetime(2024, 1, 1, 12, tzinfo=UTC)})
    candidate = parse_message("devices/d1/telemetry", payload)
    assert isinstance(candidate, Candidate) and candidate.timestamp_ns == T * 10**9


def test_single_sensor_readings() -> None:
    candidate = parse_message("sensors/d1/temperature", b'{"value": 23.5, "timestamp": "2024-01-01T12:00:00Z"}')
    assert isinstance(candidate, Candidate)
    assert (candidate.metrics, candidate.timestamp_ns) == ({"temperature": 23.5}, T * 10**9)
    bare = parse_message("sensors/d1/humidity", b"45.5")
    assert isinstance(bare, Candidate) and bare.metrics == {"humidity": 45.5}


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe not cbor", b'{"t": ', b"[1, 2]", b'{"metrics": [1]}', b'{"t": 1, "timestamp": "soon"}'],
)
def test_undecodable_payloads_become_rejected_candidates_not_exceptions(payload: bytes) -> None:
    candidate = parse_message("devices/d1/telemetry", payload)
    assert isinstance(candidate, Candidate) and candidate.rejection is Rejection.UNDECODABLE
    assert candidate.detail


@pytest.mark.parametrize(
    ("payload", "online"),
    [(b"online", True), (b"offline", False), (b'{"status": "online"}', True),
     (json.dumps({"online": False}).encode(), False)],
)
def test_status_reports(payload: bytes, online: bool) -> None:
    assert parse_message("devices/d1/status", payload) == StatusReport("d1", online)


def test_topics_outside_the_contract_are_ignored() -> None:
    assert parse_message("devices/d1/commands", b"{}") is None
    assert parse_message("something/else", b"{}") is None
    assert parse_message("devices/d1/status", b"maybe") is None

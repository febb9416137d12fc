"""The MQTT acknowledgement topic: what a device may send on devices/{id}/commands/ack."""

from __future__ import annotations

import pytest

from iot_platform.presentation.mqtt.contract import (
    DEVICE_TOPICS,
    CommandAck,
    MalformedAck,
    parse_message,
)


def test_the_platform_subscribes_to_acknowledgements() -> None:
    assert "devices/+/commands/ack" in DEVICE_TOPICS


def test_an_acknowledgement_names_the_command_status_and_result() -> None:
    parsed = parse_message(
        "devices/d1/commands/ack", b'{"command_id": "c1", "status": "succeeded", "result": {"rate": 2}}'
    )
    assert parsed == CommandAck("d1", "c1", "succeeded", {"rate": 2})
    assert parse_message("devices/d1/commands/ack", b'{"command_id": "c1", "status": "delivered"}') == (
        CommandAck("d1", "c1", "delivered", None)
    )


@pytest.mark.parametrize(("payload", "problem"), [
    (b"{not json", "invalid JSON"),
    (b'["c1", "succeeded"]', "object"),
    (b'{"status": "succeeded"}', "command_id"),
    (b'{"command_id": 7, "status": "succeeded"}', "command_id"),
    (b'{"command_id": "c1", "status": "done"}', "status"),
])
def test_a_malformed_acknowledgement_is_reported_not_raised(payload: bytes, problem: str) -> None:
    parsed = parse_message("devices/d1/commands/ack", payload)
    assert isinstance(parsed, MalformedAck) and parsed.device_id == "d1" and problem in parsed.problem


def test_commands_sent_to_devices_are_not_read_back_as_input() -> None:
    assert parse_message("devices/d1/commands", b'{"command_id": "c1"}') is None

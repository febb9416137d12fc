"""The embedded broker's topic ACL and reserved client ids, as a table: the platform may do
anything; devices only their own topics and no wildcard; admitted anonymous clients any
concrete topic and no wildcard; nobody else the platform's client ids."""

from __future__ import annotations

import pytest
from amqtt.contexts import Action

from iot_platform.infrastructure.mqtt.broker_security import reserved_client_id, topic_allowed

P, S, R = Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE


@pytest.mark.parametrize(("identity", "topic", "action", "allowed"), [
    ("d1", "devices/d1/telemetry", P, True),
    ("d1", "devices/d1/status", P, True),
    ("d1", "devices/d1/commands/ack", P, True),
    ("d1", "sensors/d1/temp", P, True),
    ("d1", "devices/d1/commands", S, True),
    ("d1", "devices/d1/commands", R, True),
    ("d1", "devices/d2/telemetry", P, False),
    ("d1", "devices/d2/commands/ack", P, False),
    ("d1", "devices/d2/status", P, False),
    ("d1", "sensors/d2/temp", P, False),
    ("d1", "devices/d2/commands", S, False),
    ("d1", "devices/d2/commands", R, False),
    ("d1", "#", S, False),
    ("d1", "devices/+/commands", S, False),
    ("d1", "devices/d1/#", S, False),
    ("d1", "alerts/x", P, False),
    ("d1", "devices", P, False),
    (None, "devices/d2/telemetry", P, True),
    (None, "probe/x", S, True),
    (None, "#", S, False),
    (None, "sensors/+/+", S, False),
    ("iot-platform", "#", S, True),
    ("iot-platform", "devices/d9/commands", P, True),
])
def test_the_topic_acl(identity: str | None, topic: str, action: Action, allowed: bool) -> None:
    assert topic_allowed(identity, topic, action, anonymous=True) is allowed


def test_without_anonymous_access_a_client_with_no_identity_may_use_nothing() -> None:
    assert not topic_allowed(None, "devices/d1/telemetry", P, anonymous=False)


@pytest.mark.parametrize(("client_id", "reserved"), [
    ("iot-platform", True), ("iot-platform-commands", True), ("iot-platform-x", True),
    ("iot-platformx", False), ("d1", False), ("", False), (None, False),
])
def test_the_platform_s_client_ids_are_reserved(client_id: str | None, reserved: bool) -> None:
    assert reserved_client_id(client_id, "iot-platform") is reserved

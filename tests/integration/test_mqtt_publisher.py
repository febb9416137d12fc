"""MqttPublisher against a real broker (the embedded amqtt one, on a free port)."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from iot_platform.infrastructure.mqtt.embedded_broker import EmbeddedBroker
from iot_platform.infrastructure.mqtt.publisher import MqttPublisher, PublishFailed
from tests.e2e.platform_process import free_port

pytestmark = pytest.mark.asyncio


async def test_a_publisher_started_before_its_broker_connects_once_the_broker_is_up() -> None:
    port = free_port()
    publisher = MqttPublisher("127.0.0.1", port, client_id="pub-test", timeout=30,
                              reconnect_initial=0.05, reconnect_max=0.2)
    await publisher.start()
    broker = EmbeddedBroker("127.0.0.1", port)
    try:
        await broker.start()
        async with aiomqtt.Client("127.0.0.1", port, identifier="sub-test") as subscriber:
            await subscriber.subscribe("devices/d1/commands", qos=1)
            await publisher.publish("devices/d1/commands", b'{"command_id": "c1"}', qos=1)
            message = await asyncio.wait_for(anext(subscriber.messages), 30)
            assert (message.topic.value, message.payload) == ("devices/d1/commands", b'{"command_id": "c1"}')
            assert message.qos == 1
    finally:
        await publisher.stop()
        await broker.stop()


async def test_publishing_without_a_broker_fails_after_the_timeout() -> None:
    publisher = MqttPublisher("127.0.0.1", free_port(), client_id="pub-nowhere", timeout=0.2,
                              reconnect_initial=0.05, reconnect_max=0.1)
    await publisher.start()
    try:
        with pytest.raises(PublishFailed, match="not connected"):
            await publisher.publish("devices/d1/commands", b"{}")
    finally:
        await publisher.stop()

"""Device commands over MQTT: ``devices/{id}/commands``, QoS 1, JSON.

``{"command_id", "command", "parameters", "issued_at", "expires_at"}`` with ISO 8601 UTC times.
"""

from __future__ import annotations

import json

from iot_platform.application.commands.commands import CommandMessage
from iot_platform.application.commands.ports import DeliveryFailed
from iot_platform.infrastructure.mqtt.publisher import MqttPublisher, PublishFailed


class MqttCommandChannel:
    """Implements ``CommandPublisher``."""

    def __init__(self, publisher: MqttPublisher, qos: int = 1) -> None:
        self._publisher = publisher
        self._qos = qos

    async def publish(self, message: CommandMessage) -> None:
        payload = json.dumps(message.payload()).encode()
        try:
            await self._publisher.publish(f"devices/{message.device_id}/commands", payload, self._qos)
        except PublishFailed as exc:
            raise DeliveryFailed(str(exc)) from exc

"""Device commands on Kafka: every command pushed to a device is also published to
``device-commands`` (keyed by device id), for whatever else delivers or audits commands (a
LoRaWAN network server, a gateway bridge, an archive).

The record is the device's own payload plus ``device_id``. It is published before the MQTT
push, and a failure to publish fails the push (the command stays pending and is pushed again),
so the topic never misses a command a device was sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from iot_platform.application.commands.commands import CommandMessage
from iot_platform.application.commands.ports import CommandPublisher, DeliveryFailed
from iot_platform.infrastructure.streaming.kafka_producer import LazyProducer


class KafkaCommandChannel:
    """Implements ``CommandPublisher`` on the commands topic."""

    def __init__(self, brokers: list[str], topic: str) -> None:
        self.topic = topic
        self._producer = LazyProducer(",".join(brokers))

    async def publish(self, message: CommandMessage) -> None:
        record = {"device_id": message.device_id, **message.payload()}
        try:
            producer = await self._producer.get()
            await producer.send_and_wait(self.topic, json.dumps(record).encode(),
                                         key=message.device_id.encode())
        except KafkaError as exc:
            raise DeliveryFailed(f"Kafka: {exc}") from exc

    async def close(self) -> None:
        await self._producer.close()


class EveryChannel:
    """Implements ``CommandPublisher`` by publishing on each channel in turn."""

    def __init__(self, channels: Sequence[CommandPublisher]) -> None:
        self._channels = list(channels)

    async def publish(self, message: CommandMessage) -> None:
        for channel in self._channels:
            await channel.publish(message)

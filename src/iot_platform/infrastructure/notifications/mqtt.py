"""The MQTT alert channel: each notice as JSON to the rule's ``mqtt_topic`` at QoS 1, through the
platform's publishing connection (the one that sends device commands), retried with back-off."""

from __future__ import annotations

import json

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.domain.alerts import Channel, RuleDefinition
from iot_platform.infrastructure.mqtt.publisher import MqttPublisher, PublishFailed
from iot_platform.infrastructure.notifications.queued import QueuedChannel


class MqttAlertChannel(QueuedChannel[str]):
    name = "mqtt"

    def __init__(self, publisher: MqttPublisher, *, attempts: int = 5, backoff_initial: float = 0.5,
                 backoff_max: float = 30.0, queue_size: int = 10_000) -> None:
        super().__init__(queue_size)
        self._publisher = publisher
        self._attempts = attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max

    def route(self, notice: AlertNotice, rule: RuleDefinition | None) -> str | None:
        if rule is None or Channel.MQTT not in rule.channels or not rule.mqtt_topic:
            return None
        return rule.mqtt_topic

    async def deliver(self, target: str, notice: AlertNotice) -> None:
        payload = json.dumps(notice.as_json()).encode()
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff_initial, max=self._backoff_max),
            retry=retry_if_exception_type(PublishFailed),
            reraise=True,
        ):
            with attempt:
                await self._publisher.publish(target, payload, qos=1)

"""An MQTT 3.1.1 broker inside the platform process (amqtt), for ``make run``.

With ``mqtt.embedded_broker: true`` devices can ``mosquitto_pub`` to 127.0.0.1:1883 with
nothing else installed. It is for one machine: production points ``mqtt.broker_url`` at
Mosquitto (or another MQTT 5 broker), which the platform's shared subscriptions need.
"""

from __future__ import annotations

import logging
from typing import Any

from amqtt.broker import Broker

log = logging.getLogger(__name__)


class EmbeddedBroker:
    def __init__(self, host: str, port: int, allow_anonymous: bool = True) -> None:
        self._config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            # Only what is needed: no $SYS publisher, no per-packet logging on the hot path.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                    "allow_anonymous": allow_anonymous
                },
            },
        }
        self._address = f"{host}:{port}"
        self._broker: Broker | None = None

    async def start(self) -> None:
        self._broker = Broker(self._config)
        try:
            await self._broker.start()
        except Exception as exc:  # amqtt wraps the bind error; say what to change instead
            self._broker = None
            raise RuntimeError(
                f"the embedded MQTT broker cannot listen on {self._address} ({exc}); another "
                "broker may be running there: set mqtt.broker_url to a free port, or "
                "mqtt.embedded_broker: false to use that broker"
            ) from exc
        log.info("embedded MQTT broker listening on %s", self._address)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

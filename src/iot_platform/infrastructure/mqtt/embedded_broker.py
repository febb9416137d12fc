"""An MQTT 3.1.1 broker inside the platform process (amqtt), for ``make run``.

With ``mqtt.embedded_broker: true`` devices can ``mosquitto_pub`` to 127.0.0.1:1883 with
nothing else installed. It is for one machine: production points ``mqtt.broker_url`` at
Mosquitto (or another MQTT 5 broker), which the platform's shared subscriptions need.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from amqtt.broker import Broker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MutualTls:
    """The files of a mutual-TLS listener: the device CA chain, the broker's own certificate
    and key, and the CRL to refuse revoked clients by."""

    ca_file: str
    cert_file: str
    key_file: str
    key_password: str = field(repr=False)
    """The passphrase of the broker's key, which is encrypted at rest."""
    crl_file: str


class _UnreadableKey(RuntimeError):
    pass


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's broker, loading an encrypted server key. amqtt loads the key file itself with no
    passphrase (OpenSSL would then ask on the terminal), so its context factory is replaced;
    pyproject pins the amqtt releases this private method is known in."""

    def __init__(self, config: dict[str, Any], key_password: str | None) -> None:
        super().__init__(config)
        self._key_password = key_password

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=listener.get("cafile"))
            context.load_cert_chain(listener["certfile"], listener["keyfile"], self._key_password)
        except (ssl.SSLError, OSError) as exc:
            raise _UnreadableKey(f"the embedded MQTT broker cannot load {listener['certfile']} and "
                                 f"{listener['keyfile']} ({exc}); delete both to have them made again") from None
        context.verify_mode = ssl.CERT_OPTIONAL  # the plugins refuse a client without one
        return context


class EmbeddedBroker:
    def __init__(self, host: str, port: int, allow_anonymous: bool = True,
                 mutual_tls: MutualTls | None = None) -> None:
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{host}:{port}"}
        # Only what is needed: no $SYS publisher, no per-packet logging on the hot path.
        plugins: dict[str, Any] = {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": allow_anonymous},
        }
        if mutual_tls is not None:
            listener.update(ssl=True, cafile=mutual_tls.ca_file, certfile=mutual_tls.cert_file,
                            keyfile=mutual_tls.key_file)
            plugins = {
                "iot_platform.infrastructure.mqtt.broker_security.DeviceCertificateAuth": {
                    "crl_file": mutual_tls.crl_file},
                "iot_platform.infrastructure.mqtt.broker_security.DeviceTopics": {},
            }
        self._config: dict[str, Any] = {"listeners": {"default": listener}, "plugins": plugins}
        self._key_password = mutual_tls.key_password if mutual_tls else None
        self._address = f"{host}:{port}"
        self._broker: Broker | None = None

    async def start(self) -> None:
        self._broker = _Broker(self._config, self._key_password)
        try:
            await self._broker.start()
        except Exception as exc:  # amqtt wraps the bind error; say what to change instead
            self._broker = None
            if isinstance(exc.__cause__, _UnreadableKey):
                raise RuntimeError(str(exc.__cause__)) from None
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

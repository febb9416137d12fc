"""An MQTT 3.1.1 broker inside the platform process (amqtt), for ``make run``.

With ``mqtt.embedded_broker: true`` devices can ``mosquitto_pub`` to 127.0.0.1:1883 with
nothing else installed. It is for one machine: production points ``mqtt.broker_url`` at
Mosquitto (or another MQTT 5 broker), which the platform's shared subscriptions need.

Who may connect and which topics each may use is ``broker_security``'s. A client is
authenticated from what its own CONNECT presented before amqtt looks up, deletes or takes over
a session of the same client id (amqtt does that first, then asks the plugins), so a refused
client cannot disturb anyone's session, the platform's least of all.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from iot_platform.infrastructure.mqtt.broker_security import BrokerAccess, topic_allowed

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


def _mutual_tls_listener(config: dict[str, Any]) -> bool:
    """Whether the listener is the mutual-TLS one, where no client is anonymous."""
    return bool(config["listeners"]["default"].get("ssl"))


class _Broker(Broker):  # type: ignore[misc]
    """amqtt's broker, loading an encrypted server key, and authenticating a client before its
    session is touched. amqtt loads the key file itself with no passphrase (OpenSSL would then
    ask on the terminal), so its context factory is replaced; and it deletes (clean session) or
    takes over (persistent session) the session of a client id before asking the auth plugins,
    and then authenticates the old session's certificate, so its session set-up is replaced.
    pyproject pins the amqtt releases these private methods are known in."""

    def __init__(self, config: dict[str, Any], key_password: str | None, access: BrokerAccess) -> None:
        super().__init__(config)
        self._key_password = key_password
        self._access = access
        self._anonymous_topics = access.allow_anonymous and not _mutual_tls_listener(config)

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=listener.get("cafile"))
            context.load_cert_chain(listener["certfile"], listener["keyfile"], self._key_password)
        except (ssl.SSLError, OSError) as exc:
            raise _UnreadableKey(f"the embedded MQTT broker cannot load {listener['certfile']} and "
                                 f"{listener['keyfile']} ({exc}); delete both to have them made again") from None
        context.verify_mode = ssl.CERT_OPTIONAL  # the plugins refuse a client without one
        return context

    async def _initialize_client_session(self, reader: ReaderAdapter, writer: WriterAdapter,
                                         remote_address: str, remote_port: int) -> tuple[BrokerProtocolHandler, Session]:
        # amqtt 0.12's own, with the plugins asked first, about this connection's CONNECT.
        try:
            handler, incoming = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except MQTTError:
            await writer.close()
            raise
        except (AMQTTError, NoDataError) as exc:
            raise AMQTTError(exc) from exc
        if not await super()._authenticate(incoming, None) or not self._may_use_session(incoming):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(f"client {incoming.client_id!r} from {remote_address}:{remote_port} not authorised")
        session: Session = incoming
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
        elif incoming.client_id in self._sessions:
            session, _ = self._sessions[incoming.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive",
                         "username", "password", "ssl_object", "remote_address", "remote_port"):
                setattr(session, name, getattr(incoming, name))
            session.parent = 1
        else:
            incoming.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    def _may_use_session(self, incoming: Session) -> bool:
        """A live or persistent session of an identity (the platform, a device) is resumed,
        replaced or taken over only by that identity: another device reusing its client id would
        get its queued commands, or cut it off. (An anonymous local client's session is anyone's.)"""
        kept = self._sessions.get(incoming.client_id)[0] if incoming.client_id in self._sessions else None
        owner = kept.username if kept is not None else None
        if owner is None or owner == incoming.username:
            return True
        if kept is not None and kept.clean_session and not kept.transitions.is_connected():
            return True  # gone, and nothing was kept for it
        return self._access.refuse("foreign_session", incoming.client_id, f"that client id is {owner}'s session")

    async def _client_message_loop(self, client_session: Session, handler: BrokerProtocolHandler) -> None:
        await super()._client_message_loop(client_session, handler)
        # amqtt 0.12 leaves this loop on DISCONNECT with the client's last PUBLISHes still
        # queued, though it has already acknowledged them: a QoS 1 burst that ends in a
        # disconnect (mosquitto_pub -l) lost its tail as soon as anything on the way (the topic
        # ACL) awaited. They are handed on here, in order, as the loop would have.
        queue = client_session.delivered_message_queue
        while not queue.empty():
            message: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            message.set_result(queue.get_nowait())
            if not await self._handle_message_delivery(client_session, handler, message):
                break

    async def _topic_filtering(self, session: Session, topic: str, action: Any) -> bool:
        # The ACL of broker_security, asked directly: amqtt's plugin call (a task per plugin,
        # gathered) yields to the loop on every PUBLISH, and a yield there lets a client's
        # DISCONNECT overtake its last acknowledged PUBLISHes, which amqtt then drops.
        return topic_allowed(session.username, topic, action, anonymous=self._anonymous_topics)

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        """Already done, on the connection's own CONNECT (``_initialize_client_session``)."""
        return True


class EmbeddedBroker:
    def __init__(self, host: str, port: int, access: BrokerAccess | None = None,
                 mutual_tls: MutualTls | None = None) -> None:
        """``access``: who the plain listener admits (default: anonymous local clients only);
        under ``mutual_tls`` a client certificate is the only way in."""
        listener: dict[str, Any] = {"type": "tcp", "bind": f"{host}:{port}"}
        access = access or BrokerAccess()
        # Only what is needed: no $SYS publisher, no per-packet logging on the hot path. No
        # topic plugin either: ``_Broker._topic_filtering`` asks the ACL itself.
        plugins: dict[str, Any] = {
            "iot_platform.infrastructure.mqtt.broker_security.DeviceCredentialAuth": {"access": access},
        }
        if mutual_tls is not None:
            listener.update(ssl=True, cafile=mutual_tls.ca_file, certfile=mutual_tls.cert_file,
                            keyfile=mutual_tls.key_file)
            plugins = {
                "iot_platform.infrastructure.mqtt.broker_security.DeviceCertificateAuth": {
                    "crl_file": mutual_tls.crl_file, "access": access},
            }
        self._config: dict[str, Any] = {"listeners": {"default": listener}, "plugins": plugins}
        self._key_password = mutual_tls.key_password if mutual_tls else None
        self.access = access
        """Who the plain listener admits; ``device_for`` may be given until ``start``."""
        self._address = f"{host}:{port}"
        self._broker: Broker | None = None

    async def start(self) -> None:
        self._broker = _Broker(self._config, self._key_password, self.access)
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

    @property
    def refusals(self) -> Mapping[str, int]:
        """Connections refused so far, by reason."""
        return dict(self.access.refusals)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

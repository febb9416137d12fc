"""The platform's MQTT subscriber: device topics in, IngestTelemetry, acknowledgements out.

QoS 1 end to end: PUBACK is sent only after a message's reading is durably handed on, so a
crash or a failed store write leaves the message unacknowledged and the broker delivers it
again (the session is persistent: fixed client id, no clean start). aiomqtt has no public
manual-ack API yet, so paho's ``manual_ack_set``/``ack`` are reached through ``client._client``
(the workaround in aiomqtt issue #345). Messages are taken in batches of whatever has arrived,
several batches are ingested at once, and PUBACKs still leave in arrival order, as MQTT asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iot_platform.application.telemetry.ingestion import BatchOrder, IngestTelemetry
from iot_platform.application.telemetry.model import Candidate
from iot_platform.config import MqttSettings
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.presentation.mqtt.contract import (
    DEVICE_TOPICS,
    CommandAck,
    MalformedAck,
    StatusReport,
    parse_message,
)

log = logging.getLogger(__name__)

class ForeignUplinks(Protocol):
    """Uplinks another system publishes on the same broker (a LoRaWAN network server's)."""

    topic: str
    protocol: str
    """The protocol their readings are counted under (they came over it before MQTT)."""

    def matches(self, topic: str) -> bool: ...

    async def candidate(self, topic: str, payload: bytes) -> Candidate: ...


ConnectivityHandler = Callable[[StatusReport], Awaitable[None]]
AckHandler = Callable[[CommandAck], Awaitable[None]]
"""Records a command acknowledgement; raising fails the batch (so it is redelivered)."""


class MqttIngestion:
    def __init__(
        self,
        settings: MqttSettings,
        ingest: IngestTelemetry,
        on_status: ConnectivityHandler,
        metrics: PlatformMetrics,
        on_ack: AckHandler | None = None,
        foreign: ForeignUplinks | None = None,
        tls: aiomqtt.TLSParameters | None = None,
    ) -> None:
        self._tls = tls
        """TLS towards the broker (``mqtts://``, or the embedded broker's mutual TLS)."""
        self._settings = settings
        self._foreign = foreign
        self._ingest = ingest
        self._on_status = on_status
        self._metrics = metrics
        self._on_ack = on_ack
        self.subscribed = asyncio.Event()
        """Set while subscribed; tests and readiness wait on it."""

    def _client(self) -> aiomqtt.Client:
        s = self._settings
        properties = None
        if s.mqtt5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry_seconds
        client = aiomqtt.Client(
            hostname=s.host,
            port=s.port,
            identifier=s.client_id,
            username=s.username or None,
            password=s.password.get_secret_value() or None,
            protocol=aiomqtt.ProtocolVersion.V5 if s.mqtt5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if s.mqtt5 else False,
            clean_start=False if s.mqtt5 else MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            keepalive=s.keep_alive,
            tls_params=self._tls,
        )
        # Before connecting: a resumed session may deliver at once.
        client._client.manual_ack_set(True)
        return client

    def _identity(self, message: aiomqtt.Message) -> str | None:
        """The publisher's identity as the broker stamped it (the last such property: the
        broker's plugin refuses clients that send one themselves)."""
        name = self._settings.identity_property
        if not name or message.properties is None:
            return None
        stamped = [value for key, value in getattr(message.properties, "UserProperty", []) if key == name]
        return str(stamped[-1]) if stamped else None

    def _topic(self, topic: str) -> str:
        group = self._settings.shared_subscription_group
        return f"$share/{group}/{topic}" if self._settings.mqtt5 and group else topic

    async def run(self) -> None:
        """Consumes until cancelled, reconnecting with exponential back-off."""
        s = self._settings
        delay = s.reconnect_initial_seconds
        while True:
            try:
                async with self._client() as client:
                    topics = [*DEVICE_TOPICS, *([self._foreign.topic] if self._foreign else [])]
                    await client.subscribe([(self._topic(t), s.qos_level) for t in topics])
                    log.info("subscribed to device topics on %s", s.broker_url)
                    self.subscribed.set()
                    delay = s.reconnect_initial_seconds
                    await self._consume(client)
            except aiomqtt.MqttError as exc:
                log.warning("MQTT connection to %s lost (%s); reconnecting in %.1fs",
                            s.broker_url, exc, delay)
            except _BatchFailed as exc:
                log.warning("ingestion failed (%s); reconnecting so the broker redelivers", exc)
            except Exception:  # never let the subscriber die: reconnect and carry on
                log.exception("MQTT ingestion failed unexpectedly; reconnecting in %.1fs", delay)
            finally:
                self.subscribed.clear()
            self._metrics.mqtt_reconnects.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, s.reconnect_max_seconds)

    async def _consume(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        in_flight: set[asyncio.Task[None]] = set()
        previous: asyncio.Task[None] | None = None
        order: BatchOrder | None = None
        orders: dict[asyncio.Task[None], BatchOrder] = {}
        try:
            while True:
                batch = [await anext(messages)]
                while len(messages) > 0 and len(batch) < self._settings.max_batch:
                    batch.append(await anext(messages))
                # Batches overlap, but enter the stream in the order they arrived.
                order = BatchOrder(after=order.queued if order is not None else None)
                previous = asyncio.create_task(self._process(client, batch, previous, order))
                in_flight.add(previous)
                orders[previous] = order
                previous.add_done_callback(in_flight.discard)
                previous.add_done_callback(orders.pop)
                while len(in_flight) >= self._settings.pipeline:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                if previous.done() and previous.exception() is not None:
                    raise _BatchFailed(str(previous.exception()))
        finally:
            # Unacknowledged batches are redelivered by the broker; their stored readings are
            # then recognised as duplicates. (Copy: done-callbacks shrink the set meanwhile.)
            pending = list(in_flight)
            for waiting in orders.values():
                waiting.queued.set()  # a task cancelled before it ran would hold its successors
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task

    async def _process(
        self,
        client: aiomqtt.Client,
        batch: list[aiomqtt.Message],
        previous: asyncio.Task[None] | None,
        order: BatchOrder | None = None,
    ) -> None:
        candidates: list[Candidate] = []
        foreign: list[Candidate] = []
        statuses: list[StatusReport] = []
        acks: list[CommandAck] = []
        for message in batch:
            payload = message.payload
            body = payload if isinstance(payload, bytes) else str(payload).encode()
            if self._foreign is not None and self._foreign.matches(message.topic.value):
                foreign.append(await self._foreign.candidate(message.topic.value, body))
                self._metrics.mqtt_messages.labels("foreign_uplink").inc()
                continue
            parsed = parse_message(message.topic.value, body)
            identity = self._identity(message)
            if identity is not None and not isinstance(parsed, Candidate) and parsed is not None \
                    and parsed.device_id != identity:
                log.warning("MQTT message for %s from %r refused: another device's topic", parsed.device_id, identity)
                self._metrics.mqtt_messages.labels("identity_mismatch").inc()
                continue
            if isinstance(parsed, Candidate):
                candidates.append(replace(parsed, identity=identity) if identity is not None else parsed)
                self._metrics.mqtt_messages.labels("telemetry").inc()
            elif isinstance(parsed, StatusReport):
                statuses.append(parsed)
                self._metrics.mqtt_messages.labels("status").inc()
            elif isinstance(parsed, CommandAck) and self._on_ack is not None:
                acks.append(parsed)
                self._metrics.mqtt_messages.labels("command_ack").inc()
            elif isinstance(parsed, MalformedAck):
                log.warning("malformed command acknowledgement from %s: %s",
                            parsed.device_id, parsed.problem)
                self._metrics.mqtt_messages.labels("command_ack_malformed").inc()
            else:
                self._metrics.mqtt_messages.labels("ignored").inc()
        try:
            if foreign and self._foreign is not None:  # other devices than the batch's own
                await self._ingest.ingest(foreign, self._foreign.protocol)
            if candidates:
                await self._ingest.ingest(candidates, "mqtt", order=order)
        finally:
            if order is not None and not order.queued.is_set():
                await order.done()  # no readings, or it failed before ingesting: let the next go
        for status in statuses:
            await self._on_status(status)
        if self._on_ack is not None:
            for ack in acks:
                await self._on_ack(ack)
        if previous is not None:
            await previous  # a failed earlier batch fails this one: acknowledge in order or not at all
        for message in batch:
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)


class _BatchFailed(Exception):
    pass

"""The platform's MQTT subscriber: device topics in, IngestTelemetry, acknowledgements out.

QoS 1 end to end: PUBACK is sent only after a message's reading is durably handed on, so a
crash or a failed store write leaves the message unacknowledged and the broker delivers it
again (the session is persistent: fixed client id, no clean start). aiomqtt has no public
manual-ack API yet, so paho's ``manual_ack_set``/``ack`` are reached through ``client._client``
(the workaround in aiomqtt issue #345). Messages are taken in batches of whatever has arrived,
several batches are ingested at once, and PUBACKs still leave in arrival order, as MQTT asks.

One message never stops ingestion. Decoding is bounded (``presentation.payloads``) and each
message is handled under its own ``try``: an error that comes from the message itself (a
``ValueError``, ``TypeError``, ``RecursionError``... anywhere in decoding, ingesting, recording
a status or an acknowledgement) drops that message only: it is logged once per kind a minute,
counted in ``iot_mqtt_message_failures_total{stage,error}``, dead-lettered when there is a
dead-letter path (the Kafka backend's dead-letter topic), and acknowledged, since redelivering
it would fail again. Any other error (a store or broker that does not answer) fails the batch:
the consumer notices at once, reconnects and the broker redelivers, as before.

Progress is watched for ``/ready``: a message is *waiting* from when it is taken from the
client until it is acknowledged or dropped (plus what sits in the client's queue); ingestion is
*stalled* when messages wait and none has been settled for ``mqtt.stall_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from iot_platform.application.observability import MqttMetrics
from iot_platform.application.telemetry.ingestion import BatchOrder, IngestTelemetry
from iot_platform.application.telemetry.model import Candidate, Outcome, Rejection, Status
from iot_platform.config import MqttSettings
from iot_platform.presentation.mqtt.contract import (
    DEVICE_TOPICS,
    CommandAck,
    MalformedAck,
    StatusReport,
    parse_message,
)
from iot_platform.presentation.payloads import DEFAULT_LIMITS, PayloadLimits

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
DeadLetter = Callable[[str, bytes, str, str], Awaitable[None]]
"""(topic, payload, reason, error): keeps a message the platform could not handle."""

MESSAGE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, LookupError, AttributeError, ArithmeticError, RecursionError,
    AssertionError, NotImplementedError, UnicodeError,
)
"""Errors that come from a message's content: it is dropped, since it would fail again.
Anything else (OSError, a database error...) is the platform's, and fails the batch."""

_UNREADABLE = (Rejection.UNDECODABLE, Rejection.NESTING_TOO_DEEP, Rejection.PAYLOAD_TOO_LARGE)
"""Rejected readings that are dead-lettered as they came (the others are well-formed)."""


class MqttIngestion:
    def __init__(
        self,
        settings: MqttSettings,
        ingest: IngestTelemetry,
        on_status: ConnectivityHandler,
        metrics: MqttMetrics,
        on_ack: AckHandler | None = None,
        foreign: ForeignUplinks | None = None,
        tls: aiomqtt.TLSParameters | None = None,
        limits: PayloadLimits = DEFAULT_LIMITS,
        dead_letter: DeadLetter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tls = tls
        """TLS towards the broker (``mqtts://``, or the embedded broker's mutual TLS)."""
        self._settings = settings
        self._foreign = foreign
        self._ingest = ingest
        self._on_status = on_status
        self._metrics = metrics
        self._on_ack = on_ack
        self._limits = limits
        self._dead_letter = dead_letter
        self._clock = clock
        self._logged: dict[str, float] = {}
        self.subscribed = asyncio.Event()
        """Set while subscribed; tests and readiness wait on it."""
        self._progress = _Progress(clock())
        self._queued: Callable[[], int] = lambda: 0

    def health(self) -> str:
        """``ok``, or why ingestion is not working (``/ready`` shows it)."""
        if not self.subscribed.is_set():
            return "not subscribed"
        waiting = self._progress.waiting + self._queued()
        idle = self._clock() - self._progress.since
        if waiting and idle > self._settings.stall_seconds:
            return f"stalled: {waiting} messages waiting, none handled for {idle:.0f}s"
        return "ok"

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
                    self._progress = _Progress(self._clock())
                    messages = client.messages
                    self._queued = lambda: len(messages)
                    self.subscribed.set()
                    delay = s.reconnect_initial_seconds
                    await self._consume(client)
            except aiomqtt.MqttError as exc:
                log.warning("MQTT connection to %s lost (%s); reconnecting in %.1fs",
                            s.broker_url, exc, delay)
            except _BatchFailed as exc:
                log.warning("ingestion failed (%s); reconnecting in %.1fs so the broker redelivers",
                            exc, delay)
            except Exception:  # never let the subscriber die: reconnect and carry on
                log.exception("MQTT ingestion failed unexpectedly; reconnecting in %.1fs", delay)
            finally:
                self.subscribed.clear()
                self._queued = lambda: 0
            self._metrics.mqtt_reconnects.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, s.reconnect_max_seconds)

    async def _consume(self, client: aiomqtt.Client) -> None:
        messages = client.messages
        in_flight: set[asyncio.Task[None]] = set()
        previous: asyncio.Task[None] | None = None
        order: BatchOrder | None = None
        orders: dict[asyncio.Task[None], BatchOrder] = {}
        # A failed batch fails every later one (acknowledgements leave in order or not at
        # all): it is noticed as soon as it fails, not only when it is the newest.
        failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        def settled(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            orders.pop(task, None)
            if not task.cancelled() and task.exception() is not None and not failed.done():
                failed.set_result(task.exception())  # type: ignore[arg-type]

        following: asyncio.Future[Any] | None = None
        try:
            while True:
                following = asyncio.ensure_future(anext(messages))
                await asyncio.wait([following, failed], return_when=asyncio.FIRST_COMPLETED)
                if failed.done():
                    raise _BatchFailed(_describe(failed.result()))
                batch = [following.result()]
                while len(messages) > 0 and len(batch) < self._settings.max_batch:
                    batch.append(await anext(messages))
                self._progress.taken(len(batch), self._clock())
                # Batches overlap, but enter the stream in the order they arrived.
                order = BatchOrder(after=order.queued if order is not None else None)
                previous = asyncio.create_task(self._process(client, batch, previous, order))
                in_flight.add(previous)
                orders[previous] = order
                previous.add_done_callback(settled)
                while len(in_flight) >= self._settings.pipeline and not failed.done():
                    watched: list[asyncio.Future[Any]] = [*in_flight, failed]
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if following is not None and not following.done():
                following.cancel()  # waiting for the next message: none is taken, none lost
                with contextlib.suppress(BaseException):
                    await following
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
        sources: list[aiomqtt.Message] = []
        foreign: list[Candidate] = []
        foreign_sources: list[aiomqtt.Message] = []
        statuses: list[tuple[StatusReport, aiomqtt.Message]] = []
        acks: list[tuple[CommandAck, aiomqtt.Message]] = []
        try:
            for message in batch:
                try:
                    await self._classify(message, candidates, sources, foreign, foreign_sources, statuses, acks)
                except MESSAGE_ERRORS as exc:
                    await self._failed(message, "decode", exc)
            if foreign and self._foreign is not None:  # other devices than the batch's own
                await self._ingest_isolated(foreign, foreign_sources, self._foreign.protocol, None)
            if candidates:
                await self._ingest_isolated(candidates, sources, "mqtt", order)
        finally:
            if order is not None and not order.queued.is_set():
                await order.done()  # no readings, or it failed before ingesting: let the next go
        for status, source in statuses:
            try:
                await self._on_status(status)
            except MESSAGE_ERRORS as exc:
                await self._failed(source, "status", exc)
        if self._on_ack is not None:
            for ack, source in acks:
                try:
                    await self._on_ack(ack)
                except MESSAGE_ERRORS as exc:
                    await self._failed(source, "command_ack", exc)
        if previous is not None:
            await previous  # a failed earlier batch fails this one: acknowledge in order or not at all
        for message in batch:
            if message.qos > 0:
                client._client.ack(message.mid, message.qos)
        self._progress.settled(len(batch), self._clock())

    async def _classify(
        self,
        message: aiomqtt.Message,
        candidates: list[Candidate],
        sources: list[aiomqtt.Message],
        foreign: list[Candidate],
        foreign_sources: list[aiomqtt.Message],
        statuses: list[tuple[StatusReport, aiomqtt.Message]],
        acks: list[tuple[CommandAck, aiomqtt.Message]],
    ) -> None:
        body = _payload(message)
        if self._foreign is not None and self._foreign.matches(message.topic.value):
            foreign.append(await self._foreign.candidate(message.topic.value, body))
            foreign_sources.append(message)
            self._metrics.mqtt_messages.labels("foreign_uplink").inc()
            return
        parsed = parse_message(message.topic.value, body, self._limits)
        identity = self._identity(message)
        if identity is not None and not isinstance(parsed, Candidate) and parsed is not None \
                and parsed.device_id != identity:
            log.warning("MQTT message for %s from %r refused: another device's topic", parsed.device_id, identity)
            self._metrics.mqtt_messages.labels("identity_mismatch").inc()
            return
        if isinstance(parsed, Candidate):
            candidates.append(replace(parsed, identity=identity) if identity is not None else parsed)
            sources.append(message)
            self._metrics.mqtt_messages.labels("telemetry").inc()
        elif isinstance(parsed, StatusReport):
            statuses.append((parsed, message))
            self._metrics.mqtt_messages.labels("status").inc()
        elif isinstance(parsed, CommandAck) and self._on_ack is not None:
            acks.append((parsed, message))
            self._metrics.mqtt_messages.labels("command_ack").inc()
        elif isinstance(parsed, MalformedAck):
            self._log_once("command_ack_malformed", "malformed command acknowledgement from %s: %s",
                           parsed.device_id, parsed.problem)
            self._metrics.mqtt_messages.labels("command_ack_malformed").inc()
        else:
            self._metrics.mqtt_messages.labels("ignored").inc()

    async def _ingest_isolated(
        self,
        candidates: list[Candidate],
        sources: list[aiomqtt.Message],
        protocol: str,
        order: BatchOrder | None,
    ) -> None:
        """Ingests the batch; if one reading in it makes ingestion raise a message error, the
        readings are ingested one by one so that only that one is dropped."""
        outcomes: list[Outcome | None]
        try:
            outcomes = list(await self._ingest.ingest(candidates, protocol, order=order))
        except MESSAGE_ERRORS:
            outcomes = []
            for i, candidate in enumerate(candidates):
                try:
                    outcomes.extend(await self._ingest.ingest([candidate], protocol))
                except MESSAGE_ERRORS as exc:
                    await self._failed(sources[i], "ingest", exc)
                    outcomes.append(None)
        if self._dead_letter is None:
            return
        for outcome, message in zip(outcomes, sources, strict=False):
            if outcome is not None and outcome.status is Status.REJECTED and outcome.reason in _UNREADABLE:
                await self._send_dead_letter(message.topic.value, _payload(message),
                                             outcome.reason.value, outcome.detail or "")

    async def _failed(
        self, message: aiomqtt.Message | None, stage: str, exc: BaseException, topic: str = ""
    ) -> None:
        """A message dropped for an error of its own: counted, logged once a minute per kind,
        dead-lettered where there is a dead-letter path."""
        error = type(exc).__name__
        self._metrics.mqtt_message_failures.labels(stage, error).inc()
        if message is not None:
            topic = message.topic.value
        self._log_once(f"{stage}:{error}", "MQTT message on %s dropped: %s failed with %s: %s",
                       topic, stage, error, str(exc)[:200])
        if message is not None:
            await self._send_dead_letter(topic, _payload(message), f"{stage}_failed", _describe(exc))

    async def _send_dead_letter(self, topic: str, payload: bytes, reason: str, error: str) -> None:
        if self._dead_letter is None:
            return
        try:
            await self._dead_letter(topic, payload, reason, error)
        except Exception as exc:  # the message is counted and logged already; never fail for it
            self._log_once("dead_letter", "dead-lettering an MQTT message failed: %s", _describe(exc))

    def _log_once(self, kind: str, text: str, *args: object) -> None:
        """One line per kind of trouble a minute: a flood of bad messages cannot flood the log."""
        now = self._clock()
        if now - self._logged.get(kind, -1e9) >= 60:
            self._logged[kind] = now
            log.warning(text, *args)


@dataclass
class _Progress:
    since: float
    """When a message was last settled, or when messages began waiting after none did."""
    waiting: int = 0

    def taken(self, count: int, now: float) -> None:
        if self.waiting == 0:
            self.since = now
        self.waiting += count

    def settled(self, count: int, now: float) -> None:
        self.waiting = max(0, self.waiting - count)
        self.since = now


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return payload if isinstance(payload, bytes) else str(payload).encode()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class _BatchFailed(Exception):
    pass

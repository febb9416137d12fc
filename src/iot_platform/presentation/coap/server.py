"""CoAP telemetry (aiocoap server, UDP): constrained devices feed the one ingestion use case.

``POST /devices/{id}/telemetry`` and ``POST /sensors`` (the device id inside the payload), in the
flat or envelope form of the MQTT contract, as CBOR (content-format 60) or JSON (50; also
assumed when a request names no format). Answers:

- 2.01 Created: stored (or a duplicate of a stored reading; the payload says which);
- 4.00 Bad Request: undecodable or invalid, the diagnostic payload says why;
- 4.04 Not Found: unknown device, or a path that is not one of the above;
- 4.13 Request Entity Too Large: over ``telemetry.max_payload_bytes``;
- 4.15 Unsupported Content-Format: anything but CBOR or JSON;
- 4.01 Unauthorized: requests without OSCORE when ``coap.allow_unauthenticated`` is off (the
  OSCORE site wrapper answers 4.01 itself for an unknown security context);
- 4.03 Forbidden: an OSCORE-authenticated device asking for another device's resources;
- 5.03 Service Unavailable: the stream could not take the reading (the device retries).

Duplicates of one message (a retransmitted confirmable, or a repeated non-confirmable, with the
same message id from the same endpoint) are answered from aiocoap's message deduplication, and
never reach ingestion twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Protocol

import aiocoap
import aiocoap.resource as resource
import cbor2
from aiocoap.numbers.codes import Code
from aiocoap.numbers.contentformat import ContentFormat
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from iot_platform.application.commands.commands import AcknowledgeCommand, CommandMessage
from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.handlers import CommandHandler
from iot_platform.application.errors import NotFound
from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.application.telemetry.model import Candidate, Outcome, Rejection, Status
from iot_platform.domain.commands import CommandStatus
from iot_platform.domain.errors import DomainError
from iot_platform.presentation.mqtt.contract import (
    MalformedAck,
    candidate_from_body,
    command_ack_from_body,
    undecodable,
)
from iot_platform.presentation.wire import WireError

log = logging.getLogger(__name__)

_TEXT = ContentFormat.TEXT
_REJECTION_CODES = {Rejection.UNKNOWN_DEVICE: Code.NOT_FOUND, Rejection.PAYLOAD_TOO_LARGE: Code.REQUEST_ENTITY_TOO_LARGE,
                    Rejection.IDENTITY_MISMATCH: Code.FORBIDDEN}
_UNAUTHENTICATED = "this CoAP endpoint needs a device authenticated with OSCORE"


class OscoreContexts(Protocol):
    """The per-device OSCORE contexts: aiocoap's credentials map, and their reload."""

    credentials: Any

    async def load(self) -> int: ...


def identity(request: aiocoap.Message) -> str | None:
    """The device an OSCORE-protected request came from (its security context's claim)."""
    claims = getattr(request.remote, "authenticated_claims", None) or []
    return str(claims[0]) if claims else None


def _refusal_for(request: aiocoap.Message, device_id: str, open_access: bool) -> aiocoap.Message | None:
    """4.01 without authentication where it is required; 4.03 for another device's path."""
    who = identity(request)
    if who is None:
        return None if open_access else _answer(Code.UNAUTHORIZED, _UNAUTHENTICATED)
    if who != device_id:
        return _answer(Code.FORBIDDEN, f"authenticated as {who!r}, not {device_id!r}")
    return None


def _answer(code: Code, text: str) -> aiocoap.Message:
    return aiocoap.Message(code=code, payload=text.encode(), content_format=_TEXT)


def _decode(request: aiocoap.Message) -> Any:
    """The payload as CBOR or JSON; raises ``_Refusal`` for any other format or bad bytes."""
    fmt = request.opt.content_format
    try:
        if fmt == ContentFormat.CBOR:
            return cbor2.loads(request.payload)
        if fmt is None or fmt == ContentFormat.JSON:
            return json.loads(request.payload)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError, UnicodeDecodeError) as exc:
        kind = "CBOR" if fmt == ContentFormat.CBOR else "JSON"
        raise _Refusal(Code.BAD_REQUEST, f"undecodable {kind}: {exc}") from None
    raise _Refusal(Code.UNSUPPORTED_CONTENT_FORMAT,
                   f"content-format {int(fmt)} is not supported: send CBOR (60) or JSON (50)")


class _Refusal(Exception):
    def __init__(self, code: Code, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _Telemetry:
    """What both telemetry resources share: checks, ingestion, the answer."""

    def __init__(self, ingest: IngestTelemetry, max_payload_bytes: int, allow_unauthenticated: bool) -> None:
        self._ingest = ingest
        self._max = max_payload_bytes
        self.open = allow_unauthenticated
        """Requests without OSCORE are served too (authenticated ones are always confined to
        their own device)."""

    async def post(self, request: aiocoap.Message, device_id: str | None) -> aiocoap.Message:
        try:
            who = identity(request)
            if who is None and not self.open:
                raise _Refusal(Code.UNAUTHORIZED, _UNAUTHENTICATED)
            size = len(request.payload)
            if size > self._max:
                raise _Refusal(Code.REQUEST_ENTITY_TOO_LARGE, f"payload of {size} bytes is over {self._max}")
            body = _decode(request)
            if device_id is None:
                device_id = body.get("device_id") if isinstance(body, dict) else None
                if not isinstance(device_id, str) or not device_id:
                    raise _Refusal(Code.BAD_REQUEST, "POST /sensors needs a device_id in the payload")
            candidate = self._candidate(body, device_id, size)
            try:
                [outcome] = await self._ingest.ingest([candidate], "coap", authenticated_device=who)
            except Exception as exc:  # the stream could not take it: nothing stored, retry
                log.warning("CoAP reading of %s not handed on: %s", device_id, exc)
                raise _Refusal(Code.SERVICE_UNAVAILABLE, "the reading could not be stored; retry") from None
            return self._answer(outcome)
        except _Refusal as refusal:
            return _answer(refusal.code, refusal.text)

    @staticmethod
    def _candidate(body: Any, device_id: str, size: int) -> Candidate:
        try:
            return candidate_from_body(body, device_id, size)
        except WireError as exc:
            return undecodable(device_id, size, exc)

    @staticmethod
    def _answer(outcome: Outcome) -> aiocoap.Message:
        if outcome.status is Status.STORED:
            return _answer(Code.CREATED, "stored")
        if outcome.status is Status.DUPLICATE:
            return _answer(Code.CREATED, "duplicate")
        reason = outcome.reason or Rejection.UNDECODABLE
        detail = f"{reason.value}: {outcome.detail}" if outcome.detail else reason.value
        return _answer(_REJECTION_CODES.get(reason, Code.BAD_REQUEST), detail)


class SensorsResource(resource.Resource):  # type: ignore[misc]  # aiocoap is untyped
    """``POST /sensors``: the device id is in the payload."""

    def __init__(self, telemetry: _Telemetry) -> None:
        super().__init__()
        self._telemetry = telemetry

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self._telemetry.post(request, None)


class DevicesResource(resource.ObservableResource, resource.PathCapable):  # type: ignore[misc]
    """``/devices/{id}/...``: ``POST telemetry``, ``GET commands`` (observable), ``POST
    commands/ack``.

    ``GET commands`` answers the device's pending commands, marked sent on the ``coap``
    channel. With Observe, each later command is pushed as a notification as soon as it is
    issued (a long poll per observation, ended with it).
    """

    def __init__(self, telemetry: _Telemetry, commands: CoapCommands | None) -> None:
        super().__init__()
        self._telemetry = telemetry
        self._commands = commands

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        path = request.opt.uri_path
        if len(path) == 2 and path[1] == "telemetry" and path[0]:
            return await self._telemetry.post(request, path[0])
        if len(path) == 3 and path[1:] == ("commands", "ack") and self._commands is not None:
            refused = _refusal_for(request, path[0], self._telemetry.open)
            return refused or await self._commands.acknowledge(request, path[0])
        return _answer(Code.NOT_FOUND, "no such resource: POST /devices/{id}/telemetry or /devices/{id}/commands/ack")

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        device_id = self._commands_of(request)
        if device_id is None or self._commands is None:
            return _answer(Code.NOT_FOUND, "no such resource: GET /devices/{id}/commands")
        refused = _refusal_for(request, device_id, self._telemetry.open)
        return refused or await self._commands.pending(request, device_id)

    async def add_observation(self, request: aiocoap.Message, observation: Any) -> None:
        device_id = self._commands_of(request)
        if device_id is None or self._commands is None or _refusal_for(request, device_id, self._telemetry.open):
            return  # not observable: the answer is sent without Observe
        follow = asyncio.get_running_loop().create_task(self._commands.follow(request, device_id, observation))
        observation.accept(follow.cancel)

    @staticmethod
    def _commands_of(request: aiocoap.Message) -> str | None:
        path = request.opt.uri_path
        return path[0] if len(path) == 2 and path[1] == "commands" and path[0] else None


class CoapCommands:
    """Device commands over CoAP, for devices that poll or observe instead of keeping an MQTT
    session: the same delivery (``CommandDelivery.poll``) and acknowledgement as HTTP."""

    def __init__(self, delivery: CommandDelivery, handler: CommandHandler, wait: float = 30.0) -> None:
        self._delivery = delivery
        self._handler = handler
        self._wait = wait

    async def pending(self, request: aiocoap.Message, device_id: str) -> aiocoap.Message:
        return self._listing(request, await self._delivery.poll(device_id, 0, channel="coap"))

    async def follow(self, request: aiocoap.Message, device_id: str, observation: Any) -> None:
        """Pushes each command to one observer once, as soon as it is pending, until the
        observer goes away. (Its first notification may repeat what the registration's answer
        carried: devices tolerate a repeated command id, as on MQTT.)"""
        given: set[str] = set()
        while True:
            try:
                messages = await self._delivery.poll(device_id, self._wait, channel="coap", exclude=given)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round tries again; the commands stay pending
                log.exception("CoAP command delivery to %s failed", device_id)
                await asyncio.sleep(1.0)
                continue
            if messages:
                given.update(m.command_id for m in messages)
                observation.trigger(self._listing(request, messages))

    async def acknowledge(self, request: aiocoap.Message, device_id: str) -> aiocoap.Message:
        try:
            body = _decode(request)
        except _Refusal as refusal:
            return _answer(refusal.code, refusal.text)
        ack = command_ack_from_body(device_id, body)
        if isinstance(ack, MalformedAck):
            return _answer(Code.BAD_REQUEST, ack.problem)
        try:
            await self._handler.acknowledge(
                AcknowledgeCommand(device_id, ack.command_id, CommandStatus(ack.status), ack.result))
        except NotFound as exc:
            return _answer(Code.NOT_FOUND, str(exc))
        except DomainError as exc:
            return _answer(Code.CONFLICT, str(exc))
        return _answer(Code.CHANGED, "acknowledged")

    @staticmethod
    def _listing(request: aiocoap.Message, messages: list[CommandMessage]) -> aiocoap.Message:
        body = {"commands": [m.payload() for m in messages]}
        if request.opt.accept == ContentFormat.CBOR:
            return aiocoap.Message(code=Code.CONTENT, payload=cbor2.dumps(body), content_format=ContentFormat.CBOR)
        return aiocoap.Message(code=Code.CONTENT, payload=json.dumps(body).encode(), content_format=ContentFormat.JSON)


class CoapIngestion:
    """The CoAP listener; ``start`` binds UDP ``host:port``, ``stop`` releases it."""

    def __init__(self, host: str, port: int, ingest: IngestTelemetry, max_payload_bytes: int,
                 allow_unauthenticated: bool, commands: CoapCommands | None = None,
                 oscore: OscoreContexts | None = None, refresh_seconds: float = 5.0) -> None:
        self._bind = (host, port)
        telemetry = _Telemetry(ingest, max_payload_bytes, allow_unauthenticated)
        site = resource.Site()
        site.add_resource(["sensors"], SensorsResource(telemetry))
        site.add_resource(["devices"], DevicesResource(telemetry, commands))
        self._oscore = oscore
        self._site = site if oscore is None else OscoreSiteWrapper(site, oscore.credentials)
        self._refresh_seconds = refresh_seconds
        self._refresh: asyncio.Task[None] | None = None
        self._context: aiocoap.Context | None = None

    async def start(self) -> None:
        try:
            # UDP only: aiocoap would otherwise also open CoAP over TCP, TLS and WebSockets.
            self._context = await aiocoap.Context.create_server_context(
                self._site, bind=self._bind, transports=["udp6"])
        except OSError as exc:
            raise RuntimeError(
                f"the CoAP listener cannot bind UDP {self._bind[0]}:{self._bind[1]} ({exc}): set "
                "coap.port to a free port, or coap.enabled: false"
            ) from exc
        if self._oscore is not None:
            count = await self._oscore.load()
            log.info("CoAP listening on udp %s:%d (OSCORE contexts: %d)", *self._bind, count)
            self._refresh = asyncio.get_running_loop().create_task(self._follow_contexts(self._oscore))
        else:
            log.info("CoAP listening on udp %s:%d", *self._bind)

    async def _follow_contexts(self, oscore: OscoreContexts) -> None:
        """Contexts provisioned by other platform processes are picked up within a while."""
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await oscore.load()
            except Exception:  # the next round tries again
                log.exception("reloading OSCORE contexts failed")

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self._context is not None:
            await self._context.shutdown()
            self._context = None

"""CoAP telemetry (aiocoap server, UDP): constrained devices feed the one ingestion use case.

``POST /devices/{id}/telemetry`` and ``POST /sensors`` (the device id inside the payload), in the
flat or envelope form of the MQTT contract, as CBOR (content-format 60) or JSON (50; also
assumed when a request names no format). Answers:

- 2.01 Created: stored (or a duplicate of a stored reading; the payload says which);
- 4.00 Bad Request: undecodable or invalid (bad bytes, nested deeper than
  ``telemetry.max_nesting_depth``, a bad option), the diagnostic payload says why;
- 4.04 Not Found: unknown device, or a path that is not one of the above;
- 4.13 Request Entity Too Large: over ``telemetry.max_payload_bytes``;
- 4.15 Unsupported Content-Format: anything but CBOR or JSON;
- 4.01 Unauthorized: requests with neither OSCORE nor a valid ``?token=`` while anonymous
  devices are not admitted (the OSCORE site wrapper answers 4.01 itself for an unknown
  security context);
- 4.03 Forbidden: an authenticated device asking for another device's resources, or a token
  whose roles do not grant the request;
- 5.03 Service Unavailable: the stream could not take the reading (the device retries).

Credentials: OSCORE (a per-device security context), or a URI query ``token=<credential>``
carrying what a device presents over HTTP (its device API key ``iotk_...``, or a bearer token),
checked by the same access service: ``coap://host/devices/d1/telemetry?token=iotk_...``.
Anonymous requests are served only while ``coap.allow_unauthenticated`` is on,
``security.allow_anonymous_devices`` is ``loopback`` and the listener is on a loopback address.

Every refusal of a reading is counted in ``iot_readings_rejected_total{protocol="coap",reason}``.

Duplicates of one message (a retransmitted confirmable, or a repeated non-confirmable, with the
same message id from the same endpoint) are answered from aiocoap's message deduplication, and
never reach ingestion twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiocoap
import aiocoap.message
import aiocoap.resource as resource
import cbor2
from aiocoap.error import BadRequest, UnparsableMessage
from aiocoap.numbers.codes import Code
from aiocoap.numbers.contentformat import ContentFormat
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from iot_platform.application.access.model import Principal
from iot_platform.application.commands.commands import AcknowledgeCommand, CommandMessage
from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.handlers import CommandHandler
from iot_platform.application.errors import NotFound
from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.application.telemetry.model import Candidate, Outcome, Rejection, Status
from iot_platform.domain.commands import CommandStatus
from iot_platform.domain.errors import DomainError
from iot_platform.presentation.log_limits import OncePerInterval, OncePerIntervalFilter
from iot_platform.presentation.mqtt.contract import (
    MalformedAck,
    candidate_from_body,
    command_ack_from_body,
    undecodable,
)
from iot_platform.presentation.payloads import DEFAULT_LIMITS, PayloadLimits, PayloadRejected, decode_cbor, decode_json
from iot_platform.presentation.wire import WireError

log = logging.getLogger(__name__)

_TEXT = ContentFormat.TEXT
_REJECTION_CODES = {Rejection.UNKNOWN_DEVICE: Code.NOT_FOUND, Rejection.PAYLOAD_TOO_LARGE: Code.REQUEST_ENTITY_TOO_LARGE,
                    Rejection.IDENTITY_MISMATCH: Code.FORBIDDEN,
                    Rejection.THROTTLED: Code.TOO_MANY_REQUESTS}  # 4.29, RFC 8516
_UNAUTHENTICATED = "this CoAP endpoint needs a device credential: OSCORE, or ?token=<device token or API key>"
_failed = OncePerInterval(log)

Authenticate = Callable[[str], Awaitable[Principal | None]]
"""A bearer credential (API key or token) -> who presents it, or None (the access service)."""
Rejected = Callable[[Rejection], None]


class OscoreContexts(Protocol):
    """The per-device OSCORE contexts: aiocoap's credentials map, and their reload."""

    credentials: Any

    async def load(self) -> int: ...


_unparsable: list[Callable[[], None]] = []
"""Called for each datagram that is no CoAP message (the listeners' counters)."""


def _tolerate_bad_options() -> None:
    """aiocoap 0.4.17 decodes string options (Uri-Path, Uri-Query...) as strict UTF-8 and lets
    the ``UnicodeDecodeError`` of one that is not (a Uri-Path of 0xff) escape its datagram
    callback: a traceback in the log per datagram, which anyone can send (aiocoap issues #176
    and #417, open). Made its own ``UnparsableMessage``, the datagram is dropped like every
    other unparsable one; each is counted. Installed once per process, before the first
    listener starts."""
    decode = aiocoap.message.Message.__dict__["decode"]
    if getattr(decode.__func__, "tolerant", False):
        return
    original = decode.__func__

    def tolerant(cls: type[aiocoap.Message], rawdata: bytes, remote: Any = None) -> aiocoap.Message:
        try:
            return original(cls, rawdata, remote)
        except UnparsableMessage:
            for count in _unparsable:
                count()
            raise
        except Exception as exc:  # a bad option value: the message cannot be read
            for count in _unparsable:
                count()
            raise UnparsableMessage(f"bad option: {type(exc).__name__}: {exc}") from None

    tolerant.tolerant = True  # type: ignore[attr-defined]
    aiocoap.message.Message.decode = classmethod(tolerant)


_AIOCOAP_LOGS = OncePerIntervalFilter(level=logging.INFO)
"""aiocoap's server logs a line per unparsable datagram or refused request: one per kind a
minute is kept."""


class _Site(resource.Site):  # type: ignore[misc]  # aiocoap is untyped
    """aiocoap's site, answering a request whose options aiocoap itself cannot process (a
    Block1 option that contradicts the message: ``ValueError`` from its blockwise assembly)
    with 4.00 instead of 5.00 and a traceback."""

    def __init__(self, rejected: Rejected) -> None:
        super().__init__()
        self._rejected = rejected

    async def render_to_pipe(self, pipe: Any) -> Any:
        try:
            return await super().render_to_pipe(pipe)
        except ValueError as exc:
            self._rejected(Rejection.UNDECODABLE)
            _failed("bad_option", "CoAP request refused: bad option (%s: %s)", type(exc).__name__, exc)
            raise BadRequest(f"bad option: {exc or type(exc).__name__}") from None


def identity(request: aiocoap.Message) -> str | None:
    """The device an OSCORE-protected request came from (its security context's claim)."""
    claims = getattr(request.remote, "authenticated_claims", None) or []
    return str(claims[0]) if claims else None


def _answer(code: Code, text: str) -> aiocoap.Message:
    return aiocoap.Message(code=code, payload=text.encode(), content_format=_TEXT)


class _Refusal(Exception):
    """An answer other than success; ``reason`` counts it as a rejected reading (if any)."""

    def __init__(self, code: Code, text: str, reason: Rejection | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.reason = reason


def _options(request: aiocoap.Message) -> tuple[Any, Any, tuple[str, ...]]:
    """(content format, accept, URI query) of a request; a bad option is a 4.00, not a 5.00."""
    try:
        return request.opt.content_format, request.opt.accept, tuple(request.opt.uri_query)
    except (ValueError, TypeError, LookupError, UnicodeError, OverflowError) as exc:
        raise _Refusal(Code.BAD_REQUEST, f"bad option: {exc}", Rejection.UNDECODABLE) from None


def _decode(request: aiocoap.Message, limits: PayloadLimits) -> Any:
    """The payload as CBOR or JSON, bounded by ``limits`` (size, nesting depth, values); raises
    ``_Refusal`` for any other format, bad bytes or a payload past a limit."""
    fmt, _, _ = _options(request)
    try:
        if fmt == ContentFormat.CBOR:
            return decode_cbor(request.payload, limits)
        if fmt is None or fmt == ContentFormat.JSON:
            return decode_json(request.payload, limits)
    except PayloadRejected as exc:
        kind = "CBOR" if fmt == ContentFormat.CBOR else "JSON"
        code = Code.REQUEST_ENTITY_TOO_LARGE if exc.reason is Rejection.PAYLOAD_TOO_LARGE else Code.BAD_REQUEST
        raise _Refusal(code, f"undecodable {kind}: {exc}", exc.reason) from None
    raise _Refusal(Code.UNSUPPORTED_CONTENT_FORMAT,
                   f"content-format {int(fmt)} is not supported: send CBOR (60) or JSON (50)",
                   Rejection.UNSUPPORTED_FORMAT)


@dataclass(frozen=True)
class _Caller:
    """Who sent a request: an OSCORE identity, a credential's principal, or nobody."""

    device: str | None = None
    """The one device it may act for (OSCORE, or a device credential); None: any the
    principal's roles allow, or anonymous."""
    principal: Principal | None = None

    def admit(self, device_id: str, permission: str) -> None:
        """Raises a 4.03 unless the caller may do ``permission`` for ``device_id``."""
        if self.principal is not None and not self.principal.may(permission):
            raise _Refusal(Code.FORBIDDEN, f"the token does not grant {permission}", Rejection.IDENTITY_MISMATCH)
        if self.principal is not None and self.device is None and "device" in self.principal.roles:
            # a device credential bound to no device acts for none
            raise _Refusal(Code.FORBIDDEN, "the token is a device credential bound to no device",
                           Rejection.IDENTITY_MISMATCH)
        if self.device is not None and self.device != device_id:
            raise _Refusal(Code.FORBIDDEN, f"authenticated as {self.device!r}, not {device_id!r}",
                           Rejection.IDENTITY_MISMATCH)


class DeviceAccess:
    """Who a CoAP request comes from: OSCORE, a ``token=`` URI query, or anonymous (only if
    ``anonymous``)."""

    def __init__(self, anonymous: bool, authenticate: Authenticate | None = None) -> None:
        self.anonymous = anonymous
        self.authenticate = authenticate

    async def caller(self, request: aiocoap.Message) -> _Caller:
        """Raises a 4.01 for a missing or invalid credential, a 5.03 if it cannot be checked."""
        oscore = identity(request)
        if oscore is not None:
            return _Caller(device=oscore)
        _, _, query = _options(request)
        tokens = [q[len("token="):] for q in query if q.startswith("token=")]
        if tokens:
            principal = None
            if self.authenticate is not None and len(tokens) == 1 and tokens[0]:
                try:
                    principal = await self.authenticate(tokens[0])
                except Exception as exc:  # the key store is down: the device retries
                    _failed("authenticate", "CoAP credential not checked: %s: %s", type(exc).__name__, exc)
                    raise _Refusal(Code.SERVICE_UNAVAILABLE, "the credential could not be checked; retry") from None
            if principal is None:
                raise _Refusal(Code.UNAUTHORIZED, "the token is not valid (unknown, revoked or expired)",
                               Rejection.UNAUTHENTICATED)
            return _Caller(device=principal.device_id, principal=principal)
        if not self.anonymous:
            raise _Refusal(Code.UNAUTHORIZED, _UNAUTHENTICATED, Rejection.UNAUTHENTICATED)
        return _Caller()


async def _refusing(answer: Awaitable[aiocoap.Message]) -> aiocoap.Message:
    """The answer, or the refusal's answer (not a rejected reading: commands only)."""
    try:
        return await answer
    except _Refusal as refusal:
        return _answer(refusal.code, refusal.text)


class _Telemetry:
    """What both telemetry resources share: checks, ingestion, the answer."""

    def __init__(self, ingest: IngestTelemetry, max_payload_bytes: int, access: DeviceAccess,
                 limits: PayloadLimits, rejected: Rejected) -> None:
        self._ingest = ingest
        self._max = max_payload_bytes
        self.access = access
        self.limits = limits
        self.rejected = rejected

    async def post(self, request: aiocoap.Message, device_id: str | None) -> aiocoap.Message:
        try:
            caller = await self.access.caller(request)
            if device_id is not None:
                caller.admit(device_id, "telemetry:write")
            size = len(request.payload)
            if size > self._max:
                raise _Refusal(Code.REQUEST_ENTITY_TOO_LARGE, f"payload of {size} bytes is over {self._max}",
                               Rejection.PAYLOAD_TOO_LARGE)
            body = _decode(request, self.limits)
            if device_id is None:
                device_id = body.get("device_id") if isinstance(body, dict) else None
                if not isinstance(device_id, str) or not device_id:
                    raise _Refusal(Code.BAD_REQUEST, "POST /sensors needs a device_id in the payload",
                                   Rejection.UNDECODABLE)
                caller.admit(device_id, "telemetry:write")
            candidate = self._candidate(body, device_id, size)
            try:
                [outcome] = await self._ingest.ingest([candidate], "coap", authenticated_device=caller.device)
            except Exception as exc:  # the stream could not take it: nothing stored, retry
                log.warning("CoAP reading of %s not handed on: %s", device_id, exc)
                raise _Refusal(Code.SERVICE_UNAVAILABLE, "the reading could not be stored; retry") from None
            return self._answer(outcome)
        except _Refusal as refusal:
            if refusal.reason is not None:
                self.rejected(refusal.reason)
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
            return await _refusing(self._acknowledge(request, path[0]))
        return _answer(Code.NOT_FOUND, "no such resource: POST /devices/{id}/telemetry or /devices/{id}/commands/ack")

    async def _acknowledge(self, request: aiocoap.Message, device_id: str) -> aiocoap.Message:
        assert self._commands is not None
        (await self._telemetry.access.caller(request)).admit(device_id, "commands:receive")
        return await self._commands.acknowledge(request, device_id, self._telemetry.limits)

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        device_id = self._commands_of(request)
        if device_id is None or self._commands is None:
            return _answer(Code.NOT_FOUND, "no such resource: GET /devices/{id}/commands")
        return await _refusing(self._pending(request, device_id))

    async def _pending(self, request: aiocoap.Message, device_id: str) -> aiocoap.Message:
        assert self._commands is not None
        (await self._telemetry.access.caller(request)).admit(device_id, "commands:receive")
        return await self._commands.pending(request, device_id)

    async def add_observation(self, request: aiocoap.Message, observation: Any) -> None:
        device_id = self._commands_of(request)
        if device_id is None or self._commands is None:
            return  # not observable: the answer is sent without Observe
        try:
            (await self._telemetry.access.caller(request)).admit(device_id, "commands:receive")
        except _Refusal:
            return  # render_get answers why
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

    async def acknowledge(self, request: aiocoap.Message, device_id: str,
                          limits: PayloadLimits = DEFAULT_LIMITS) -> aiocoap.Message:
        try:
            body = _decode(request, limits)
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
                 oscore: OscoreContexts | None = None, refresh_seconds: float = 5.0, *,
                 limits: PayloadLimits | None = None, rejected: Rejected | None = None,
                 authenticate: Authenticate | None = None, unparsable: Callable[[], None] | None = None) -> None:
        """``allow_unauthenticated``: serve requests with neither OSCORE nor a token (the
        composition root decides it from the settings: ``config.anonymous_coap``)."""
        self._bind = (host, port)
        self._unparsable = unparsable or (lambda: None)
        self._access = DeviceAccess(allow_unauthenticated, authenticate)
        count = rejected or (lambda reason: None)
        telemetry = _Telemetry(ingest, max_payload_bytes, self._access,
                               limits or PayloadLimits(max_bytes=max_payload_bytes), count)
        site = _Site(count)
        site.add_resource(["sensors"], SensorsResource(telemetry))
        site.add_resource(["devices"], DevicesResource(telemetry, commands))
        self._oscore = oscore
        self._site = site if oscore is None else OscoreSiteWrapper(site, oscore.credentials)
        self._refresh_seconds = refresh_seconds
        self._refresh: asyncio.Task[None] | None = None
        self._context: aiocoap.Context | None = None

    @property
    def authenticate(self) -> Authenticate | None:
        return self._access.authenticate

    @authenticate.setter
    def authenticate(self, authenticate: Authenticate | None) -> None:
        """How ``?token=`` credentials are checked (the access service, set once it is built)."""
        self._access.authenticate = authenticate

    async def start(self) -> None:
        _tolerate_bad_options()
        _unparsable.append(self._unparsable)
        logging.getLogger("coap-server").addFilter(_AIOCOAP_LOGS)
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
        if self._unparsable in _unparsable:
            _unparsable.remove(self._unparsable)
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self._context is not None:
            await self._context.shutdown()
            self._context = None

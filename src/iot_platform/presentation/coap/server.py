"""CoAP telemetry (aiocoap server, UDP): constrained devices feed the one ingestion use case.

``POST /devices/{id}/telemetry`` and ``POST /sensors`` (the device id inside the payload), in the
flat or envelope form of the MQTT contract, as CBOR (content-format 60) or JSON (50; also
assumed when a request names no format). Answers:

- 2.01 Created: stored (or a duplicate of a stored reading; the payload says which);
- 4.00 Bad Request: undecodable or invalid, the diagnostic payload says why;
- 4.04 Not Found: unknown device, or a path that is not one of the above;
- 4.13 Request Entity Too Large: over ``telemetry.max_payload_bytes``;
- 4.15 Unsupported Content-Format: anything but CBOR or JSON;
- 4.01 Unauthorized: unauthenticated requests when ``coap.allow_unauthenticated`` is off;
- 5.03 Service Unavailable: the stream could not take the reading (the device retries).

Duplicates of one message (a retransmitted confirmable, or a repeated non-confirmable, with the
same message id from the same endpoint) are answered from aiocoap's message deduplication, and
never reach ingestion twice.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiocoap
import aiocoap.resource as resource
import cbor2
from aiocoap.numbers.codes import Code
from aiocoap.numbers.contentformat import ContentFormat

from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.application.telemetry.model import Candidate, Outcome, Rejection, Status
from iot_platform.presentation.mqtt.contract import candidate_from_body, undecodable
from iot_platform.presentation.wire import WireError

log = logging.getLogger(__name__)

_TEXT = ContentFormat.TEXT
_REJECTION_CODES = {Rejection.UNKNOWN_DEVICE: Code.NOT_FOUND, Rejection.PAYLOAD_TOO_LARGE: Code.REQUEST_ENTITY_TOO_LARGE}


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
        self._open = allow_unauthenticated

    async def post(self, request: aiocoap.Message, device_id: str | None) -> aiocoap.Message:
        try:
            if not self._open:
                raise _Refusal(Code.UNAUTHORIZED, "this CoAP endpoint needs an authenticated device")
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
                [outcome] = await self._ingest.ingest([candidate], "coap")
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


class DevicesResource(resource.Resource, resource.PathCapable):  # type: ignore[misc]
    """``/devices/{id}/...``: ``POST /devices/{id}/telemetry``."""

    def __init__(self, telemetry: _Telemetry) -> None:
        super().__init__()
        self._telemetry = telemetry

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        path = request.opt.uri_path
        if len(path) == 2 and path[1] == "telemetry" and path[0]:
            if request.code != Code.POST:
                return _answer(Code.METHOD_NOT_ALLOWED, "POST readings to /devices/{id}/telemetry")
            return await self._telemetry.post(request, path[0])
        return _answer(Code.NOT_FOUND, "no such resource: /devices/{id}/telemetry takes readings")


class CoapIngestion:
    """The CoAP listener; ``start`` binds UDP ``host:port``, ``stop`` releases it."""

    def __init__(self, host: str, port: int, ingest: IngestTelemetry, max_payload_bytes: int,
                 allow_unauthenticated: bool) -> None:
        self._bind = (host, port)
        telemetry = _Telemetry(ingest, max_payload_bytes, allow_unauthenticated)
        self._site = resource.Site()
        self._site.add_resource(["sensors"], SensorsResource(telemetry))
        self._site.add_resource(["devices"], DevicesResource(telemetry))
        self._context: aiocoap.Context | None = None

    async def start(self) -> None:
        try:
            self._context = await aiocoap.Context.create_server_context(self._site, bind=self._bind)
        except OSError as exc:
            raise RuntimeError(
                f"the CoAP listener cannot bind UDP {self._bind[0]}:{self._bind[1]} ({exc}): set "
                "coap.port to a free port, or coap.enabled: false"
            ) from exc
        log.info("CoAP listening on udp %s:%d", *self._bind)

    async def stop(self) -> None:
        if self._context is not None:
            await self._context.shutdown()
            self._context = None

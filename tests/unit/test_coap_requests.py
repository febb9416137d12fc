"""CoAP requests are decoded with limits and refused with a 4.xx that says why, counted by
reason, never a 5.00; and a device is who its credential says it is:
OSCORE, or a ``?token=`` checked by the access service (defect 6).

The resource logic runs here on hand-built ``aiocoap.Message`` objects with a recording
ingestion port; the e2e tests drive the same through a real listener with real clients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aiocoap
import cbor2
import pytest
from aiocoap.numbers.codes import Code
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from iot_platform.application.access.model import Principal
from iot_platform.application.telemetry.model import Candidate, Outcome, Rejection, Status
from iot_platform.config import Settings, anonymous_coap, is_loopback
from iot_platform.presentation.coap.server import DeviceAccess, _Telemetry
from iot_platform.presentation.log_limits import OncePerIntervalFilter
from iot_platform.presentation.payloads import PayloadLimits

DEEP_JSON = b'{"x":' + b"[" * 1000 + b"]" * 1000 + b"}"
DEEP_CBOR = b"\xa1\x61x" + b"\x81" * 1000 + b"\x01"
DEVICE_KEY = "iotk_k1_device-secret"
UNBOUND = "unbound-device-user-token"
FLEET_KEY = "iotk_k2_fleet-secret"


class RecordingIngest:
    def __init__(self) -> None:
        self.candidates: list[tuple[Candidate, str | None]] = []

    async def ingest(self, candidates: Sequence[Candidate], protocol: str,
                     authenticated_device: str | None = None) -> list[Outcome]:
        self.candidates += [(c, authenticated_device) for c in candidates]
        return [Outcome(c.device_id, None, Status.STORED) if c.rejection is None
                else Outcome(c.device_id, None, Status.REJECTED, c.rejection, c.detail) for c in candidates]


async def authenticate(credential: str) -> Principal | None:
    return {DEVICE_KEY: Principal("apikey:d1", frozenset({"device"}), "d1"),
            FLEET_KEY: Principal("apikey:fleet", frozenset({"fleet_manager"})),
            UNBOUND: Principal("user:dev", frozenset({"device"}))}.get(credential)


def telemetry(anonymous: bool = True) -> tuple[_Telemetry, RecordingIngest, list[Rejection]]:
    ingest, rejected = RecordingIngest(), list[Rejection]()
    resource = _Telemetry(ingest, 65536, DeviceAccess(anonymous, authenticate),  # type: ignore[arg-type]
                          PayloadLimits(max_bytes=65536, max_depth=32, max_items=10_000), rejected.append)
    return resource, ingest, rejected


def post(payload: bytes, content_format: int | None = 50, query: tuple[str, ...] = ()) -> aiocoap.Message:
    message = aiocoap.Message(code=aiocoap.POST, payload=payload, uri_query=query)
    if content_format is not None:
        message.opt.content_format = content_format
    return message


@pytest.mark.asyncio
@pytest.mark.parametrize(("payload", "content_format"), [(DEEP_JSON, 50), (DEEP_CBOR, 60)], ids=["json", "cbor"])
async def test_a_deeply_nested_payload_is_a_4_00_counted_as_nested_too_deep(payload: bytes, content_format: int) -> None:
    resource, ingest, rejected = telemetry()
    answer = await resource.post(post(payload, content_format), "d1")
    assert answer.code == Code.BAD_REQUEST
    assert "nested deeper than 32" in answer.payload.decode()
    assert rejected == [Rejection.NESTING_TOO_DEEP]
    assert ingest.candidates == []


class ThrottlingIngest(RecordingIngest):
    async def ingest(self, candidates: Sequence[Candidate], protocol: str,
                     authenticated_device: str | None = None) -> list[Outcome]:
        return [Outcome(c.device_id, None, Status.REJECTED, Rejection.THROTTLED, "over its reading budget")
                for c in candidates]


@pytest.mark.asyncio
async def test_a_device_over_its_reading_budget_is_told_4_29_too_many_requests() -> None:
    resource = _Telemetry(ThrottlingIngest(), 65536, DeviceAccess(True, authenticate),  # type: ignore[arg-type]
                          PayloadLimits(), lambda _: None)
    answer = await resource.post(post(b'{"temperature": 1}'), "d1")
    assert answer.code == Code.TOO_MANY_REQUESTS
    assert answer.payload.decode().startswith("throttled")


@pytest.mark.asyncio
async def test_a_format_that_is_neither_json_nor_cbor_is_a_4_15_counted() -> None:
    resource, _, rejected = telemetry()
    answer = await resource.post(post(b"21.5", 0), "d1")
    assert answer.code == Code.UNSUPPORTED_CONTENT_FORMAT
    assert rejected == [Rejection.UNSUPPORTED_FORMAT]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | st.sampled_from([DEEP_JSON, DEEP_CBOR, b"\x9f" * 500, b"\xbf" * 500]),
       st.none() | st.sampled_from([50, 60, 0, 42, 11542]) | st.integers(0, 65535))
@pytest.mark.asyncio
async def test_arbitrary_payloads_in_any_format_are_answered_never_a_server_error(
    payload: bytes, content_format: int | None
) -> None:
    """Given any bytes under any content format, when POSTed, then the answer is a 2.01 or a
    4.xx, and every 4.xx is counted with a reason."""
    resource, ingest, rejected = telemetry()
    for device_id in ("d1", None):  # /devices/d1/telemetry and /sensors
        answer = await resource.post(post(payload, content_format), device_id)
        assert answer.code.is_successful() or answer.code.class_ == 4, (answer.code, answer.payload)
    refusals = sum(1 for c, _ in ingest.candidates if c.rejection is not None)
    stored = len(ingest.candidates) - refusals
    assert len(rejected) + refusals + stored == 2


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=25))
@pytest.mark.asyncio
async def test_structured_but_wrong_cbor_is_answered_never_a_server_error(body: Any) -> None:
    resource, _, _ = telemetry()
    answer = await resource.post(post(cbor2.dumps(body), 60), None)
    assert answer.code.is_successful() or answer.code.class_ == 4, (answer.code, answer.payload)


@pytest.mark.asyncio
async def test_without_a_credential_a_closed_listener_answers_4_01_and_counts_it() -> None:
    resource, ingest, rejected = telemetry(anonymous=False)
    answer = await resource.post(post(b'{"temperature": 1}'), "d1")
    assert answer.code == Code.UNAUTHORIZED and "token" in answer.payload.decode()
    assert rejected == [Rejection.UNAUTHENTICATED] and ingest.candidates == []


@pytest.mark.asyncio
async def test_a_device_token_admits_its_own_device_only() -> None:
    resource, ingest, rejected = telemetry(anonymous=False)
    mine = await resource.post(post(b'{"temperature": 1}', query=(f"token={DEVICE_KEY}",)), "d1")
    assert mine.code == Code.CREATED
    assert [(c.device_id, who) for c, who in ingest.candidates] == [("d1", "d1")]
    other = await resource.post(post(b'{"temperature": 1}', query=(f"token={DEVICE_KEY}",)), "d2")
    assert other.code == Code.FORBIDDEN and "d1" in other.payload.decode()
    sensors = await resource.post(post(b'{"device_id": "d2", "temperature": 1}', query=(f"token={DEVICE_KEY}",)), None)
    assert sensors.code == Code.FORBIDDEN
    unbound = await resource.post(post(b'{"temperature": 1}', query=(f"token={UNBOUND}",)), "d1")
    assert unbound.code == Code.FORBIDDEN  # a device credential bound to no device acts for none
    forged = await resource.post(post(b'{"temperature": 1}', query=("token=iotk_k1_guessed",)), "d1")
    assert forged.code == Code.UNAUTHORIZED
    assert rejected == [Rejection.IDENTITY_MISMATCH] * 3 + [Rejection.UNAUTHENTICATED]
    assert len(ingest.candidates) == 1


@pytest.mark.asyncio
async def test_a_fleet_credential_writes_for_any_device_as_over_http() -> None:
    resource, ingest, _ = telemetry(anonymous=False)
    answer = await resource.post(post(b'{"device_id": "d7", "temperature": 1}', query=(f"token={FLEET_KEY}",)), None)
    assert answer.code == Code.CREATED
    assert [(c.device_id, who) for c, who in ingest.candidates] == [("d7", None)]


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                                 ("localhost", True), ("0.0.0.0", False), ("::", False),
                                                 ("192.168.1.5", False), ("coap.example.com", False)])
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_network_coap_listener_admitting_anonymous_devices_stops_start_up_naming_the_key() -> None:
    with pytest.raises(ValidationError, match=r"security\.allow_anonymous_devices: .*coap\.host listens on 0\.0\.0\.0"):
        Settings(coap={"host": "0.0.0.0"})
    for fine in (Settings(coap={"host": "0.0.0.0"}, security={"allow_anonymous_devices": "never"}),
                 Settings(coap={"host": "0.0.0.0", "allow_unauthenticated": False}),
                 Settings(coap={"host": "0.0.0.0", "enabled": False})):
        assert not anonymous_coap(fine)
    assert anonymous_coap(Settings())  # make run: loopback, anonymous devices welcome
    assert not anonymous_coap(Settings(security={"allow_anonymous_devices": "never"}))


def test_a_uri_path_that_is_not_utf8_is_an_unparsable_message_and_counted() -> None:
    """aiocoap 0.4.17 let the UnicodeDecodeError escape its datagram callback (a traceback per
    datagram); with the listener's shim it is aiocoap's own UnparsableMessage, dropped."""
    from aiocoap.error import UnparsableMessage

    from iot_platform.presentation.coap import server

    server._tolerate_bad_options()
    server._tolerate_bad_options()  # once per process, however many listeners start
    counted: list[int] = []
    server._unparsable.append(lambda: counted.append(1))
    try:
        with pytest.raises(UnparsableMessage):
            aiocoap.Message.decode(b"\x40\x02\x12\x34" + b"\xb2\xff\xfe")  # CON POST, Uri-Path 0xff 0xfe
        assert aiocoap.Message.decode(b"\x40\x02\x12\x34" + b"\xb7sensors").opt.uri_path == ("sensors",)
    finally:
        server._unparsable.clear()
    assert counted == [1]


def test_a_library_logger_is_limited_to_one_line_per_kind_per_interval() -> None:
    now = [0.0]
    limit = OncePerIntervalFilter(interval=60, level=logging.INFO, clock=lambda: now[0])

    def record(message: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("coap-server", level, __file__, 1, message, ("peer",), None)

    assert limit.filter(record("Ignoring unparsable message from %s"))
    assert not limit.filter(record("Ignoring unparsable message from %s"))
    assert limit.filter(record("Response not recognized"))
    assert limit.filter(record("debugging", logging.DEBUG)) and limit.filter(record("debugging", logging.DEBUG))
    now[0] = 61
    assert limit.filter(record("Ignoring unparsable message from %s"))

"""One payload can never stop ingestion: every JSON/CBOR decoder a device reaches is bounded
(size, nesting depth, number of values) and fails only with its own rejection error.

The example-based tests pin the limits; the hypothesis tests throw arbitrary bytes and
arbitrarily nested JSON/CBOR at the decoders and the MQTT contract.
"""

from __future__ import annotations

import json
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iot_platform.application.telemetry.model import Candidate, Rejection
from iot_platform.presentation.mqtt.contract import (
    DEVICE_TOPICS,
    CommandAck,
    MalformedAck,
    StatusReport,
    command_ack,
    parse_message,
)
from iot_platform.presentation.payloads import (
    PayloadLimits,
    PayloadRejected,
    check_shape,
    decode_cbor,
    decode_json,
)
from iot_platform.presentation.wire import WireError, decode_body

DEEP_JSON = b'{"x":' + b"[" * 1000 + b"]" * 1000 + b"}"  # the reproduction: about 2 KB
DEEP_CBOR = b"\x81" * 1000 + b"\x01"  # [[[...[1]...]]]
LIMITS = PayloadLimits(max_bytes=4096, max_depth=8, max_items=100)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_the_reproduction_is_a_rejected_reading_not_a_recursion_error() -> None:
    """Given the 1,000-deep JSON of the issue, when it arrives as telemetry, then it is a
    reading rejected as nested too deep, with a reason a person can read."""
    parsed = parse_message("devices/d1/telemetry", DEEP_JSON)
    assert isinstance(parsed, Candidate)
    assert parsed.rejection is Rejection.NESTING_TOO_DEEP
    assert parsed.detail == "payload is nested deeper than 32 levels"


@pytest.mark.parametrize("payload", [DEEP_JSON, DEEP_CBOR], ids=["json", "cbor"])
@pytest.mark.parametrize("topic", ["devices/d1/telemetry", "sensors/d1/temperature",
                                   "devices/d1/status", "devices/d1/commands/ack"])
def test_deep_payloads_on_every_topic_of_the_contract(topic: str, payload: bytes) -> None:
    parsed = parse_message(topic, payload)
    if isinstance(parsed, Candidate):
        assert parsed.rejection is Rejection.NESTING_TOO_DEEP
    elif isinstance(parsed, MalformedAck):
        assert "nested deeper" in parsed.problem
    else:
        assert parsed is None  # a status that cannot be read is ignored, as before


@pytest.mark.parametrize("decode", [decode_json, decode_cbor], ids=["json", "cbor"])
def test_depth_limit_is_exact(decode: Any) -> None:
    """max_depth containers are read; one more is refused."""
    encode = (lambda v: json.dumps(v).encode()) if decode is decode_json else cbor2.dumps
    assert decode(encode(nested(8)), LIMITS) == nested(8)
    with pytest.raises(PayloadRejected) as refused:
        decode(encode(nested(9)), LIMITS)
    assert refused.value.reason is Rejection.NESTING_TOO_DEEP


@pytest.mark.parametrize("decode", [decode_json, decode_cbor], ids=["json", "cbor"])
def test_huge_arrays_and_oversized_payloads_are_refused(decode: Any) -> None:
    encode = (lambda v: json.dumps(v).encode()) if decode is decode_json else cbor2.dumps
    with pytest.raises(PayloadRejected) as many:
        decode(encode({"values": [0] * 200}), LIMITS)
    assert many.value.reason is Rejection.PAYLOAD_TOO_LARGE
    with pytest.raises(PayloadRejected) as large:
        decode(encode({"text": "x" * 5000}), LIMITS)
    assert large.value.reason is Rejection.PAYLOAD_TOO_LARGE


def test_a_cbor_array_declaring_two_to_the_64_items_is_refused_without_allocating() -> None:
    with pytest.raises(PayloadRejected):
        decode_cbor(b"\x9b" + b"\xff" * 8)


def test_cyclic_cbor_is_refused() -> None:
    """Tag 28/29 value sharing can build a cycle; the shape check stops instead of looping."""
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    payload = cbor2.dumps(cyclic, value_sharing=True)
    with pytest.raises(PayloadRejected):
        decode_cbor(payload)


def test_shared_cbor_cannot_amplify_past_the_item_budget() -> None:
    """20 levels of [a, a] is a million leaves from a few hundred bytes."""
    value: Any = 1
    for _ in range(20):
        value = [value, value]
    payload = cbor2.dumps(value, value_sharing=True)
    assert len(payload) < 200
    with pytest.raises(PayloadRejected) as refused:
        decode_cbor(payload)
    assert refused.value.reason is Rejection.PAYLOAD_TOO_LARGE


@pytest.mark.parametrize("payload", [cbor2.dumps({"message_id": 10**5000, "t": 1}),
                                     cbor2.dumps({"t": 1, "tags": {"a": -(10**5000)}})])
def test_a_huge_cbor_bignum_is_a_rejected_reading(payload: bytes) -> None:
    """A bignum of a few KB decodes to an int that str() refuses (ValueError: 4,300 digits)."""
    parsed = parse_message("devices/d1/telemetry", payload)
    assert isinstance(parsed, Candidate) and parsed.rejection is Rejection.UNDECODABLE
    assert parsed.detail == "an integer in the payload is over 128 bits"


def test_check_shape_counts_values() -> None:
    check_shape({"a": [1, 2, 3]}, PayloadLimits(max_items=5))
    with pytest.raises(PayloadRejected):
        check_shape({"a": [1, 2, 3, 4, 5]}, PayloadLimits(max_items=5))


def test_json_keeps_what_devices_send() -> None:
    """Bounded decoding reads the same values as before: NaN, big integers, unicode."""
    body = decode_body(b'{"t": 21.5, "n": 12345678901234567890, "nan": NaN, "s": "\\u00e9"}')
    assert body["t"] == 21.5 and body["n"] == 12345678901234567890 and body["s"] == "é"
    assert body["nan"] != body["nan"]


# --- fuzzing -------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=60,
)
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=60,
)
deep_wrappers = st.lists(st.sampled_from(["[", '{"k":']), min_size=0, max_size=400)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decodes_or_rejects(payload: bytes) -> None:
    try:
        decode_body(payload, LIMITS)
    except WireError:
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_anything_but_wire_error(payload: bytes) -> None:
    _decodes_or_rejects(payload)


@FUZZ
@given(st.binary(max_size=200).map(lambda b: b"\x9f" * 50 + b), st.binary(max_size=100))
def test_arbitrary_cbor_prefixes_never_raise_anything_but_wire_error(head: bytes, tail: bytes) -> None:
    _decodes_or_rejects(head + tail)


@FUZZ
@given(json_values, deep_wrappers)
def test_arbitrarily_nested_json_is_read_or_rejected(value: Any, wrappers: list[str]) -> None:
    text = "".join(wrappers) + json.dumps(value) + "".join("]" if w == "[" else "}" for w in reversed(wrappers))
    _decodes_or_rejects(text.encode())


@FUZZ
@given(cbor_values, st.integers(min_value=0, max_value=600))
def test_arbitrarily_nested_cbor_is_read_or_rejected(value: Any, depth: int) -> None:
    _decodes_or_rejects(b"\x81" * depth + cbor2.dumps(value))


@FUZZ
@given(st.sampled_from([t.replace("+", "dev") for t in DEVICE_TOPICS]),
       st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                 cbor_values.map(cbor2.dumps)))
def test_the_mqtt_contract_never_raises(topic: str, payload: bytes) -> None:
    """Whatever a device publishes on a contract topic becomes a candidate (maybe rejected),
    a status, an acknowledgement (maybe malformed), or nothing; it never raises."""
    parsed = parse_message(topic, payload, LIMITS)
    assert parsed is None or isinstance(parsed, Candidate | StatusReport | CommandAck | MalformedAck)
    ack = command_ack("dev", payload, LIMITS)
    assert isinstance(ack, CommandAck | MalformedAck)


cbor_tag_heads = st.integers(min_value=0, max_value=300).map(lambda t: cbor2.dumps(cbor2.CBORTag(t, None))[:-1])
"""A semantic tag's head (date, bignum, decimal, regexp, shared reference...) without its content."""


@FUZZ
@given(st.lists(st.one_of(cbor_tag_heads, st.binary(max_size=12)), max_size=12))
def test_cbor_semantic_tags_with_arbitrary_content_never_raise_anything_but_wire_error(parts: list[bytes]) -> None:
    """cbor2 decodes tags through the standard library (datetime, Decimal, re, uuid...),
    whose own errors on nonsense must come out as a rejected payload too."""
    payload = b"".join(parts)
    _decodes_or_rejects(payload)
    parsed = parse_message("devices/dev/telemetry", payload, LIMITS)
    assert isinstance(parsed, Candidate)

"""Bounded decoding of untrusted payloads: JSON and CBOR with size, depth and item limits.

Every decoder that reads bytes from a device (MQTT, HTTP, CoAP, GWMP, LoRaWAN codecs) goes
through here, so one small message can never raise anything but ``PayloadRejected``:

- size: checked before parsing;
- depth: JSON is parsed by pydantic-core's ``from_json`` (jiter), which refuses nesting past
  200 levels on its own instead of exhausting the stack (the standard library's ``json`` has no
  limit and raises ``RecursionError`` at a depth that depends on the caller's stack); CBOR by
  cbor2, whose decoder takes ``max_depth``;
- items: the decoded value is walked once, iteratively, counting every value; the walk stops at
  the first limit crossed, so a cyclic or widely shared CBOR structure (tags 28/29) is refused
  instead of walked for ever. It also enforces ``max_depth`` below the parsers' own ceilings.

It is wire-format code, so it lives with the servers that read the wire (MQTT, HTTP, CoAP,
GWMP, LoRaWAN); the composition root reads only ``PayloadLimits`` from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from pydantic_core import from_json

from iot_platform.application.telemetry.model import Rejection

JSON_PARSER_MAX_DEPTH = 200
"""pydantic-core's own ceiling: JSON nested deeper is refused by the parser itself."""


MAX_INTEGER_BITS = 128
"""Larger integers (a CBOR bignum, say) are refused: no metric, id or timestamp needs them, and
turning a 4,300-digit one into text raises ``ValueError`` wherever it happens."""


@dataclass(frozen=True)
class PayloadLimits:
    """What one payload may be; ``telemetry.max_payload_bytes``/``max_nesting_depth``/
    ``max_payload_items`` in the configuration."""

    max_bytes: int = 65536
    max_depth: int = 32
    """Containers inside containers: ``{"a": [1]}`` is 2 deep, a bare number 0."""
    max_items: int = 10_000
    """Values in the whole payload, keys not counted."""


DEFAULT_LIMITS = PayloadLimits()


class PayloadRejected(ValueError):
    """A payload that cannot be read; ``reason`` is the rejected-readings counter's label."""

    def __init__(self, message: str, reason: Rejection = Rejection.UNDECODABLE) -> None:
        super().__init__(message)
        self.reason = reason


def check_size(payload: bytes | str, limits: PayloadLimits = DEFAULT_LIMITS) -> None:
    if len(payload) > limits.max_bytes:
        raise PayloadRejected(
            f"payload of {len(payload)} bytes is over the limit of {limits.max_bytes}",
            Rejection.PAYLOAD_TOO_LARGE,
        )


def check_shape(value: Any, limits: PayloadLimits = DEFAULT_LIMITS) -> None:
    """Refuses a decoded value nested deeper than ``max_depth`` or holding more than
    ``max_items`` values. Iterative: safe on any depth and on cycles."""
    budget = limits.max_items
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise PayloadRejected(
                f"payload holds more than {limits.max_items} values", Rejection.PAYLOAD_TOO_LARGE
            )
        if isinstance(item, int) and item.bit_length() > MAX_INTEGER_BITS:
            raise PayloadRejected(f"an integer in the payload is over {MAX_INTEGER_BITS} bits")
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        else:
            continue
        if depth >= limits.max_depth:
            raise PayloadRejected(
                f"payload is nested deeper than {limits.max_depth} levels", Rejection.NESTING_TOO_DEEP
            )
        if len(children) > budget:
            raise PayloadRejected(
                f"payload holds more than {limits.max_items} values", Rejection.PAYLOAD_TOO_LARGE
            )
        stack.extend((child, depth + 1) for child in children)


def decode_json(payload: bytes | str, limits: PayloadLimits = DEFAULT_LIMITS) -> Any:
    """JSON text -> Python values (NaN and Infinity accepted, as ``json.loads`` does)."""
    check_size(payload, limits)
    try:
        value = from_json(payload, allow_inf_nan=True)
    except ValueError as exc:
        text = str(exc)
        if "recursion limit" in text:
            raise PayloadRejected(
                f"payload is nested deeper than {min(limits.max_depth, JSON_PARSER_MAX_DEPTH)} levels",
                Rejection.NESTING_TOO_DEEP,
            ) from None
        raise PayloadRejected(f"invalid JSON: {text}") from None
    check_shape(value, limits)
    return value


def decode_cbor(payload: bytes, limits: PayloadLimits = DEFAULT_LIMITS) -> Any:
    """CBOR (RFC 8949) -> Python values. cbor2 stops at ``max_depth`` itself; declared lengths
    past the payload's end are refused before anything is allocated."""
    check_size(payload, limits)
    try:
        value = cbor2.loads(payload, max_depth=limits.max_depth)
    except cbor2.CBORDecodeError as exc:
        if "nesting depth" in str(exc):
            raise PayloadRejected(
                f"payload is nested deeper than {limits.max_depth} levels", Rejection.NESTING_TOO_DEEP
            ) from None
        raise PayloadRejected(f"invalid CBOR: {exc}") from None
    # Semantic tags (dates, decimals, regular expressions, big numbers...) decode through
    # the standard library, which raises its own errors on nonsense: all are a bad payload.
    except (ValueError, TypeError, OverflowError, LookupError, EOFError, RecursionError,
            MemoryError) as exc:
        raise PayloadRejected(f"invalid CBOR: {exc}") from None
    check_shape(value, limits)
    return value

"""Wire formats shared by every protocol: timestamps, intervals, tags, JSON and CBOR bodies."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from iot_platform.application.telemetry.model import NS_PER_SECOND, Rejection
from iot_platform.presentation.payloads import (
    DEFAULT_LIMITS,
    PayloadLimits,
    PayloadRejected,
    decode_cbor,
    decode_json,
)


class WireError(ValueError):
    """A value that cannot be read; the message says what was expected, ``reason`` is the
    rejected-readings counter's label."""

    def __init__(self, message: str, reason: Rejection = Rejection.UNDECODABLE) -> None:
        super().__init__(message)
        self.reason = reason


_FRACTION = re.compile(r"\.(\d+)")
_INTERVAL = re.compile(r"^(\d+)(ns|us|ms|s|m|h|d|w)$")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
    "d": 86_400 * NS_PER_SECOND,
    "w": 7 * 86_400 * NS_PER_SECOND,
}


def epoch_number_to_ns(value: float) -> int:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude.

    Below 1e11 is seconds (until the year 5138), below 1e14 milliseconds, below 1e17
    microseconds, else nanoseconds. Devices send all four in the wild.
    """
    magnitude = abs(value)
    if magnitude < 1e11:
        return int(round(value * NS_PER_SECOND))
    if magnitude < 1e14:
        return int(round(value * 1_000_000))
    if magnitude < 1e17:
        return int(round(value * 1_000))
    return int(value)


def parse_timestamp(value: Any) -> int:
    """RFC 3339 text (nanoseconds kept), an epoch number, or a datetime -> epoch nanoseconds."""
    if isinstance(value, bool):
        raise WireError("a timestamp is RFC 3339 text or an epoch number, not a boolean")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise WireError("timestamp is not a finite number")
        return epoch_number_to_ns(value)
    if isinstance(value, datetime):
        return _datetime_ns(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return epoch_number_to_ns(float(text) if "." in text else int(text))
        # datetime keeps microseconds; take the fraction apart to keep nanoseconds.
        fraction_ns = 0
        match = _FRACTION.search(text)
        if match:
            digits = match.group(1)[:9]
            fraction_ns = int(digits.ljust(9, "0"))
            text = text[: match.start()] + text[match.end() :]
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise WireError(f"{value!r} is not an RFC 3339 timestamp or epoch number") from None
        return _datetime_ns(parsed) + fraction_ns
    raise WireError("a timestamp is RFC 3339 text or an epoch number")


def _datetime_ns(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1_000


def format_timestamp(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, e.g. 2024-01-01T12:00:00.123456789Z."""
    seconds, fraction = divmod(ns, NS_PER_SECOND)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{fraction:09d}Z" if fraction else f"{base}Z"


def parse_interval(text: str) -> int:
    """``10s``, ``1m``, ``1h``, ``1d``... -> nanoseconds."""
    match = _INTERVAL.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise WireError(f"{text!r} is not an interval like 10s, 1m, 1h or 1d")
    return int(match.group(1)) * _UNIT_NS[match.group(2)]


def parse_tags(value: Any) -> dict[str, str]:
    """``{"room": "101"}`` or ``["room:101"]`` -> {"room": "101"}."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        tags: dict[str, str] = {}
        for key, item in value.items():
            if isinstance(item, bool | int | float | str):
                tags[str(key)] = str(item).lower() if isinstance(item, bool) else str(item)
            else:
                raise WireError(f"tag {key!r} must be a string, number or boolean")
        return tags
    if isinstance(value, list):
        tags = {}
        for item in value:
            if not isinstance(item, str) or ":" not in item:
                raise WireError(f"tag {item!r} must be 'key:value'")
            key, _, tag_value = item.partition(":")
            tags[key] = tag_value
        return tags
    raise WireError("tags are an object or a list of 'key:value' strings")


def decode_body(payload: bytes, limits: PayloadLimits = DEFAULT_LIMITS) -> Any:
    """JSON when it starts like JSON ('{', '[', a digit, a quote...), otherwise CBOR.

    A CBOR map or array never starts with '{' or '[' (0x7b and 0x5b begin a text or byte
    string), so the first byte decides without guessing. Either is bounded by ``limits``
    (size, nesting depth, number of values): a payload past one is a ``WireError`` like any
    other malformed one, never a ``RecursionError``.
    """
    head = payload.lstrip()[:1]
    try:
        if head in (b"{", b"[", b'"') or head.isdigit() or head in (b"-", b"t", b"f", b"n"):
            return decode_json(payload, limits)
        try:
            return decode_cbor(payload, limits)
        except PayloadRejected as exc:
            if str(exc).startswith("invalid CBOR: "):
                raise PayloadRejected(f"neither JSON nor valid CBOR: {str(exc)[14:]}") from None
            raise
    except PayloadRejected as exc:
        raise WireError(str(exc), exc.reason) from None

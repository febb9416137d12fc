"""The MQTT topic contract on the device side (docs/mqtt.md documents it), decoded into candidates.

- ``devices/{id}/telemetry``: flat ``{"temperature": 23.5, "timestamp": ...}`` or envelope
  ``{"message_id", "timestamp", "metrics": {...}, "tags": {...}}``, in JSON or CBOR.
- ``sensors/{id}/{sensor}``: ``{"value": 23.5, "timestamp": ...}`` or a bare value.
- ``devices/{id}/status``: ``online``/``offline`` (plain text, or JSON ``{"status": ...}``).
- ``devices/{id}/commands/ack``: ``{"command_id", "status": "delivered|succeeded|failed",
  "result"}``, a device's answer to a command it got on ``devices/{id}/commands``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iot_platform.application.telemetry.model import Candidate, Rejection
from iot_platform.presentation.payloads import DEFAULT_LIMITS, PayloadLimits
from iot_platform.presentation.wire import WireError, decode_body, parse_tags, parse_timestamp

TELEMETRY_TOPICS = ("devices/+/telemetry", "sensors/+/+", "devices/+/status")
COMMAND_ACK_TOPIC = "devices/+/commands/ack"
DEVICE_TOPICS = (*TELEMETRY_TOPICS, COMMAND_ACK_TOPIC)
"""Everything the platform subscribes to."""

# Keys of a flat payload that are about the reading rather than metrics of it.
_READING_KEYS = {"timestamp", "timeStamp", "ts", "message_id", "event_id", "tags", "device_id"}


@dataclass(frozen=True)
class StatusReport:
    device_id: str
    online: bool


@dataclass(frozen=True)
class CommandAck:
    device_id: str
    command_id: str
    status: str
    result: Any = None


@dataclass(frozen=True)
class MalformedAck:
    device_id: str
    problem: str


_ACK_STATUSES = ("delivered", "succeeded", "failed")


def command_ack(
    device_id: str, payload: bytes, limits: PayloadLimits = DEFAULT_LIMITS
) -> CommandAck | MalformedAck:
    try:
        body = decode_body(payload, limits)
    except WireError as exc:
        return MalformedAck(device_id, str(exc))
    return command_ack_from_body(device_id, body)


def command_ack_from_body(device_id: str, body: Any) -> CommandAck | MalformedAck:
    """An acknowledgement already decoded (CoAP decodes by its content format)."""
    if not isinstance(body, dict):
        return MalformedAck(device_id, "an acknowledgement is a JSON object")
    command_id, status = body.get("command_id"), body.get("status")
    if not isinstance(command_id, str) or not command_id:
        return MalformedAck(device_id, "command_id is missing or not a string")
    if status not in _ACK_STATUSES:
        return MalformedAck(device_id, f"status must be one of {', '.join(_ACK_STATUSES)}")
    return CommandAck(device_id, command_id, status, body.get("result"))


def candidate_from_body(body: Any, device_id: str, payload_bytes: int) -> Candidate:
    """A telemetry body (flat or envelope, already decoded) -> one candidate reading."""
    if not isinstance(body, dict):
        raise WireError("a telemetry payload is an object")
    raw_ts = next((body[k] for k in ("timestamp", "timeStamp", "ts") if k in body), None)
    message_id = body.get("message_id", body.get("event_id"))
    metrics = body.get("metrics")
    if metrics is None:
        metrics = {k: v for k, v in body.items() if k not in _READING_KEYS}
    elif not isinstance(metrics, dict):
        raise WireError("metrics is an object of name -> number, boolean or string")
    return Candidate(
        device_id=device_id,
        timestamp_ns=None if raw_ts is None else parse_timestamp(raw_ts),
        metrics=metrics,
        tags=parse_tags(body.get("tags")),
        message_id=None if message_id is None else str(message_id),
        payload_bytes=payload_bytes,
    )


def undecodable(device_id: str, payload_bytes: int, error: Exception) -> Candidate:
    """A reading refused before it was read: the error's reason (too large, nested too
    deep) when it has one, else undecodable."""
    reason = error.reason if isinstance(error, WireError) else Rejection.UNDECODABLE
    return Candidate(
        device_id=device_id,
        timestamp_ns=None,
        metrics={},
        payload_bytes=payload_bytes,
        rejection=reason,
        detail=str(error),
    )


def parse_message(
    topic: str, payload: bytes, limits: PayloadLimits = DEFAULT_LIMITS
) -> Candidate | StatusReport | CommandAck | MalformedAck | None:
    """None for a topic outside the contract (it is ignored, not refused). Raises nothing: a
    payload that cannot be read is a rejected candidate or a malformed acknowledgement."""
    parts = topic.split("/")
    size = len(payload)
    if len(parts) == 3 and parts[0] == "devices" and parts[2] == "telemetry":
        device_id = parts[1]
        try:
            return candidate_from_body(decode_body(payload, limits), device_id, size)
        except ValueError as exc:  # WireError, or a value no field can hold
            return undecodable(device_id, size, exc)
    if len(parts) == 3 and parts[0] == "sensors":
        device_id, sensor = parts[1], parts[2]
        try:
            body = decode_body(payload, limits)
            if isinstance(body, dict):
                if "value" not in body:
                    raise WireError('a sensor reading is {"value": ..., "timestamp": ...}')
                inner = {k: v for k, v in body.items() if k != "value"}
                inner["metrics"] = {sensor: body["value"]}
                return candidate_from_body(inner, device_id, size)
            return Candidate(device_id, None, {sensor: body}, payload_bytes=size)
        except ValueError as exc:  # WireError, or a value no field can hold
            return undecodable(device_id, size, exc)
    if len(parts) == 3 and parts[0] == "devices" and parts[2] == "status":
        return _status(parts[1], payload, limits)
    if len(parts) == 4 and parts[0] == "devices" and parts[2:] == ["commands", "ack"]:
        return command_ack(parts[1], payload, limits)
    return None


def _status(device_id: str, payload: bytes, limits: PayloadLimits) -> StatusReport | None:
    if len(payload) > limits.max_bytes:
        return None
    text = payload.strip().decode("utf-8", "replace").lower()
    if text.startswith("{"):
        try:
            body = decode_body(payload, limits)
        except WireError:
            return None
        value = body.get("status", body.get("online")) if isinstance(body, dict) else None
        if isinstance(value, bool):
            text = "online" if value else "offline"
        else:
            text = str(value).lower()
    text = text.strip('"')
    if text in ("online", "connected", "1", "true"):
        return StatusReport(device_id, True)
    if text in ("offline", "disconnected", "0", "false"):
        return StatusReport(device_id, False)
    return None

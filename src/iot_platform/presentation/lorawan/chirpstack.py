"""Uplinks from an existing ChirpStack v4 network server, through its MQTT integration
(``application/<application id>/device/<DevEUI>/event/up``, JSON).

ChirpStack has checked the MIC and counters and decrypted the payload already. Its decoded
``object`` becomes the metrics when there is one; otherwise ``data`` is decoded by the codec the
device is registered with here (raw without a registration). The device is the one registered
with that DevEUI in its ``lorawan`` block, or else the device whose id is the DevEUI.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from typing import Any

from iot_platform.application.lorawan.ports import LoRaWANDevices
from iot_platform.application.telemetry.model import NS_PER_SECOND, Candidate, MetricValue, Rejection
from iot_platform.presentation.lorawan.codecs import UndecodablePayload, codec
from iot_platform.presentation.payloads import PayloadRejected, decode_json

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _topic_pattern(topic: str) -> re.Pattern[str]:
    parts = [("[^/]+" if p == "+" else re.escape(p)) for p in topic.split("/")]
    return re.compile("^" + "/".join(parts) + "$")


def _timestamp(value: object) -> int | None:
    """ChirpStack's RFC 3339 time (nanosecond fractions are cut to microseconds)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        return None
    return int(moment.timestamp() * 1_000_000) * (NS_PER_SECOND // 1_000_000)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, MetricValue]:
    """A decoded object's scalars as metrics; nested objects join their keys with ``_``."""
    flat: dict[str, MetricValue] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "_"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
    return flat


class ChirpStackUplinks:
    protocol = "lorawan"

    def __init__(self, sessions: LoRaWANDevices, topic: str) -> None:
        self._sessions = sessions
        self.topic = topic
        self._pattern = _topic_pattern(topic)

    def matches(self, topic: str) -> bool:
        return bool(self._pattern.match(topic))

    async def candidate(self, topic: str, payload: bytes) -> Candidate:
        size = len(payload)
        fallback = topic.split("/")[3] if topic.count("/") >= 3 else topic
        try:
            event = decode_json(payload)  # bounded: a deep document is refused, not a RecursionError
            if not isinstance(event, dict):
                raise ValueError("the event is not an object")
            info = event.get("deviceInfo") or {}
            dev_eui = str(info.get("devEui") or fallback).lower()
        except ValueError as exc:
            return Candidate(fallback, None, {}, payload_bytes=size,
                             rejection=exc.reason if isinstance(exc, PayloadRejected) else Rejection.UNDECODABLE,
                             detail=f"not a ChirpStack uplink: {exc}")
        session = await self._sessions.by_dev_eui(dev_eui)
        device_id = session.device_id if session is not None else dev_eui
        rx = [r for r in event.get("rxInfo") or [] if isinstance(r, dict)]
        best = max(rx, key=lambda r: (r.get("snr", -99), r.get("rssi", -999)), default=None)
        radio: dict[str, MetricValue] = {"gateways": len(rx)}
        tags: dict[str, str] = {"network_server": "chirpstack"}
        if best is not None:
            radio.update({k: best[k] for k in ("rssi", "snr") if isinstance(best.get(k), int | float)})
            if best.get("gatewayId"):
                tags["gateway"] = str(best["gatewayId"])
            radio["rx_info"] = json.dumps(
                [{"gateway": r.get("gatewayId"), "rssi": r.get("rssi"), "snr": r.get("snr")} for r in rx],
                separators=(",", ":"))
        frequency = (event.get("txInfo") or {}).get("frequency")
        if isinstance(frequency, int):
            radio["frequency_hz"] = frequency
        if isinstance(event.get("fCnt"), int):
            radio["f_cnt"] = event["fCnt"]
        if isinstance(event.get("dr"), int):
            tags["data_rate"] = f"DR{event['dr']}"
        try:
            metrics = self._metrics(event, session.codec if session is not None else "raw")
        except (UndecodablePayload, LookupError, binascii.Error, ValueError) as exc:
            return Candidate(device_id, None, {}, tags, payload_bytes=size,
                             rejection=Rejection.UNDECODABLE, detail=str(exc))
        return Candidate(device_id, _timestamp(event.get("time")), {**metrics, **radio}, tags,
                         message_id=event.get("deduplicationId") or None, payload_bytes=size)

    @staticmethod
    def _metrics(event: dict[str, Any], codec_name: str) -> dict[str, MetricValue]:
        decoded = event.get("object")
        if isinstance(decoded, dict) and decoded:
            return _flatten(decoded)
        data = event.get("data")
        if not isinstance(data, str):
            raise UndecodablePayload("the uplink has neither a decoded object nor data")
        return codec(codec_name)(int(event.get("fPort") or 0), base64.b64decode(data, validate=True))

"""Payload decoders of LoRaWAN device profiles: application bytes to metrics.

A device is registered with a codec name; ``cayenne_lpp`` (the pycayennelpp library) and
``raw`` (the bytes as hex in the metric ``payload_hex``) are built in, and ``register_codec``
adds more (a vendor's format, say) before the platform starts.
"""

from __future__ import annotations

from collections.abc import Callable

from cayennelpp import LppFrame

from iot_platform.application.telemetry.model import MetricValue

Codec = Callable[[int, bytes], dict[str, MetricValue]]
"""(FPort, decrypted FRMPayload) -> metrics; raises ``UndecodablePayload``."""


class UndecodablePayload(ValueError):
    pass


MAX_PAYLOAD_BYTES = 255
"""A LoRaWAN FRMPayload is at most 242 bytes on any region's fastest data rate (and the
PHYPayload's length is one byte): anything longer was not sent by a radio."""


# Names of the values of Cayenne's multi-value types; single values are named by type alone.
_PARTS = {
    "location": ("latitude", "longitude", "altitude"),
    "accelerometer": ("x", "y", "z"),
    "gyrometer": ("x", "y", "z"),
    "colour": ("r", "g", "b"),
}


def cayenne_lpp(f_port: int, payload: bytes) -> dict[str, MetricValue]:
    """Each value is named ``<type>_<channel>``: ``temperature_3``, ``location_1_latitude``.
    Raises ``UndecodablePayload`` (only) for anything else."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise UndecodablePayload(f"{len(payload)} bytes is over the {MAX_PAYLOAD_BYTES} a LoRaWAN payload holds")
    try:
        items = LppFrame.from_bytes(payload).data
    except Exception as exc:  # the library raises Buffer/Value/Type errors for bad bytes
        raise UndecodablePayload(f"not Cayenne LPP: {exc or type(exc).__name__}") from None
    metrics: dict[str, MetricValue] = {}
    for item in items:
        kind = str(item.type).lower().replace(" ", "_")
        name = f"{kind}_{item.channel}"
        values = tuple(item.value)
        parts = _PARTS.get(kind)
        if len(values) == 1:
            metrics[name] = values[0]
        else:
            for i, value in enumerate(values):
                metrics[f"{name}_{parts[i] if parts else i}"] = value
    if not metrics:
        raise UndecodablePayload("an empty Cayenne LPP payload")
    return metrics


def raw(f_port: int, payload: bytes) -> dict[str, MetricValue]:
    return {"payload_hex": payload.hex(), "f_port": f_port}


_CODECS: dict[str, Codec] = {"cayenne_lpp": cayenne_lpp, "raw": raw}


def register_codec(name: str, codec: Codec) -> None:
    _CODECS[name] = codec


def codec(name: str) -> Codec:
    try:
        return _CODECS[name]
    except KeyError:
        raise LookupError(f"no LoRaWAN codec named {name!r}; known: {sorted(_CODECS)}") from None


def codec_names() -> list[str]:
    return sorted(_CODECS)

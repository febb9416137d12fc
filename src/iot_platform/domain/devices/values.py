"""Value objects of a device. They validate on construction so an invalid one cannot exist."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from iot_platform.domain.errors import InvalidValue
from iot_platform.domain.validation import require_json, require_number, require_text, text_problem

# Device ids travel in MQTT topics and CoAP/REST paths, so the characters that are special in
# any of those ('/', '+', '#', whitespace, '?') are refused. A LoRaWAN DevEUI (16 hex) fits.
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TAG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
MAX_TAGS = 64
MAX_TAG_VALUE = 256


class DeviceStatus(StrEnum):
    REGISTERED = "registered"
    PROVISIONED = "provisioned"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DECOMMISSIONED = "decommissioned"


class Protocol(StrEnum):
    MQTT = "mqtt"
    COAP = "coap"
    LORAWAN = "lorawan"
    HTTP = "http"


def validate_device_id(device_id: str) -> str:
    if not _DEVICE_ID.match(device_id):
        raise InvalidValue(
            "device_id must be 1-128 characters of letters, digits and . _ : - "
            "starting with a letter or digit",
            field="device_id",
        )
    return device_id


def validate_tags(tags: dict[str, str]) -> dict[str, str]:
    if not isinstance(tags, dict):
        raise InvalidValue("must be an object of strings", field="tags")
    if len(tags) > MAX_TAGS:
        raise InvalidValue(f"at most {MAX_TAGS} tags", field="tags")
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY.match(key):
            raise InvalidValue(f"tag key {key!r} is not an identifier", field=f"tags.{key}")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE or text_problem(value):
            raise InvalidValue(
                f"tag value must be a string of at most {MAX_TAG_VALUE} characters",
                field=f"tags.{key}",
            )
    return dict(sorted(tags.items()))


def _finite_in(value: float, low: float, high: float, name: str) -> float:
    require_number(value, f"location.{name}")
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidValue(f"{name} must be between {low} and {high}", field=f"location.{name}")
    return float(value)


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    # Metres above sea level; from the deepest trench to high-altitude balloons.
    altitude: float | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        _finite_in(self.latitude, -90.0, 90.0, "latitude")
        _finite_in(self.longitude, -180.0, 180.0, "longitude")
        if self.altitude is not None:
            _finite_in(self.altitude, -11_000.0, 100_000.0, "altitude")
        require_text(self.address, "location.address", optional=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "latitude": self.latitude,
            "longitude": self.longitude,
            "altitude": self.altitude,
            "address": self.address,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Location:
        return cls(
            latitude=data["latitude"],
            longitude=data["longitude"],
            altitude=data.get("altitude"),
            address=data.get("address"),
        )


@dataclass(frozen=True)
class DeviceMetadata:
    """What the maker says about the device; ``extra`` holds any other free-form keys."""

    manufacturer: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("manufacturer", "model", "firmware_version"):
            require_text(getattr(self, name), f"metadata.{name}", optional=True)
        if not isinstance(self.extra, dict):
            raise InvalidValue("must be an object", field="metadata")
        require_json(self.extra, "metadata")

    def as_dict(self) -> dict[str, Any]:
        known = {
            "manufacturer": self.manufacturer,
            "model": self.model,
            "firmware_version": self.firmware_version,
        }
        return {**self.extra, **{k: v for k, v in known.items() if v is not None}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceMetadata:
        extra = {
            k: v for k, v in data.items() if k not in ("manufacturer", "model", "firmware_version")
        }
        return cls(
            manufacturer=data.get("manufacturer"),
            model=data.get("model"),
            firmware_version=data.get("firmware_version"),
            extra=extra,
        )

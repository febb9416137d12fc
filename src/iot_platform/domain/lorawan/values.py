"""What identifies a LoRaWAN device and how it joined. The session keys are not here: they are
secrets, kept encrypted by the network server's key store, and never part of an event."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from iot_platform.domain.errors import InvalidValue

_EUI = re.compile(r"^[0-9a-f]{16}$")
_DEV_ADDR = re.compile(r"^[0-9a-f]{8}$")


class Activation(StrEnum):
    ABP = "abp"
    """Activation by personalisation: DevAddr and session keys are given at registration."""
    OTAA = "otaa"
    """Over-the-air activation: the device joins, and the session is derived from its AppKey."""


def validate_eui(value: str, field: str) -> str:
    """A 64-bit EUI as 16 hex digits, most significant first (how labels and consoles show it)."""
    value = value.strip().lower().replace("-", "").replace(":", "")
    if not _EUI.match(value):
        raise InvalidValue(f"{field} must be 16 hex digits", field=field)
    return value


def validate_dev_addr(value: str, field: str = "lorawan.dev_addr") -> str:
    value = value.strip().lower()
    if not _DEV_ADDR.match(value):
        raise InvalidValue(f"{field} must be 8 hex digits", field=field)
    return value


@dataclass(frozen=True)
class LoRaWANProfile:
    """The public part of a LoRaWAN device's registration."""

    dev_eui: str
    activation: Activation
    codec: str
    join_eui: str | None = None
    dev_addr: str | None = None
    """Given for ABP; for OTAA, assigned at each join (see DeviceJoined)."""

    def __post_init__(self) -> None:
        validate_eui(self.dev_eui, "lorawan.dev_eui")
        if self.activation is Activation.ABP and self.dev_addr is None:
            raise InvalidValue("an ABP device needs a dev_addr", field="lorawan.dev_addr")
        if self.activation is Activation.OTAA and self.join_eui is None:
            raise InvalidValue("an OTAA device needs a join_eui", field="lorawan.join_eui")
        if self.join_eui is not None:
            validate_eui(self.join_eui, "lorawan.join_eui")
        if self.dev_addr is not None:
            validate_dev_addr(self.dev_addr)

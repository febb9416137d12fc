"""What can happen to a device. Each is a fact; the registry projection and history read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from iot_platform.domain.devices.values import DeviceMetadata, DeviceStatus, Location, Protocol
from iot_platform.domain.events import DomainEvent
from iot_platform.domain.lorawan import LoRaWANProfile


@dataclass(frozen=True, kw_only=True)
class DeviceRegistered(DomainEvent):
    name: str
    device_type: str
    protocol: Protocol
    tags: dict[str, str] = field(default_factory=dict)
    location: Location | None = None
    metadata: DeviceMetadata = field(default_factory=DeviceMetadata)
    lorawan: LoRaWANProfile | None = None
    """For a LoRaWAN device: its EUIs, activation and codec (never its keys)."""


@dataclass(frozen=True, kw_only=True)
class DeviceProvisioned(DomainEvent):
    """Credentials were issued; ``credential_fingerprint`` identifies them without revealing them."""

    credential_type: str
    credential_fingerprint: str | None = None


@dataclass(frozen=True, kw_only=True)
class CertificateIssued(DomainEvent):
    """An X.509 client certificate was issued to the device (its private key never left it,
    or was handed over once)."""

    serial: str
    fingerprint: str
    """SHA-256 of the DER certificate, hex."""
    not_after: datetime


@dataclass(frozen=True, kw_only=True)
class CertificateRevoked(DomainEvent):
    serial: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class DeviceActivated(DomainEvent):
    """The device was first heard from (or heard from again after provisioning)."""


@dataclass(frozen=True, kw_only=True)
class DeviceJoined(DomainEvent):
    """A LoRaWAN device joined over the air and was given ``dev_addr``; its new session keys
    are in the network server's key store, never here."""

    dev_eui: str
    dev_addr: str


@dataclass(frozen=True, kw_only=True)
class DeviceSuspended(DomainEvent):
    reason: str | None = None
    previous_status: DeviceStatus = DeviceStatus.ACTIVE


@dataclass(frozen=True, kw_only=True)
class DeviceResumed(DomainEvent):
    resumed_status: DeviceStatus = DeviceStatus.ACTIVE


@dataclass(frozen=True, kw_only=True)
class DeviceDecommissioned(DomainEvent):
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceConnected(DomainEvent):
    """The device said it is online (MQTT status topic, or a protocol session opened)."""


@dataclass(frozen=True, kw_only=True)
class DeviceDisconnected(DomainEvent):
    """The device said it is offline, or its last will was published for it."""


@dataclass(frozen=True, kw_only=True)
class DeviceRenamed(DomainEvent):
    name: str


@dataclass(frozen=True, kw_only=True)
class DeviceTagsChanged(DomainEvent):
    tags: dict[str, str]


@dataclass(frozen=True, kw_only=True)
class DeviceLocationChanged(DomainEvent):
    location: Location | None


@dataclass(frozen=True, kw_only=True)
class DeviceMetadataChanged(DomainEvent):
    metadata: DeviceMetadata


DEVICE_EVENTS: tuple[type[DomainEvent], ...] = (
    DeviceRegistered,
    DeviceProvisioned,
    CertificateIssued,
    CertificateRevoked,
    DeviceActivated,
    DeviceJoined,
    DeviceSuspended,
    DeviceResumed,
    DeviceDecommissioned,
    DeviceConnected,
    DeviceDisconnected,
    DeviceRenamed,
    DeviceTagsChanged,
    DeviceLocationChanged,
    DeviceMetadataChanged,
)

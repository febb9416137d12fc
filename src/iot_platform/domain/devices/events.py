"""What can happen to a device. Each is a fact; the registry projection and history read them."""

from __future__ import annotations

from dataclasses import dataclass, field

from iot_platform.domain.devices.values import DeviceMetadata, DeviceStatus, Location, Protocol
from iot_platform.domain.events import DomainEvent


@dataclass(frozen=True, kw_only=True)
class DeviceRegistered(DomainEvent):
    name: str
    device_type: str
    protocol: Protocol
    tags: dict[str, str] = field(default_factory=dict)
    location: Location | None = None
    metadata: DeviceMetadata = field(default_factory=DeviceMetadata)


@dataclass(frozen=True, kw_only=True)
class DeviceProvisioned(DomainEvent):
    """Credentials were issued; ``credential_fingerprint`` identifies them without revealing them."""

    credential_type: str
    credential_fingerprint: str | None = None


@dataclass(frozen=True, kw_only=True)
class DeviceActivated(DomainEvent):
    """The device was first heard from (or heard from again after provisioning)."""


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
    DeviceActivated,
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

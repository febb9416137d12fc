"""The Device aggregate, its value objects and its events."""

from iot_platform.domain.devices.device import Device
from iot_platform.domain.devices.events import (
    CertificateIssued,
    CertificateRevoked,
    DeviceActivated,
    DeviceConnected,
    DeviceDecommissioned,
    DeviceDisconnected,
    DeviceJoined,
    DeviceLocationChanged,
    DeviceMetadataChanged,
    DeviceProvisioned,
    DeviceRegistered,
    DeviceRenamed,
    DeviceResumed,
    DeviceSuspended,
    DeviceTagsChanged,
)
from iot_platform.domain.devices.values import (
    DeviceMetadata,
    DeviceStatus,
    Location,
    Protocol,
    validate_device_id,
    validate_tags,
)

__all__ = [
    "Device",
    "DeviceActivated",
    "DeviceConnected",
    "DeviceDisconnected",
    "DeviceDecommissioned",
    "DeviceLocationChanged",
    "DeviceMetadata",
    "DeviceMetadataChanged",
    "DeviceJoined",
    "CertificateIssued",
    "CertificateRevoked",
    "DeviceProvisioned",
    "DeviceRegistered",
    "DeviceRenamed",
    "DeviceResumed",
    "DeviceStatus",
    "DeviceSuspended",
    "DeviceTagsChanged",
    "Location",
    "Protocol",
    "validate_device_id",
    "validate_tags",
]

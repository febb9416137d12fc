"""Commands: what a caller asks of the device registry, already parsed into value objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.devices import DeviceMetadata, Location, Protocol
from iot_platform.domain.lorawan import LoRaWANProfile


@dataclass(frozen=True)
class RegisterDevice:
    device_id: str
    device_type: str
    name: str | None = None
    protocol: Protocol = Protocol.MQTT
    tags: dict[str, str] = field(default_factory=dict)
    location: Location | None = None
    metadata: DeviceMetadata = field(default_factory=DeviceMetadata)
    lorawan: LoRaWANProfile | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class UpdateDevice:
    """``None`` leaves a field as it is; ``clear_location`` removes the location."""

    device_id: str
    name: str | None = None
    tags: dict[str, str] | None = None
    location: Location | None = None
    clear_location: bool = False
    metadata: DeviceMetadata | None = None
    expected_version: int | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class SuspendDevice:
    device_id: str
    reason: str | None = None
    expected_version: int | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class ResumeDevice:
    device_id: str
    expected_version: int | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class DecommissionDevice:
    device_id: str
    reason: str | None = None
    expected_version: int | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class ActivateDevice:
    device_id: str
    context: EventContext = EventContext(actor="ingestion")


@dataclass(frozen=True)
class RecordConnectivity:
    device_id: str
    online: bool
    context: EventContext = EventContext(actor="ingestion")


@dataclass(frozen=True)
class ProvisionDevice:
    device_id: str
    credential_type: str
    credential_fingerprint: str | None = None
    context: EventContext = EventContext()


@dataclass(frozen=True)
class RecordCertificate:
    device_id: str
    serial: str
    fingerprint: str
    not_after: datetime
    context: EventContext = EventContext()


@dataclass(frozen=True)
class RevokeCertificate:
    device_id: str
    serial: str
    reason: str
    context: EventContext = EventContext()


@dataclass(frozen=True)
class RecordJoin:
    """A LoRaWAN device joined over the air and was given ``dev_addr``."""

    device_id: str
    dev_addr: str
    context: EventContext = EventContext(actor="network-server")


@dataclass(frozen=True)
class CommandResult:
    device_id: str
    version: int
    position: int | None
    """Global position of the last event written; None when the command changed nothing."""

"""The Device aggregate and its lifecycle.

registered -> provisioned -> active <-> suspended -> decommissioned. A registered or provisioned
device becomes active when it is first heard from. Suspension is allowed from any live state
(a device can be lost before it ever reports) and resuming returns it to the state it was
suspended from. Decommissioned is final: the history stays, nothing else happens.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime
from functools import singledispatchmethod
from typing import Any, ClassVar

from iot_platform.domain.aggregate import Aggregate, EventContext
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
from iot_platform.domain.errors import AlreadyExists, InvalidTransition, InvalidValue
from iot_platform.domain.events import DomainEvent
from iot_platform.domain.lorawan import Activation, LoRaWANProfile, validate_dev_addr
from iot_platform.domain.validation import require_text

_MAX_NAME = 200
_MAX_TYPE = 100


def _check_text(value: str, name: str, limit: int) -> str:
    require_text(value, name)
    value = value.strip()
    if not value or len(value) > limit:
        raise InvalidValue(f"{name} must be 1-{limit} characters", field=name)
    return value


class Device(Aggregate):
    stream_type: ClassVar[str] = "device"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status: DeviceStatus | None = None
        self.name = ""
        self.device_type = ""
        self.protocol = Protocol.MQTT
        self.tags: dict[str, str] = {}
        self.location: Location | None = None
        self.metadata = DeviceMetadata()
        self.suspended_from: DeviceStatus | None = None
        self.credential_fingerprint: str | None = None
        self.connected: bool | None = None
        self.lorawan: LoRaWANProfile | None = None
        self.certificates: dict[str, datetime] = {}
        """Serial -> not_after of the device's certificates that are not revoked."""

    @property
    def exists(self) -> bool:
        return self.status is not None

    # -- commands -----------------------------------------------------------------------
    def register(
        self,
        *,
        name: str | None,
        device_type: str,
        protocol: Protocol = Protocol.MQTT,
        tags: dict[str, str] | None = None,
        location: Location | None = None,
        metadata: DeviceMetadata | None = None,
        lorawan: LoRaWANProfile | None = None,
        context: EventContext = EventContext(),
    ) -> None:
        if self.exists:
            raise AlreadyExists(f"device {self.id!r} is already registered", field="device_id")
        validate_device_id(self.id)
        if lorawan is not None and protocol is not Protocol.LORAWAN:
            raise InvalidValue("a lorawan block goes with protocol lorawan", field="lorawan")
        self._trigger(
            DeviceRegistered(
                **self._meta(context),
                name=_check_text(self.id if name is None else name, "name", _MAX_NAME),
                device_type=_check_text(device_type, "device_type", _MAX_TYPE),
                protocol=Protocol(protocol),
                tags=validate_tags(tags or {}),
                location=location,
                metadata=metadata or DeviceMetadata(),
                lorawan=lorawan,
            )
        )

    def join(self, dev_addr: str, context: EventContext = EventContext()) -> None:
        """An OTAA device joined and was given ``dev_addr``. Every join is recorded, even with an
        address it had before: each one starts a new session."""
        self.ensure_accepts_telemetry()
        if self.lorawan is None or self.lorawan.activation is not Activation.OTAA:
            raise InvalidTransition(f"device {self.id!r} does not join over the air")
        self._trigger(DeviceJoined(**self._meta(context), dev_eui=self.lorawan.dev_eui,
                                   dev_addr=validate_dev_addr(dev_addr)))

    def provision(
        self,
        *,
        credential_type: str,
        credential_fingerprint: str | None = None,
        context: EventContext = EventContext(),
    ) -> None:
        self._require_live("provision")
        if self.status is DeviceStatus.SUSPENDED:
            raise InvalidTransition(f"device {self.id!r} is suspended; resume it first")
        self._trigger(
            DeviceProvisioned(
                **self._meta(context),
                credential_type=credential_type,
                credential_fingerprint=credential_fingerprint,
            )
        )

    def record_certificate(
        self, serial: str, fingerprint: str, not_after: datetime, context: EventContext = EventContext()
    ) -> None:
        """A certificate issued to the device; the first one also provisions it."""
        self.ensure_may_hold_credentials()
        if serial in self.certificates:
            raise AlreadyExists(f"certificate {serial} is already recorded", field="serial")
        if self.status is DeviceStatus.REGISTERED:
            self._trigger(DeviceProvisioned(**self._meta(context), credential_type="x509",
                                            credential_fingerprint=fingerprint))
        self._trigger(CertificateIssued(**self._meta(context), serial=serial, fingerprint=fingerprint,
                                        not_after=not_after))

    def ensure_may_hold_credentials(self) -> None:
        self._require_live("issue credentials to")
        if self.status is DeviceStatus.SUSPENDED:
            raise InvalidTransition(f"device {self.id!r} is suspended; resume it first")

    def revoke_certificate(self, serial: str, reason: str, context: EventContext = EventContext()) -> None:
        if serial not in self.certificates:
            raise InvalidValue(f"device {self.id!r} has no live certificate {serial}", field="serial")
        self._trigger(CertificateRevoked(**self._meta(context), serial=serial, reason=reason))

    def ensure_accepts_telemetry(self) -> None:
        """Readings from a suspended or decommissioned device are refused, not stored."""
        self._require_live("accept telemetry from")
        if self.status is DeviceStatus.SUSPENDED:
            raise InvalidTransition(f"device {self.id!r} is suspended")

    def activate(self, context: EventContext = EventContext()) -> None:
        """The first accepted reading makes a registered or provisioned device active."""
        self.ensure_accepts_telemetry()
        if self.status is not DeviceStatus.ACTIVE:
            self._trigger(DeviceActivated(**self._meta(context)))

    def record_connectivity(self, online: bool, context: EventContext = EventContext()) -> None:
        """Records a change of connectivity; repeating the current state records nothing."""
        self._require_live("record connectivity of")
        if self.connected is online:
            return
        event_type = DeviceConnected if online else DeviceDisconnected
        self._trigger(event_type(**self._meta(context)))

    def suspend(self, reason: str | None = None, context: EventContext = EventContext()) -> None:
        self._require_live("suspend")
        if self.status is DeviceStatus.SUSPENDED:
            raise InvalidTransition(f"device {self.id!r} is already suspended")
        assert self.status is not None
        require_text(reason, "reason", optional=True)
        self._trigger(
            DeviceSuspended(**self._meta(context), reason=reason, previous_status=self.status)
        )

    def resume(self, context: EventContext = EventContext()) -> None:
        self._require_live("resume")
        if self.status is not DeviceStatus.SUSPENDED:
            raise InvalidTransition(f"device {self.id!r} is not suspended (it is {self.status})")
        self._trigger(
            DeviceResumed(
                **self._meta(context), resumed_status=self.suspended_from or DeviceStatus.ACTIVE
            )
        )

    def decommission(self, reason: str | None = None, context: EventContext = EventContext()) -> None:
        """Final; every certificate of the device is revoked with it."""
        self._require_live("decommission")
        require_text(reason, "reason", optional=True)
        for serial in sorted(self.certificates):
            self._trigger(CertificateRevoked(**self._meta(context), serial=serial, reason="decommissioned"))
        self._trigger(DeviceDecommissioned(**self._meta(context), reason=reason))

    def update(
        self,
        *,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        location: Location | None = None,
        clear_location: bool = False,
        metadata: DeviceMetadata | None = None,
        context: EventContext = EventContext(),
    ) -> None:
        """Changes only what differs; an update that changes nothing records nothing."""
        self._require_live("update")
        meta = self._meta(context)
        if name is not None:
            name = _check_text(name, "name", _MAX_NAME)
            if name != self.name:
                self._trigger(DeviceRenamed(**meta, name=name))
        if tags is not None:
            tags = validate_tags(tags)
            if tags != self.tags:
                self._trigger(DeviceTagsChanged(**meta, tags=tags))
        if clear_location and self.location is not None:
            self._trigger(DeviceLocationChanged(**meta, location=None))
        elif location is not None and location != self.location:
            self._trigger(DeviceLocationChanged(**meta, location=location))
        if metadata is not None and metadata != self.metadata:
            self._trigger(DeviceMetadataChanged(**meta, metadata=metadata))

    def _require_live(self, action: str) -> None:
        if not self.exists:
            raise InvalidTransition(f"device {self.id!r} is not registered")
        if self.status is DeviceStatus.DECOMMISSIONED:
            raise InvalidTransition(f"cannot {action} device {self.id!r}: it is decommissioned")

    # -- state changes: only here -------------------------------------------------------
    @singledispatchmethod
    def _apply(self, event: DomainEvent) -> None:
        raise TypeError(f"Device cannot apply {type(event).__name__}")

    @_apply.register
    def _(self, event: DeviceRegistered) -> None:
        self.status = DeviceStatus.REGISTERED
        self.name = event.name
        self.device_type = event.device_type
        self.protocol = event.protocol
        self.tags = dict(event.tags)
        self.location = event.location
        self.metadata = event.metadata
        self.lorawan = event.lorawan

    @_apply.register
    def _(self, event: DeviceJoined) -> None:
        self.lorawan = replace(self.lorawan, dev_addr=event.dev_addr) if self.lorawan else None

    @_apply.register
    def _(self, event: DeviceProvisioned) -> None:
        self.status = DeviceStatus.PROVISIONED
        self.credential_fingerprint = event.credential_fingerprint

    @_apply.register
    def _(self, event: CertificateIssued) -> None:
        self.certificates[event.serial] = event.not_after

    @_apply.register
    def _(self, event: CertificateRevoked) -> None:
        self.certificates.pop(event.serial, None)

    @_apply.register
    def _(self, event: DeviceActivated) -> None:
        self.status = DeviceStatus.ACTIVE

    @_apply.register
    def _(self, event: DeviceSuspended) -> None:
        self.suspended_from = event.previous_status
        self.status = DeviceStatus.SUSPENDED

    @_apply.register
    def _(self, event: DeviceResumed) -> None:
        self.status = event.resumed_status
        self.suspended_from = None

    @_apply.register
    def _(self, event: DeviceDecommissioned) -> None:
        self.status = DeviceStatus.DECOMMISSIONED

    @_apply.register
    def _(self, event: DeviceConnected) -> None:
        self.connected = True

    @_apply.register
    def _(self, event: DeviceDisconnected) -> None:
        self.connected = False

    @_apply.register
    def _(self, event: DeviceRenamed) -> None:
        self.name = event.name

    @_apply.register
    def _(self, event: DeviceTagsChanged) -> None:
        self.tags = dict(event.tags)

    @_apply.register
    def _(self, event: DeviceLocationChanged) -> None:
        self.location = event.location

    @_apply.register
    def _(self, event: DeviceMetadataChanged) -> None:
        self.metadata = event.metadata

    # -- snapshots ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "status": self.status.value if self.status else None,
            "name": self.name,
            "device_type": self.device_type,
            "protocol": self.protocol.value,
            "tags": dict(self.tags),
            "location": self.location.as_dict() if self.location else None,
            "metadata": self.metadata.as_dict(),
            "suspended_from": self.suspended_from.value if self.suspended_from else None,
            "credential_fingerprint": self.credential_fingerprint,
            "connected": self.connected,
            "lorawan": asdict(self.lorawan) if self.lorawan else None,
            "certificates": {serial: at.isoformat() for serial, at in self.certificates.items()},
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.status = DeviceStatus(state["status"]) if state["status"] else None
        self.name = state["name"]
        self.device_type = state["device_type"]
        self.protocol = Protocol(state["protocol"])
        self.tags = dict(state["tags"])
        self.location = Location.from_dict(state["location"]) if state["location"] else None
        self.metadata = DeviceMetadata.from_dict(state["metadata"])
        self.suspended_from = (
            DeviceStatus(state["suspended_from"]) if state["suspended_from"] else None
        )
        self.credential_fingerprint = state["credential_fingerprint"]
        self.connected = state.get("connected")
        self.certificates = {
            serial: datetime.fromisoformat(at) for serial, at in state.get("certificates", {}).items()
        }
        lorawan = state.get("lorawan")
        self.lorawan = (
            LoRaWANProfile(**{**lorawan, "activation": Activation(lorawan["activation"])})
            if lorawan else None
        )

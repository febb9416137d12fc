"""Request and response bodies of the device routes; separate from the domain and read model."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iot_platform.application.devices.queries import DeviceView
from iot_platform.domain.devices import DeviceStatus, Protocol
from iot_platform.domain.lorawan import Activation
from iot_platform.presentation.rest.schemas.fields import refuse_null, unset


class LocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    altitude: float | None = Field(None, ge=-11_000, le=100_000, allow_inf_nan=False)
    address: str | None = Field(None, max_length=500)


_EUI = r"^[0-9a-fA-F]{16}$"
_KEY = r"^[0-9a-fA-F]{32}$"


class LoRaWANIn(BaseModel):
    """ABP: ``dev_addr``, ``nwk_s_key``, ``app_s_key``. OTAA: ``join_eui``, ``app_key``.
    Keys are 32 hex digits; they are sealed at rest and never shown again."""

    model_config = ConfigDict(extra="forbid")

    dev_eui: str = Field(pattern=_EUI)
    activation: Activation
    codec: str = Field("cayenne_lpp", min_length=1, max_length=64)
    join_eui: str | None = Field(None, pattern=_EUI)
    app_key: str | None = Field(None, pattern=_KEY, repr=False)
    dev_addr: str | None = Field(None, pattern=r"^[0-9a-fA-F]{8}$")
    nwk_s_key: str | None = Field(None, pattern=_KEY, repr=False)
    app_s_key: str | None = Field(None, pattern=_KEY, repr=False)


class DeviceCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "device_id": "sensor-001",
                "device_type": "temperature_humidity",
                "location": {"latitude": 37.7749, "longitude": -122.4194},
                "metadata": {"manufacturer": "ACME Sensors", "model": "TH-2000"},
            }
        },
    )

    device_id: str = Field(min_length=1, max_length=128)
    device_type: str = Field(min_length=1, max_length=100)
    name: str | None = Field(None, min_length=1, max_length=200)
    protocol: Protocol = Protocol.MQTT
    tags: dict[str, str] = Field(default_factory=dict)
    location: LocationIn | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    lorawan: LoRaWANIn | None = None


class DeviceUpdate(BaseModel):
    """Fields left out stay as they are; ``location: null`` removes the location.

    ``tags`` and ``metadata`` replace the whole map when given.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = unset(min_length=1, max_length=200)
    tags: dict[str, str] = unset(description="replaces every tag; {} removes them all")
    location: LocationIn | None = None
    metadata: dict[str, Any] = unset(description="replaces the whole map")
    expected_version: int | None = Field(None, ge=1)

    _not_null = refuse_null("name", "tags", "metadata")


class StateChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500)
    expected_version: int | None = Field(None, ge=1)


class DevicePublic(BaseModel):
    device_id: str
    name: str
    device_type: str
    status: DeviceStatus
    protocol: str
    tags: dict[str, str]
    location: dict[str, Any] | None
    metadata: dict[str, Any]
    version: int
    registered_at: datetime
    updated_at: datetime
    last_seen: datetime | None
    connected: bool | None = None
    distance_km: float | None = None

    @classmethod
    def of(cls, view: DeviceView) -> DevicePublic:
        return cls(**view.__dict__)


class DeviceList(BaseModel):
    items: list[DevicePublic]
    next_cursor: str | None


class HistoryEvent(BaseModel):
    position: int
    version: int
    event_type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    actor: str
    correlation_id: str
    data: dict[str, Any]


class DeviceHistory(BaseModel):
    device_id: str
    events: list[HistoryEvent]


class ProvisionIn(BaseModel):
    """``x509``: a client certificate, from ``csr`` (PEM, subject CN = the device id) or, for
    devices that cannot make one, with a key pair made here and shown once. ``oscore``: a
    per-device OSCORE context for CoAP. Default: oscore for CoAP devices, x509 otherwise."""

    model_config = ConfigDict(extra="forbid")

    credential: Literal["x509", "oscore"] | None = None
    csr: str | None = Field(None, min_length=1, max_length=16_384)


class OscoreCredential(BaseModel):
    """The device's side of its OSCORE context, shown once; the platform keeps it sealed."""

    sender_id_hex: str
    recipient_id_hex: str
    secret_hex: str
    salt_hex: str
    algorithm: str = "AES-CCM-16-64-128"
    kdf: str = "HKDF-SHA-256"


class CertificateOut(BaseModel):
    serial: str
    fingerprint: str
    not_after: datetime
    pem: str


class GeneratedKey(BaseModel):
    """The key pair made for a device that could not send a CSR: shown this once, not kept."""

    private_key_pem: str
    pkcs12_base64: str
    pkcs12_password: str


class MqttSettingsOut(BaseModel):
    broker_url: str
    host: str
    port: int
    topics: dict[str, str]


class Provisioned(BaseModel):
    device_id: str
    status: DeviceStatus
    credential_type: str
    credential_fingerprint: str
    reporting_interval_seconds: int
    mqtt: MqttSettingsOut
    certificate: CertificateOut | None = None
    ca_chain: str | None = None
    generated_key: GeneratedKey | None = None
    coap_uri: str | None = None
    oscore: OscoreCredential | None = None


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal["unspecified", "key_compromise", "superseded", "cessation_of_operation",
                    "affiliation_changed"] = "unspecified"


class CertificatePublic(BaseModel):
    serial: str
    fingerprint: str
    not_after: datetime
    issued_at: datetime
    superseded_at: datetime | None
    revoked_at: datetime | None
    reason: str | None


class CertificateList(BaseModel):
    items: list[CertificatePublic]

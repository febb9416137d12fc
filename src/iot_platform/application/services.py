"""Everything a presentation layer may reach, by concern: use cases and the ports they read.

REST routers, the MQTT/CoAP/LoRaWAN servers and the CLI are handed a ``Services`` by the
composition root and never see an adapter; each field is typed by an application class or a
port, so a test can build one from fakes and a new front end (a console, GraphQL) needs nothing
else. One group per concern keeps each router's dependency to the group it serves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from iot_platform.application.access.ports import ApiKeys
from iot_platform.application.access.service import AccessService
from iot_platform.application.alerts.handlers import AlertHandler, RuleHandler
from iot_platform.application.alerts.ports import AlertReadModel
from iot_platform.application.analytics.queries import FleetAnalytics
from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.handlers import CommandHandler
from iot_platform.application.commands.ports import CommandQueries
from iot_platform.application.commands.queries import CommandStatusReader
from iot_platform.application.devices.certificates import (
    CertificateListing,
    CertificateProvisioning,
    CertificatePublication,
)
from iot_platform.application.devices.claims import ClaimProvisioning, Claims
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.devices.provisioning import OscoreProvisioning
from iot_platform.application.devices.queries import DeviceRegistryQueries
from iot_platform.application.lorawan.ports import Gateways, LoRaWANDevices
from iot_platform.application.lorawan.registration import LoRaWANRegistrar
from iot_platform.application.observability import HttpMetrics
from iot_platform.application.ports import EventEncoder, EventStore, ProjectionHealth
from iot_platform.application.realtime import LiveFeed
from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.application.telemetry.ports import ConsumerHealth, LatestState
from iot_platform.application.telemetry.queries import TelemetryQueries

Probe = Callable[[], Awaitable[None]]
"""Raises unless the store behind it answers."""


@dataclass(frozen=True)
class DeviceServices:
    commands: DeviceCommandHandler
    registry: DeviceRegistryQueries
    events: EventStore
    """Read only, for a device's history: its stream is the history."""
    encoder: EventEncoder


@dataclass(frozen=True)
class ProvisioningServices:
    """Credentials for devices: OSCORE contexts, X.509 certificates, claim tokens."""

    oscore: OscoreProvisioning
    certificates: CertificateProvisioning
    issued: CertificateListing
    claims: ClaimProvisioning
    claim_records: Claims


@dataclass(frozen=True)
class TelemetryServices:
    ingest: IngestTelemetry
    queries: TelemetryQueries
    latest: LatestState


@dataclass(frozen=True)
class AlertServices:
    rules: RuleHandler
    alerts: AlertHandler
    views: AlertReadModel


@dataclass(frozen=True)
class CommandServices:
    handler: CommandHandler
    delivery: CommandDelivery
    status: CommandStatusReader
    views: CommandQueries


@dataclass(frozen=True)
class AccessServices:
    service: AccessService
    keys: ApiKeys


@dataclass(frozen=True)
class LoRaWANServices:
    registrar: LoRaWANRegistrar
    sessions: LoRaWANDevices
    gateways: Gateways
    forget_gateway: Callable[[str], None]
    """Tells the gateways' UDP endpoint to re-read a gateway it may have cached as (un)known."""


@dataclass(frozen=True)
class Readiness:
    """What ``/ready`` asks: stores that must answer, projections, the MQTT consumer."""

    probes: Mapping[str, Probe]
    projections: ProjectionHealth
    mqtt: ConsumerHealth | None


@dataclass(frozen=True)
class Services:
    devices: DeviceServices
    provisioning: ProvisioningServices
    telemetry: TelemetryServices
    alerts: AlertServices
    commands: CommandServices
    access: AccessServices
    pki: CertificatePublication
    lorawan: LoRaWANServices
    analytics: FleetAnalytics
    feed: LiveFeed
    readiness: Readiness
    metrics: HttpMetrics
    metrics_endpoint: Callable[..., Awaitable[Any]]
    """The ASGI app serving the metrics registry in the exposition format (``/metrics``)."""

"""The wired platform: ``build_platform`` puts the areas together over a set of adapters;
``Platform.start`` and ``Platform.stop`` hand over to the runtime."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.access.service import AccessService
from iot_platform.application.analytics.queries import AnalyticsLimits, FleetAnalytics
from iot_platform.application.devices.certificates import CertificateProvisioning
from iot_platform.application.devices.claims import ClaimProvisioning
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.devices.provisioning import OscoreProvisioning
from iot_platform.application.outbox import OutboxRelay
from iot_platform.application.ports import PlatformEventStore
from iot_platform.application.realtime import LiveFeed
from iot_platform.composition import runtime
from iot_platform.composition.access import access_from
from iot_platform.composition.adapters import Adapters, adapters_from
from iot_platform.composition.alerts import Alerting, alerting_from
from iot_platform.composition.broker import broker_access, mutual_tls, platform_broker_login
from iot_platform.composition.commands import Commands, commands_from
from iot_platform.composition.devices import devices_from
from iot_platform.composition.lorawan import LoRaWAN, chirpstack_from, lorawan_from, lorawan_stores
from iot_platform.composition.pki import pki_from
from iot_platform.composition.projections import event_flow_from, projections_from
from iot_platform.composition.runtime import Runtime
from iot_platform.composition.telemetry import FAST, DeviceSecurity, Telemetry, telemetry_from
from iot_platform.config import WORKER_ROLES, Settings
from iot_platform.infrastructure.access.store import SqlApiKeys
from iot_platform.infrastructure.eventstore.serialization import EventSerializer
from iot_platform.infrastructure.ingestion_rate import InProcessIngestionRate
from iot_platform.infrastructure.mqtt.embedded_broker import MutualTls
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.pki.authority import CertificateAuthority
from iot_platform.infrastructure.pki.claims import SqlClaims
from iot_platform.infrastructure.pki.store import SqlCertificates
from iot_platform.infrastructure.projections.kafka_feed import KafkaProjectionFeed
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.device_registry import SqlDeviceRegistry
from iot_platform.infrastructure.readmodels.fleet_analytics import SqlFleetAnalytics
from iot_platform.infrastructure.streaming.kafka_events import KafkaDomainEventPublisher


@dataclass
class Platform:
    """Every wired use case and adapter, by area: what the runtime starts and stops, and what
    ``services_from`` picks the presentation's ``Services`` from (no router sees this)."""

    settings: Settings
    engine: AsyncEngine
    serializer: EventSerializer
    store: PlatformEventStore
    projections: ProjectionRunner
    registry: SqlDeviceRegistry
    devices: DeviceCommandHandler
    metrics: PlatformMetrics
    telemetry: Telemetry
    alerting: Alerting
    feed: LiveFeed
    analytics: FleetAnalytics
    commands: Commands
    lorawan: LoRaWAN
    oscore: OscoreProvisioning
    access: AccessService
    access_keys: SqlApiKeys
    pki: CertificateAuthority
    broker_tls: MutualTls | None
    """The embedded broker's mutual-TLS listener, when ``security.mutual_tls_required``."""
    pki_store: SqlCertificates
    certificates: CertificateProvisioning
    claims: ClaimProvisioning
    claim_store: SqlClaims
    relay: OutboxRelay | None = None
    """With streaming.backend kafka: the outbox to the domain-events topic."""
    event_publisher: KafkaDomainEventPublisher | None = None
    event_feed: KafkaProjectionFeed | None = None
    """With streaming.projections_source kafka: what feeds the projections."""
    announce: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    """Where the first start's admin API key is shown (stdout: ``make run`` prints it)."""
    runtime: Runtime = field(default_factory=Runtime)

    async def start(self, *, serve: bool = True, roles: Collection[str] = WORKER_ROLES, front: bool = True) -> None:
        """See ``runtime.start``."""
        await runtime.start(self, serve=serve, roles=roles, front=front)

    async def stop(self) -> None:
        """See ``runtime.stop``."""
        await runtime.stop(self)


def build_platform(settings: Settings, adapters: Adapters | None = None) -> Platform:
    """The platform wired over ``adapters``, or over the real ones the settings name."""
    adapters = adapters or adapters_from(settings)
    box, metrics = adapters.secrets, adapters.metrics
    runner = projections_from(settings, adapters)
    devices = devices_from(settings, adapters, runner)
    broker_tls, identity = mutual_tls(settings, box.derive(b"iot-platform service keys").hex())
    settings = platform_broker_login(settings, box.derive(b"iot-platform embedded broker").hex())
    commands = commands_from(settings, adapters, runner, identity)
    feed = LiveFeed(settings.analytics.stream_buffer)
    alerting = alerting_from(settings, adapters, runner, devices.directory, feed, commands.publisher)
    rate = InProcessIngestionRate()
    sessions, gateways = lorawan_stores(adapters)
    telemetry = telemetry_from(settings, adapters, devices.handler, devices.directory, rate, commands,
                               chirpstack_from(settings, sessions), devices.oscore_contexts,
                               DeviceSecurity(broker_access(settings), broker_tls, identity))
    lorawan = lorawan_from(settings, adapters, sessions, gateways, devices.handler, telemetry.ingest,
                           commands.delivery, commands.handler)
    if settings.analytics.real_time_processing:
        telemetry.add_sink("rules", alerting.engine, FAST)
    telemetry.add_sink("live", feed, FAST)
    flow = event_flow_from(settings, adapters, runner)
    pki = pki_from(settings, adapters, devices.handler)
    access = access_from(settings, adapters)
    return Platform(
        settings=settings,
        engine=adapters.engine,
        serializer=adapters.serializer,
        store=adapters.event_store,
        projections=runner,
        registry=devices.registry,
        devices=devices.handler,
        metrics=metrics,
        telemetry=telemetry,
        alerting=alerting,
        feed=feed,
        analytics=FleetAnalytics(
            SqlFleetAnalytics(adapters.engine),
            telemetry.store,
            rate,
            AnalyticsLimits(
                zscore_threshold=settings.analytics.zscore_threshold,
                max_anomaly_readings=settings.analytics.anomaly_max_readings,
            ),
        ),
        commands=commands,
        lorawan=lorawan,
        oscore=devices.oscore,
        access=access.service,
        access_keys=access.keys,
        pki=pki.authority,
        broker_tls=broker_tls,
        pki_store=pki.issued,
        certificates=pki.certificates,
        claims=pki.claims,
        claim_store=pki.claim_store,
        relay=flow.relay,
        event_publisher=flow.event_publisher,
        event_feed=flow.event_feed,
        announce=adapters.announce,
    )

"""The composition root: the only module that knows every adapter.

``build_platform`` turns settings into wired objects; ``Platform.start`` applies migrations and
starts the background work; ``Platform.stop`` ends it in an order that loses nothing (stop
taking messages, drain the telemetry stream, then close the stores). Tests build the same
platform from their own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.alerts.engine import RuleEngine
from iot_platform.application.alerts.handlers import AlertHandler, RuleHandler
from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.application.alerts.ports import AlertChannel
from iot_platform.application.analytics.queries import AnalyticsLimits, FleetAnalytics
from iot_platform.application.commands.changes import CommandChanges
from iot_platform.application.commands.commands import AcknowledgeCommand
from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.expiry import ExpirySweeper
from iot_platform.application.commands.handlers import CommandHandler, CommandLimits
from iot_platform.application.commands.ports import CommandPublisher
from iot_platform.application.commands.queries import CommandStatusReader
from iot_platform.application.devices.commands import ActivateDevice, RecordConnectivity
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.errors import NotFound
from iot_platform.application.access.service import AccessLimits, AccessService
from iot_platform.application.limits import Throttled
from iot_platform.application.devices.certificates import CertificateProvisioning
from iot_platform.application.devices.claims import ClaimProvisioning
from iot_platform.application.devices.provisioning import OscoreProvisioning
from iot_platform.application.lorawan.registration import LoRaWANRegistrar
from iot_platform.application.outbox import OutboxRelay
from iot_platform.application.realtime import LiveFeed
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.application.services import Services
from iot_platform.application.telemetry.ingestion import IngestionLimits, IngestTelemetry
from iot_platform.application.telemetry.ports import TimeSeriesStore
from iot_platform.application.telemetry.queries import TelemetryQueries
from iot_platform.application.telemetry.model import Reading
from iot_platform.application.telemetry.sinks import StorageWriter
from iot_platform.application.telemetry.stream import TelemetrySink
from iot_platform.config import WORKER_ROLES, Settings, anonymous_coap
from iot_platform.domain.alerts import Alert, AlertRule
from iot_platform.domain.commands import CommandStatus, DeviceCommand
from iot_platform.domain.devices import Device
from iot_platform.domain.errors import DomainError
from iot_platform.infrastructure.eventstore.serialization import (
    EventSerializer,
    build_event_serializer,
)
from iot_platform.infrastructure.clock import EpochClock, SystemClock
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.ingestion_rate import InProcessIngestionRate
from iot_platform.infrastructure.notifications.kafka import KafkaAlertChannel
from iot_platform.infrastructure.notifications.mqtt import MqttAlertChannel
from iot_platform.infrastructure.notifications.queued import QueuedChannel
from iot_platform.infrastructure.notifications.webhook import WebhookChannel
from iot_platform.infrastructure.mqtt.command_channel import MqttCommandChannel
from iot_platform.infrastructure.mqtt.broker_security import BrokerAccess
from iot_platform.infrastructure.mqtt.embedded_broker import EmbeddedBroker, MutualTls
from iot_platform.infrastructure.mqtt.publisher import MqttPublisher
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.presentation.payloads import PayloadLimits
from iot_platform.infrastructure.persistence import migrate
from iot_platform.infrastructure.persistence.database import create_engine
from iot_platform.infrastructure.projections.kafka_feed import KafkaProjectionFeed
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.alerts import (
    AlertRulesProjection,
    AlertsProjection,
    SqlAlertReadModel,
    SqlAlertReadModel,
)
from iot_platform.infrastructure.readmodels.device_commands import (
    DeviceCommandsProjection,
    SqlCommandQueries,
)
from iot_platform.infrastructure.readmodels.device_directory import CachedDeviceDirectory
from iot_platform.infrastructure.readmodels.device_registry import (
    DeviceRegistryProjection,
    SqlDeviceRegistry,
)
from iot_platform.infrastructure.readmodels.device_state import SqlDeviceState
from iot_platform.infrastructure.readmodels.fleet_analytics import SqlFleetAnalytics
from iot_platform.infrastructure.streaming.inprocess import InProcessTelemetryStream, SinkOptions
from iot_platform.infrastructure.streaming.kafka_commands import EveryChannel, KafkaCommandChannel
from iot_platform.infrastructure.streaming.kafka_events import KafkaDomainEventPublisher
from iot_platform.infrastructure.streaming.kafka_telemetry import (
    KafkaDeadLetters,
    KafkaSinkConsumer,
    KafkaTelemetryStream,
)
from iot_platform.infrastructure.timeseries.influx import InfluxTimeSeriesStore
from iot_platform.infrastructure.timeseries.sqlite import SqliteTimeSeriesStore
from iot_platform.presentation.lorawan.chirpstack import ChirpStackUplinks
from iot_platform.presentation.lorawan.codecs import codec_names
from iot_platform.presentation.lorawan.listener import LoRaWANListener
from iot_platform.presentation.lorawan.network_server import NetworkServer
from iot_platform.infrastructure.protocols.lorawan.store import SqlGateways, SqlLoRaWANDevices
from iot_platform.infrastructure.access.store import SqlApiKeys, SqlUsers
from iot_platform.infrastructure.access.passwords import ScryptPasswords
from iot_platform.infrastructure.access.tokens import JwtSigner
from iot_platform.infrastructure.rate_limits import TokenBuckets
from iot_platform.config import RatePolicy
from iot_platform.infrastructure.mqtt.broker_security import SERVICE_IDENTITY
from iot_platform.infrastructure.mqtt.tls import ServiceIdentity, tls_parameters
from iot_platform.infrastructure.pki.authority import CertificateAuthority
from iot_platform.infrastructure.pki.claims import SqlClaims
from iot_platform.infrastructure.pki.store import SqlCertificates
from iot_platform.infrastructure.protocols.oscore import OscoreContexts
from iot_platform.infrastructure.secrets import SecretBox
from iot_platform.presentation.coap.server import CoapCommands, CoapIngestion
from iot_platform.presentation.mqtt.contract import CommandAck, StatusReport
from iot_platform.presentation.mqtt.ingestion import MqttIngestion

log = logging.getLogger(__name__)

ROLES = WORKER_ROLES


class _Activator:
    """Ingestion's DeviceActivator, served by the device command handler."""

    def __init__(self, devices: DeviceCommandHandler) -> None:
        self._devices = devices

    async def activate(self, device_id: str) -> None:
        await self._devices.activate(ActivateDevice(device_id))


class _ConnectivityRecorder:
    """Turns MQTT status reports into DeviceConnected/DeviceDisconnected; ``on_online`` is told
    of every device that says it is online (to push its pending commands)."""

    def __init__(
        self,
        devices: DeviceCommandHandler,
        on_online: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self._devices = devices
        self._on_online = on_online

    async def __call__(self, report: StatusReport) -> None:
        try:
            await self._devices.record_connectivity(
                RecordConnectivity(report.device_id, report.online)
            )
        except (NotFound, DomainError) as exc:
            log.info("status of %s ignored: %s", report.device_id, exc)
            return
        if report.online and self._on_online is not None:
            try:
                await self._on_online(report.device_id)
            except Exception:  # pending commands wait for the next "online"; ingestion goes on
                log.exception("pushing pending commands to %s failed", report.device_id)


class _AckRecorder:
    """Records MQTT command acknowledgements. A refused one (unknown command, or one already
    finished or expired) is logged and counted, then acknowledged to the broker: redelivering
    it would not change the answer. Anything else fails the batch, so the broker redelivers."""

    def __init__(self, handler: CommandHandler, metrics: PlatformMetrics) -> None:
        self._handler = handler
        self._metrics = metrics

    async def __call__(self, ack: CommandAck) -> None:
        try:
            await self._handler.acknowledge(
                AcknowledgeCommand(ack.device_id, ack.command_id, CommandStatus(ack.status), ack.result)
            )
        except (NotFound, DomainError) as exc:
            log.warning("command acknowledgement from %s refused: %s", ack.device_id, exc)
            self._metrics.mqtt_messages.labels("command_ack_refused").inc()


@dataclass
class Commands:
    handler: CommandHandler
    delivery: CommandDelivery
    status: CommandStatusReader
    queries: SqlCommandQueries
    sweeper: ExpirySweeper
    publisher: MqttPublisher | None
    kafka: KafkaCommandChannel | None = None
    """With streaming.backend kafka: every pushed command also goes to the commands topic."""


@dataclass
class Alerting:
    rules: RuleHandler
    alerts: AlertHandler
    read_model: SqlAlertReadModel
    engine: RuleEngine
    outbound: list[QueuedChannel[Any]]
    """The channels that leave the process (webhook, MQTT, Kafka), started and stopped here."""
    channels: list[AlertChannel]

    def notify(self, notice: AlertNotice) -> None:
        """Tells every channel; each decides from the rule whether the notice is for it."""
        rule = self.engine.definition(notice.rule_id)
        for channel in self.channels:
            try:
                channel.send(notice, rule)
            except Exception:  # one broken channel must not silence the others
                log.exception("alert channel %s failed", type(channel).__name__)


@dataclass
class Telemetry:
    store: TimeSeriesStore
    stream: InProcessTelemetryStream | KafkaTelemetryStream
    state: SqlDeviceState
    directory: CachedDeviceDirectory
    ingest: IngestTelemetry
    queries: TelemetryQueries
    mqtt: MqttIngestion | None
    broker: EmbeddedBroker | None
    dead_letters: KafkaDeadLetters | None = None
    coap: CoapIngestion | None = None
    sinks: list[tuple[str, TelemetrySink, SinkOptions]] = field(default_factory=list)
    """(role, sink, options): in process, every sink is subscribed at once; on Kafka, each
    becomes a consumer group member in the processes that run its role."""

    def add_sink(self, role: str, sink: TelemetrySink, options: SinkOptions) -> None:
        self.sinks.append((role, sink, options))
        if isinstance(self.stream, InProcessTelemetryStream):
            self.stream.subscribe(sink, options)


@dataclass
class LoRaWAN:
    registrar: LoRaWANRegistrar
    sessions: SqlLoRaWANDevices
    gateways: SqlGateways
    listener: LoRaWANListener | None
    """The gateways' UDP endpoint and network server, when ``lorawan.enabled``."""

    def forget_gateway(self, gateway_eui: str) -> None:
        if self.listener is not None:
            self.listener.forget(gateway_eui)


@dataclass
class Platform:
    settings: Settings
    engine: AsyncEngine
    serializer: EventSerializer
    store: SqlAlchemyEventStore
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
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _serving: bool = False

    async def start(self, *, serve: bool = True, roles: Collection[str] = ROLES, front: bool = True) -> None:
        """Migrates; with ``serve``, also runs the ``roles`` and, with ``front``, what faces
        devices and people: MQTT ingestion, the embedded broker, command delivery, live feeds.

        ``projections`` keeps the read models (from the store, or the domain-events topic);
        ``relay`` publishes the outbox; ``storage``, ``state`` and ``rules`` are the telemetry
        stream's consumers (on Kafka, each its own consumer group; in process, always all).
        """
        if self.settings.eventstore.migrate_on_start:
            await migrate.upgrade(self.engine)
        if not serve:
            return
        if front:  # the processes that serve REST; a worker has no API, keys or certificates
            await self._ensure_admin()
            await self._ensure_authority()
        self._serving = True
        if "projections" in roles:
            if self.event_feed is not None:
                self._spawn(self.event_feed.run(), "projections")
            else:
                await self.projections.catch_up()
                self._spawn(self.projections.run(), "projections")
        if "relay" in roles and self.relay is not None:
            self._spawn(self.relay.run(), "outbox-relay")
        await self.alerting.engine.load()
        for channel in self.alerting.outbound:
            await channel.start()
        analytics = self.settings.analytics
        if "rules" in roles:
            self._spawn(_every(analytics.rules_refresh_seconds, self.alerting.engine.refresh), "rules-refresh")
            self._spawn(_every(analytics.no_data_check_seconds, self.alerting.engine.sweep), "no-data-sweep")
        telemetry = self.telemetry
        await telemetry.stream.start()
        if isinstance(telemetry.stream, KafkaTelemetryStream):
            self._consume(roles, front)
        if "storage" in roles:
            self._spawn(self._maintain(), "timeseries-maintenance")
        if not front:
            return
        if telemetry.coap is not None:  # first: a taken port stops start-up before anything else
            telemetry.coap.authenticate = self.access.authenticate  # ?token=: the keys of HTTP
            await telemetry.coap.start()
        if self.lorawan.listener is not None:
            await self.lorawan.listener.start()
        if telemetry.broker is not None:
            telemetry.broker.access.device_for = _device_of(self.access)  # REST-issued device credentials
            await telemetry.broker.start()
        if self.commands.publisher is not None:
            await self.commands.publisher.start()
        self._spawn(self.commands.sweeper.run(), "command-expiry")
        self._spawn(_every(3600, self.certificates.retire_superseded), "certificate-renewals")
        if telemetry.mqtt is not None:
            self._spawn(_supervised("MQTT consumer", telemetry.mqtt.run,
                                    self.metrics.mqtt_consumer_restarts.labels,
                                    self.settings.mqtt.reconnect_initial_seconds,
                                    self.settings.mqtt.reconnect_max_seconds), "mqtt-ingestion")
        log.info("platform started (event store: %s, time series: %s)",
                 self.engine.url.get_backend_name(), self.settings.timeseries.backend)

    async def _ensure_admin(self) -> None:
        """The configured admin key exists; or, on a first start without one, a new admin key
        is made and shown once, so a new user can call the API at once."""
        configured = self.settings.security.admin_api_key.get_secret_value()
        if configured:
            try:
                await self.access.ensure_key(configured, "admin (security.admin_api_key)", ("admin",))
            except ValueError as exc:
                raise RuntimeError(f"security.admin_api_key: {exc}") from None
        elif not await self.access.any_keys():
            _, key = await self.access.create_key("initial admin", ("admin",), "first start")
            self.announce(f"Admin API key: {key}")

    async def _ensure_authority(self) -> None:
        """The embedded default makes its device CA on first start; an imported one must exist."""
        if not self.pki.exists():
            if self.settings.security.certificate_authority == "imported":
                raise RuntimeError("security.certificate_authority is imported but no CA is at "
                                   f"{self.settings.security.ca_cert_path}: run iot-platform ca import")
            self.pki.init()
            log.info("device CA created under %s", Path(self.settings.security.ca_cert_path).parent)
        await self.pki.publish_crl()
        if self.broker_tls is not None:
            host, password = self.settings.mqtt.host, self.broker_tls.key_password.encode()
            self.pki.service_certificate("broker", host, password,
                                         tuple(dict.fromkeys((host, "127.0.0.1", "localhost"))))
            self.pki.service_certificate("platform", SERVICE_IDENTITY, password)

    def _consume(self, roles: Collection[str], front: bool) -> None:
        """One Kafka consumer per sink whose role runs here; the live feed follows every
        partition from now on, outside any group, in each process that serves clients."""
        streaming, telemetry = self.settings.streaming, self.telemetry
        assert telemetry.dead_letters is not None
        for role, sink, options in telemetry.sinks:
            live = role == "live"
            if not (front if live else role in roles):
                continue
            consumer = KafkaSinkConsumer(
                streaming.brokers, streaming.topics.sensor_data,
                None if live else f"{streaming.consumer_group}-{role}",
                sink, options, telemetry.dead_letters, self.metrics,
                max_attempts=streaming.max_attempts, letters_undecodable=role == "storage",
            )
            self._spawn(consumer.run(), f"sink-{role}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _maintain(self) -> None:
        interval = self.settings.timeseries.maintain_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.telemetry.store.maintain(time.time_ns())
            except Exception:  # the next round tries again; rollups are recomputed, not summed
                log.exception("time-series maintenance failed")

    async def stop(self) -> None:
        # First stop taking messages, then drain what was taken, then close the stores.
        mqtt = next((t for t in self._tasks if t.get_name() == "mqtt-ingestion"), None)
        if mqtt is not None:
            await _cancel(mqtt)
        if self.telemetry.coap is not None:
            await self.telemetry.coap.stop()
        if self.lorawan.listener is not None:
            await self.lorawan.listener.stop()
        # No more acknowledgements come in; then nothing more goes out, before the broker goes.
        sweeper = next((t for t in self._tasks if t.get_name() == "command-expiry"), None)
        if sweeper is not None:
            await _cancel(sweeper)
        if self.commands.publisher is not None:
            await self.commands.publisher.stop()
        if self._serving:
            await self.telemetry.stream.stop()
            if self.telemetry.broker is not None:
                await self.telemetry.broker.stop()
        for task in self._tasks:
            await _cancel(task)
        self._tasks.clear()
        if self._serving:
            for channel in self.alerting.outbound:
                await channel.stop()
        if self.event_publisher is not None:
            await self.event_publisher.close()
        if self.commands.kafka is not None:
            await self.commands.kafka.close()
        if self.telemetry.dead_letters is not None:
            await self.telemetry.dead_letters.close()
        await self.telemetry.store.close()
        await self.engine.dispose()


async def _every(seconds: float, work: Callable[[], Awaitable[object]]) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:  # the next round tries again
            log.exception("periodic %s failed", getattr(work, "__name__", work))


async def _supervised(
    name: str, work: Callable[[], Awaitable[None]], restarts: Callable[[str], Any],
    initial: float, longest: float,
) -> None:
    """Runs ``work`` for good: if it ends or dies (it should not: it catches what it can),
    it is logged once with the reason, counted under that reason, and restarted after an
    exponential back-off (reset once a run has lasted a minute)."""
    delay = initial
    while True:
        started = time.monotonic()
        try:
            await work()
            reason = "returned"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = type(exc).__name__
            log.error("%s died (%s: %s); restarting in %.1fs", name, reason, str(exc)[:200], delay)
        else:
            log.error("%s ended unexpectedly; restarting in %.1fs", name, delay)
        restarts(reason).inc()
        if time.monotonic() - started > 60:
            delay = initial
        await asyncio.sleep(delay)
        delay = min(delay * 2, longest)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def timeseries_store(settings: Settings) -> TimeSeriesStore:
    ts = settings.timeseries
    if ts.backend == "influxdb":
        return InfluxTimeSeriesStore(
            url=ts.url,
            token=ts.token.get_secret_value(),
            org=ts.org,
            bucket=ts.bucket,
            retention_days=ts.retention_days,
            rollup_retention_days=ts.rollup_retention_days,
        )
    database = Path(make_url(ts.url).database or "timeseries.db")
    database.parent.mkdir(parents=True, exist_ok=True)
    return SqliteTimeSeriesStore(
        database,
        retention_days=ts.retention_days,
        rollup_retention_days=ts.rollup_retention_days,
    )


def build_platform(settings: Settings) -> Platform:
    engine = create_engine(settings.eventstore.url, settings.eventstore.pool_size)
    serializer = build_event_serializer()
    store = SqlAlchemyEventStore(engine, serializer)
    metrics = PlatformMetrics()
    runner = ProjectionRunner(
        engine,
        store,
        [DeviceRegistryProjection(), AlertRulesProjection(), AlertsProjection(),
         DeviceCommandsProjection()],
        batch_size=settings.eventstore.projection_batch_size,
        poll_interval=settings.eventstore.projection_poll_interval_seconds,
        retry_interval=settings.eventstore.projection_retry_seconds,
    )
    store.on_append(runner.wake)
    directory = CachedDeviceDirectory(engine, ttl_seconds=settings.telemetry.device_cache_seconds)
    devices = DeviceCommandHandler(
        EventSourcedRepository(store, Device, settings.eventstore.snapshot_every),
        read_model=runner,
        read_your_writes_timeout=settings.api.read_your_writes_timeout_seconds,
        on_change=directory.forget,
    )
    security = settings.security
    box = SecretBox.from_config(security.encryption_key.get_secret_value(), security.encryption_key_file)
    broker_tls, identity = _mutual_tls(settings, box.derive(b"iot-platform service keys").hex())
    settings = _platform_broker_login(settings, box.derive(b"iot-platform embedded broker").hex())
    commands = _commands(settings, engine, store, runner, identity)
    feed = LiveFeed(settings.analytics.stream_buffer)
    alerting = _alerting(settings, engine, store, runner, directory, feed, commands.publisher)
    rate = InProcessIngestionRate()
    sessions, gateways = SqlLoRaWANDevices(engine, box), SqlGateways(engine)
    lw = settings.lorawan
    chirpstack = ChirpStackUplinks(sessions, lw.chirpstack_topic) if lw.chirpstack_uplinks else None
    oscore = OscoreContexts(engine, box)
    access_keys = SqlApiKeys(engine)
    issued = SqlCertificates(engine)
    passphrase = security.ca_key_passphrase.get_secret_value()
    pki = CertificateAuthority(
        security.ca_cert_path, security.ca_key_path,
        (lambda: passphrase.encode()) if passphrase else (lambda: box.derive(b"iot-platform ca keys").hex().encode()),
        security.ca_key_type, security.device_cert_validity_days, security.crl_path, issued)
    telemetry = _telemetry(settings, engine, devices, directory, metrics, rate, commands, chirpstack, oscore,
                           broker_tls, identity, _broker_access(settings))
    listener = None
    if lw.enabled:
        server = NetworkServer(sessions, devices, telemetry.ingest, lw,
                               lambda outcome: metrics.lorawan_frames.labels(outcome).inc(),
                               commands.delivery, commands.handler)
        listener = LoRaWANListener(lw.host, lw.port, server, gateways, metrics, lw.gateway_cache_seconds)
    lorawan = LoRaWAN(LoRaWANRegistrar(devices, sessions, gateways, codec_names()),
                      sessions, gateways, listener)
    if settings.analytics.real_time_processing:
        telemetry.add_sink("rules", alerting.engine, _FAST)
    telemetry.add_sink("live", feed, _FAST)
    _observe(metrics, alerting, feed)
    metrics.observed.gauges("iot_projection_stalled",
                            "1 while a projection is stopped before an event it cannot apply",
                            "projection", lambda: {n: float(n in runner.stalls) for n in runner.names})
    metrics.observed.counter("iot_projection_failures", "Failed attempts to apply an event, by projection",
                             "projection", lambda: {n: float(runner.failures[n]) for n in runner.names})
    streaming = settings.streaming
    relay = event_publisher = event_feed = None
    if streaming.backend == "kafka":
        event_publisher = KafkaDomainEventPublisher(streaming.brokers, streaming.topics.domain_events, serializer)
        relay = OutboxRelay(store, event_publisher, batch_size=settings.eventstore.projection_batch_size)
        store.on_append(relay.wake)
        metrics.observed.counter("iot_outbox_relayed", "Domain events published to Kafka and marked",
                                 "topic", lambda: {streaming.topics.domain_events: relay.relayed})
    if streaming.projections_source == "kafka":
        event_feed = KafkaProjectionFeed(streaming.brokers, streaming.topics.domain_events,
                                         f"{streaming.consumer_group}-projections", runner, serializer)
    certificates = CertificateProvisioning(devices, pki, issued, timedelta(hours=security.renewal_overlap_hours),
                                           lambda: datetime.now(UTC))
    claim_store = SqlClaims(engine)
    device_registry = SqlDeviceRegistry(engine)

    return Platform(
        settings=settings,
        engine=engine,
        serializer=serializer,
        store=store,
        projections=runner,
        registry=device_registry,
        devices=devices,
        metrics=metrics,
        telemetry=telemetry,
        alerting=alerting,
        feed=feed,
        analytics=FleetAnalytics(
            SqlFleetAnalytics(engine),
            telemetry.store,
            rate,
            AnalyticsLimits(
                zscore_threshold=settings.analytics.zscore_threshold,
                max_anomaly_readings=settings.analytics.anomaly_max_readings,
            ),
        ),
        commands=commands,
        lorawan=lorawan,
        oscore=OscoreProvisioning(devices, oscore),
        access=AccessService(access_keys, SqlUsers(engine),
                             JwtSigner(lambda: box.derive(b"iot-platform bearer tokens")),
                             lambda: datetime.now(UTC), security.token_ttl_seconds,
                             passwords=ScryptPasswords(), limits=_access_limits(settings)),
        access_keys=access_keys,
        pki=pki,
        broker_tls=broker_tls,
        pki_store=issued,
        certificates=certificates,
        claims=ClaimProvisioning(claim_store, devices, certificates, lambda: datetime.now(UTC)),
        claim_store=claim_store,
        relay=relay,
        event_publisher=event_publisher,
        event_feed=event_feed,
    )


def _mutual_tls(settings: Settings, key_password: str) -> tuple[MutualTls | None, ServiceIdentity | None]:
    """With ``security.mutual_tls_required`` and the embedded broker: its listener's files, and
    the platform's own client identity (both certificates made at start from the device CA,
    their keys encrypted under ``key_password``, derived from the encryption key)."""
    if not (settings.security.mutual_tls_required and settings.mqtt.embedded_broker):
        return None, None
    pki = Path(settings.security.ca_cert_path).parent
    chain = str(pki / "chain.pem")
    return (MutualTls(chain, str(pki / "broker.crt"), str(pki / "broker.key"), key_password,
                      settings.security.crl_path),
            ServiceIdentity(chain, str(pki / "platform.crt"), str(pki / "platform.key"), key_password))


def _platform_broker_login(settings: Settings, secret: str) -> Settings:
    """The platform's own login to its embedded broker's plain listener: the service identity
    and a password derived from the encryption key (the same in every process of one platform,
    never logged). Under mutual TLS its service certificate is its login instead."""
    mqtt = settings.mqtt
    if not mqtt.embedded_broker or settings.security.mutual_tls_required:
        return settings
    login = mqtt.model_copy(update={"username": SERVICE_IDENTITY, "password": SecretStr(secret)})
    return settings.model_copy(update={"mqtt": login})


def _broker_access(settings: Settings) -> BrokerAccess:
    """Who the embedded broker admits: the platform by the login above, a device by a device
    token or API key issued for it (``_device_of``, given at start), anonymous clients only
    under allow_anonymous_devices: loopback (which start-up allows only on loopback)."""
    mqtt = settings.mqtt
    return BrokerAccess(
        allow_anonymous=settings.security.allow_anonymous_devices == "loopback",
        service_secret=mqtt.password.get_secret_value() if mqtt.username == SERVICE_IDENTITY else "",
        platform_client_id=mqtt.client_id,
    )


def _device_of(access: AccessService) -> Callable[[str, str | None], Awaitable[str | None]]:
    """The device a credential presented as an MQTT password is bound to, if any. A client
    address whose credentials keep failing is refused for a while, as over REST, so the broker
    is no faster a way to guess keys than the API."""

    async def device_for(credential: str, client: str | None) -> str | None:
        try:
            principal = await access.authenticate(credential, client)
        except Throttled:
            return None
        if principal is None or not principal.may("telemetry:write"):
            return None
        return principal.device_id

    return device_for


def _commands(
    settings: Settings, engine: AsyncEngine, store: SqlAlchemyEventStore, runner: ProjectionRunner,
    identity: ServiceIdentity | None,
) -> Commands:
    s, mqtt = settings.commands, settings.mqtt
    clock = SystemClock()
    changes = CommandChanges()
    queries = SqlCommandQueries(engine)
    handler = CommandHandler(
        EventSourcedRepository(store, DeviceCommand, settings.eventstore.snapshot_every),
        EventSourcedRepository(store, Device, settings.eventstore.snapshot_every),
        queries,
        clock,
        CommandLimits(s.default_ttl_seconds, s.max_ttl_seconds),
        read_model=runner,
        changes=changes,
        read_your_writes_timeout=settings.api.read_your_writes_timeout_seconds,
    )
    publisher = None
    if mqtt.enabled:
        publisher = MqttPublisher(
            mqtt.host,
            mqtt.port,
            client_id=f"{mqtt.client_id}-commands",
            mqtt5=mqtt.mqtt5,
            username=mqtt.username or None,
            password=mqtt.password.get_secret_value() or None,
            keep_alive=mqtt.keep_alive,
            timeout=s.publish_timeout_seconds,
            tls=tls_parameters(mqtt, identity),
            reconnect_initial=mqtt.reconnect_initial_seconds,
            reconnect_max=mqtt.reconnect_max_seconds,
        )
    channel: CommandPublisher | None = None
    if publisher is not None:
        channel = MqttCommandChannel(publisher, mqtt.qos_level)
    kafka_channel = None
    if settings.streaming.backend == "kafka":
        kafka_channel = KafkaCommandChannel(settings.streaming.brokers, settings.streaming.topics.commands)
        channel = kafka_channel if channel is None else EveryChannel([kafka_channel, channel])
    return Commands(
        handler=handler,
        delivery=CommandDelivery(
            handler, queries, clock, channel, changes, s.wait_poll_interval_seconds
        ),
        status=CommandStatusReader(queries, changes, s.wait_poll_interval_seconds),
        queries=queries,
        sweeper=ExpirySweeper(handler, s.expiry_sweep_interval_seconds),
        publisher=publisher,
        kafka=kafka_channel,
    )


def _observe(metrics: PlatformMetrics, alerting: Alerting, feed: LiveFeed) -> None:
    observed, engine = metrics.observed, alerting.engine
    observed.counter("iot_rule_evaluations", "Readings judged against a matching rule", "engine",
                     lambda: {"rules": engine.evaluations})
    observed.gauge("iot_alerts_open", "Open alerts known to this process's rule engine",
                   lambda: engine.open_alerts)
    observed.gauge("iot_rule_states", "(rule, device) evaluation states held in memory",
                   lambda: engine.states)
    observed.gauge("iot_live_subscribers", "SSE and WebSocket clients connected", lambda: feed.subscribers)
    observed.counter("iot_live_clients_dropped", "Live clients dropped for falling behind", "feed",
                     lambda: {"live": feed.dropped})
    for channel in alerting.outbound:
        observed.counter(f"iot_alert_notices_{channel.name}",
                         f"Alert notices sent on the {channel.name} channel, by outcome", "outcome",
                         channel.outcomes)


def _buckets(policy: RatePolicy) -> TokenBuckets:
    return TokenBuckets(policy.per_second, policy.burst)


def _access_limits(settings: Settings) -> AccessLimits:
    limits = settings.rate_limits
    return AccessLimits(login_per_username=_buckets(limits.login_per_username),
                        login_per_client=_buckets(limits.login_per_client),
                        credential_failures_per_client=_buckets(limits.credential_failures_per_client))


# Rules and the live feed are read by people waiting for an alert: short batches.
_FAST = SinkOptions(durable=False, batch_size=2000, flush_interval=0.02, max_pending=100_000)


def _alerting(
    settings: Settings,
    engine: AsyncEngine,
    store: SqlAlchemyEventStore,
    runner: ProjectionRunner,
    directory: CachedDeviceDirectory,
    feed: LiveFeed,
    publisher: MqttPublisher | None,
) -> Alerting:
    analytics, timeout = settings.analytics, settings.api.read_your_writes_timeout_seconds
    rules = RuleHandler(
        EventSourcedRepository(store, AlertRule, settings.eventstore.snapshot_every),
        read_model=runner,
        read_your_writes_timeout=timeout,
    )
    alerts = AlertHandler(
        EventSourcedRepository(store, Alert, 0),
        read_model=runner,
        read_your_writes_timeout=timeout,
    )
    read_model = SqlAlertReadModel(engine)
    rule_engine = RuleEngine(
        alerts, read_model, directory, EpochClock(), max_states=analytics.max_rule_states
    )
    webhook = WebhookChannel(
        timeout=analytics.webhook_timeout_seconds,
        attempts=analytics.webhook_attempts,
        backoff_initial=analytics.webhook_backoff_initial_seconds,
        backoff_max=analytics.webhook_backoff_max_seconds,
        queue_size=analytics.webhook_queue_size,
    )
    outbound: list[QueuedChannel[Any]] = [webhook]
    if publisher is not None:
        outbound.append(MqttAlertChannel(
            publisher,
            attempts=analytics.webhook_attempts,
            backoff_initial=analytics.webhook_backoff_initial_seconds,
            backoff_max=analytics.webhook_backoff_max_seconds,
            queue_size=analytics.webhook_queue_size,
        ))
    streaming = settings.streaming
    if streaming.backend == "kafka":
        outbound.append(KafkaAlertChannel(
            streaming.brokers, streaming.topics.alerts, analytics.webhook_queue_size
        ))
    alerting = Alerting(rules, alerts, read_model, rule_engine, outbound, [feed, *outbound])
    rules.listeners.append(rule_engine.rule_changed)
    alerts.listeners.append(rule_engine.alert_changed)
    alerts.listeners.append(alerting.notify)
    return alerting


def _telemetry(
    settings: Settings,
    engine: AsyncEngine,
    devices: DeviceCommandHandler,
    directory: CachedDeviceDirectory,
    metrics: PlatformMetrics,
    rate: InProcessIngestionRate,
    commands: Commands,
    foreign: ChirpStackUplinks | None,
    oscore: OscoreContexts,
    broker_tls: MutualTls | None,
    identity: ServiceIdentity | None,
    broker_access: BrokerAccess,
) -> Telemetry:
    ts, limits, streaming = settings.timeseries, settings.telemetry, settings.streaming
    store = timeseries_store(settings)
    state = SqlDeviceState(engine)
    stream: InProcessTelemetryStream | KafkaTelemetryStream
    dead_letters = None
    if streaming.backend == "kafka":
        stream = KafkaTelemetryStream(streaming.brokers, streaming.topics.sensor_data)
        dead_letters = KafkaDeadLetters(streaming.brokers, streaming.topics.dead_letter)
    else:
        stream = InProcessTelemetryStream(metrics)

    def refused(reading: Reading, reason: str) -> None:
        metrics.readings_dead_lettered.labels(reading.device_type).inc()
        if dead_letters is not None:
            dead_letters.refused(reading, reason)

    storage = SinkOptions(
        durable=True,
        batch_size=ts.batch_size,
        flush_interval=ts.flush_interval_ms / 1000,
        max_pending=ts.max_pending,
        retry_initial=ts.retry_initial_seconds,
        retry_max=ts.retry_max_seconds,
        max_attempts=streaming.max_attempts,
    )
    ingest = IngestTelemetry(
        directory,
        _Activator(devices),
        stream,
        metrics,
        IngestionLimits(
            max_future_skew_seconds=limits.max_future_skew_seconds,
            max_payload_bytes=limits.max_payload_bytes,
            max_metrics=limits.max_metrics_per_reading,
            dedup_window=limits.dedup_window,
        ),
        rate=rate,
        budget=_buckets(settings.rate_limits.device_readings),
    )
    payload_limits = PayloadLimits(limits.max_payload_bytes, limits.max_nesting_depth, limits.max_payload_items)
    mqtt_settings = settings.mqtt
    broker = None
    if mqtt_settings.embedded_broker:
        broker = EmbeddedBroker(mqtt_settings.host, mqtt_settings.port, broker_access, mutual_tls=broker_tls)
        metrics.observed.counter("iot_mqtt_connections_refused", "Clients the embedded MQTT broker refused",
                                 "reason", lambda: broker_access.refusals)
    mqtt = None
    if mqtt_settings.enabled:
        mqtt = MqttIngestion(
            mqtt_settings,
            ingest,
            _ConnectivityRecorder(devices, commands.delivery.device_online),
            metrics,
            on_ack=_AckRecorder(commands.handler, metrics),
            foreign=foreign,
            tls=tls_parameters(mqtt_settings, identity),
            limits=payload_limits,
            dead_letter=dead_letters.message if dead_letters is not None else None,
        )
    telemetry = Telemetry(
        store=store,
        stream=stream,
        state=state,
        directory=directory,
        ingest=ingest,
        queries=TelemetryQueries(store),
        mqtt=mqtt,
        broker=broker,
        dead_letters=dead_letters,
    )
    coap = settings.coap
    if coap.enabled:
        telemetry.coap = CoapIngestion(
            coap.host, coap.port, ingest, limits.max_payload_bytes, anonymous_coap(settings),
            CoapCommands(commands.delivery, commands.handler, settings.commands.max_wait_seconds),
            oscore,
            limits=PayloadLimits(limits.max_payload_bytes, limits.max_nesting_depth, limits.max_payload_items),
            rejected=lambda reason: metrics.rejected("coap", reason),
            unparsable=metrics.coap_unparsable.inc,
        )
    telemetry.add_sink("storage", StorageWriter(store, refused), storage)
    # The latest state is not what acknowledges a device, so it batches longer (fewer upserts).
    telemetry.add_sink("state", state, replace(storage, durable=False, flush_interval=0.5))
    return telemetry


def services_from(platform: Platform) -> Services:
    """What presentation may reach of a built platform: use cases and ports, never adapters."""
    from prometheus_client import make_asgi_app

    from iot_platform.application.services import (
        AccessServices,
        AlertServices,
        CommandServices,
        DeviceServices,
        LoRaWANServices,
        ProvisioningServices,
        Readiness,
        TelemetryServices,
    )

    telemetry, alerting, commands, lorawan = platform.telemetry, platform.alerting, platform.commands, platform.lorawan
    return Services(
        devices=DeviceServices(commands=platform.devices, registry=platform.registry, events=platform.store,
                               encoder=platform.serializer),
        provisioning=ProvisioningServices(oscore=platform.oscore, certificates=platform.certificates,
                                          issued=platform.pki_store, claims=platform.claims,
                                          claim_records=platform.claim_store),
        telemetry=TelemetryServices(ingest=telemetry.ingest, queries=telemetry.queries, latest=telemetry.state),
        alerts=AlertServices(rules=alerting.rules, alerts=alerting.alerts, views=alerting.read_model),
        commands=CommandServices(handler=commands.handler, delivery=commands.delivery, status=commands.status,
                                 views=commands.queries),
        access=AccessServices(service=platform.access, keys=platform.access_keys),
        pki=platform.pki,
        lorawan=LoRaWANServices(registrar=lorawan.registrar, sessions=lorawan.sessions, gateways=lorawan.gateways,
                                forget_gateway=lorawan.forget_gateway),
        analytics=platform.analytics,
        feed=platform.feed,
        readiness=Readiness(probes={"eventstore": platform.store.check, "timeseries": telemetry.store.check},
                            projections=platform.projections, mqtt=telemetry.mqtt),
        metrics=platform.metrics,
        metrics_endpoint=make_asgi_app(platform.metrics.registry),
    )

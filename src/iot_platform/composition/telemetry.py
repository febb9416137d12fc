"""Telemetry: ingestion and the device-facing servers that feed it (the embedded broker, MQTT
ingestion, CoAP), the stream and its sinks (storage, latest state, rules, live feed), and the
queries over the time-series store."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from iot_platform.application.commands.commands import AcknowledgeCommand
from iot_platform.application.commands.handlers import CommandHandler
from iot_platform.application.devices.commands import ActivateDevice, RecordConnectivity
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.errors import NotFound
from iot_platform.application.telemetry.ingestion import IngestionLimits, IngestTelemetry
from iot_platform.application.telemetry.model import Reading
from iot_platform.application.telemetry.ports import TimeSeriesStore
from iot_platform.application.telemetry.queries import TelemetryQueries
from iot_platform.application.telemetry.sinks import StorageWriter
from iot_platform.application.telemetry.stream import TelemetrySink
from iot_platform.composition.access import buckets
from iot_platform.composition.adapters import Adapters
from iot_platform.composition.commands import Commands
from iot_platform.config import Settings, anonymous_coap
from iot_platform.domain.commands import CommandStatus
from iot_platform.domain.errors import DomainError
from iot_platform.infrastructure.ingestion_rate import InProcessIngestionRate
from iot_platform.infrastructure.mqtt.broker_security import BrokerAccess
from iot_platform.infrastructure.mqtt.embedded_broker import EmbeddedBroker, MutualTls
from iot_platform.infrastructure.mqtt.tls import ServiceIdentity, tls_parameters
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.protocols.oscore import OscoreContexts
from iot_platform.infrastructure.readmodels.device_directory import CachedDeviceDirectory
from iot_platform.infrastructure.readmodels.device_state import SqlDeviceState
from iot_platform.infrastructure.streaming.inprocess import InProcessTelemetryStream, SinkOptions
from iot_platform.infrastructure.streaming.kafka_telemetry import KafkaDeadLetters, KafkaTelemetryStream
from iot_platform.presentation.coap.server import CoapCommands, CoapIngestion
from iot_platform.presentation.lorawan.chirpstack import ChirpStackUplinks
from iot_platform.presentation.mqtt.contract import CommandAck, StatusReport
from iot_platform.presentation.mqtt.ingestion import MqttIngestion
from iot_platform.presentation.payloads import PayloadLimits

log = logging.getLogger(__name__)

FAST = SinkOptions(durable=False, batch_size=2000, flush_interval=0.02, max_pending=100_000)
"""Rules and the live feed are read by people waiting for an alert: short batches."""


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
            await self._devices.record_connectivity(RecordConnectivity(report.device_id, report.online))
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


@dataclass(frozen=True)
class DeviceSecurity:
    """What the device-facing servers need of security: the embedded broker's admission and
    mutual-TLS listener, and the platform's own client identity under mutual TLS."""

    broker_access: BrokerAccess
    broker_tls: MutualTls | None
    identity: ServiceIdentity | None


def telemetry_from(
    settings: Settings,
    adapters: Adapters,
    devices: DeviceCommandHandler,
    directory: CachedDeviceDirectory,
    rate: InProcessIngestionRate,
    commands: Commands,
    foreign: ChirpStackUplinks | None,
    oscore: OscoreContexts,
    security: DeviceSecurity,
) -> Telemetry:
    ts, limits, streaming = settings.timeseries, settings.telemetry, settings.streaming
    store, metrics, stream, dead_letters = adapters.timeseries, adapters.metrics, adapters.stream, adapters.dead_letters
    state = SqlDeviceState(adapters.engine)

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
        budget=buckets(settings.rate_limits.device_readings),
    )
    payload_limits = PayloadLimits(limits.max_payload_bytes, limits.max_nesting_depth, limits.max_payload_items)
    mqtt_settings = settings.mqtt
    broker = None
    if mqtt_settings.embedded_broker:
        access = security.broker_access
        broker = EmbeddedBroker(mqtt_settings.host, mqtt_settings.port, access, mutual_tls=security.broker_tls)
        metrics.observed.counter("iot_mqtt_connections_refused", "Clients the embedded MQTT broker refused",
                                 "reason", lambda: access.refusals)
    mqtt = None
    if mqtt_settings.enabled:
        mqtt = MqttIngestion(
            mqtt_settings,
            ingest,
            _ConnectivityRecorder(devices, commands.delivery.device_online),
            metrics,
            on_ack=_AckRecorder(commands.handler, metrics),
            foreign=foreign,
            tls=tls_parameters(mqtt_settings, security.identity),
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

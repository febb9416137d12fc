"""LoRaWAN: device and gateway registration, and, when ``lorawan.enabled``, the gateways' UDP
endpoint with the network server behind it."""

from __future__ import annotations

from dataclasses import dataclass

from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.handlers import CommandHandler
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.lorawan.registration import LoRaWANRegistrar
from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.composition.adapters import Adapters
from iot_platform.config import Settings
from iot_platform.infrastructure.protocols.lorawan.store import SqlGateways, SqlLoRaWANDevices
from iot_platform.presentation.lorawan.chirpstack import ChirpStackUplinks
from iot_platform.presentation.lorawan.codecs import codec_names
from iot_platform.presentation.lorawan.listener import LoRaWANListener
from iot_platform.presentation.lorawan.network_server import NetworkServer


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


def lorawan_stores(adapters: Adapters) -> tuple[SqlLoRaWANDevices, SqlGateways]:
    return SqlLoRaWANDevices(adapters.engine, adapters.secrets), SqlGateways(adapters.engine)


def chirpstack_from(settings: Settings, sessions: SqlLoRaWANDevices) -> ChirpStackUplinks | None:
    """Uplinks a ChirpStack network server forwards over MQTT, when asked for."""
    lw = settings.lorawan
    return ChirpStackUplinks(sessions, lw.chirpstack_topic) if lw.chirpstack_uplinks else None


def lorawan_from(
    settings: Settings, adapters: Adapters, sessions: SqlLoRaWANDevices, gateways: SqlGateways,
    devices: DeviceCommandHandler, ingest: IngestTelemetry, delivery: CommandDelivery, commands: CommandHandler,
) -> LoRaWAN:
    lw, metrics = settings.lorawan, adapters.metrics
    listener = None
    if lw.enabled:
        server = NetworkServer(sessions, devices, ingest, lw,
                               lambda outcome: metrics.lorawan_frames.labels(outcome).inc(),
                               delivery, commands)
        listener = LoRaWANListener(lw.host, lw.port, server, gateways, metrics, lw.gateway_cache_seconds)
    return LoRaWAN(LoRaWANRegistrar(devices, sessions, gateways, codec_names()), sessions, gateways, listener)

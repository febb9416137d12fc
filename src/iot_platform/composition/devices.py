"""Devices: the event-sourced device handler, the registry read model, the directory ingestion
asks, and OSCORE provisioning."""

from __future__ import annotations

from dataclasses import dataclass

from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.devices.provisioning import OscoreProvisioning
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.composition.adapters import Adapters
from iot_platform.config import Settings
from iot_platform.domain.devices import Device
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.protocols.oscore import OscoreContexts
from iot_platform.infrastructure.readmodels.device_directory import CachedDeviceDirectory
from iot_platform.infrastructure.readmodels.device_registry import SqlDeviceRegistry


@dataclass
class Devices:
    handler: DeviceCommandHandler
    registry: SqlDeviceRegistry
    directory: CachedDeviceDirectory
    oscore_contexts: OscoreContexts
    oscore: OscoreProvisioning


def devices_from(settings: Settings, adapters: Adapters, runner: ProjectionRunner) -> Devices:
    directory = CachedDeviceDirectory(adapters.engine, ttl_seconds=settings.telemetry.device_cache_seconds)
    handler = DeviceCommandHandler(
        EventSourcedRepository(adapters.event_store, Device, settings.eventstore.snapshot_every),
        read_model=runner,
        read_your_writes_timeout=settings.api.read_your_writes_timeout_seconds,
        on_change=directory.forget,
    )
    contexts = OscoreContexts(adapters.engine, adapters.secrets)
    return Devices(handler, SqlDeviceRegistry(adapters.engine), directory, contexts,
                   OscoreProvisioning(handler, contexts))

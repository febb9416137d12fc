"""The composition root: the only module that knows every adapter.

``build_platform`` turns settings into wired objects; ``Platform.start`` applies migrations and
starts the background loops; ``Platform.stop`` ends them and closes connections. Tests build
the same platform from their own settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.config import Settings
from iot_platform.domain.devices import Device
from iot_platform.infrastructure.eventstore.serialization import (
    EventSerializer,
    build_event_serializer,
)
from iot_platform.infrastructure.eventstore.sqlalchemy_store import SqlAlchemyEventStore
from iot_platform.infrastructure.persistence import migrate
from iot_platform.infrastructure.persistence.database import create_engine
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.readmodels.device_registry import (
    DeviceRegistryProjection,
    SqlDeviceRegistry,
)

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    engine: AsyncEngine
    serializer: EventSerializer
    store: SqlAlchemyEventStore
    projections: ProjectionRunner
    registry: SqlDeviceRegistry
    devices: DeviceCommandHandler
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, *, run_projections: bool = True) -> None:
        if self.settings.eventstore.migrate_on_start:
            await migrate.upgrade(self.engine)
        if run_projections:
            await self.projections.catch_up()
            self._tasks.append(asyncio.create_task(self.projections.run(), name="projections"))
        log.info("platform started (event store: %s)", self.engine.url.get_backend_name())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.engine.dispose()


def build_platform(settings: Settings) -> Platform:
    engine = create_engine(settings.eventstore.url, settings.eventstore.pool_size)
    serializer = build_event_serializer()
    store = SqlAlchemyEventStore(engine, serializer)
    runner = ProjectionRunner(
        engine,
        store,
        [DeviceRegistryProjection()],
        batch_size=settings.eventstore.projection_batch_size,
        poll_interval=settings.eventstore.projection_poll_interval_seconds,
    )
    store.on_append(runner.wake)
    devices = DeviceCommandHandler(
        EventSourcedRepository(store, Device, settings.eventstore.snapshot_every),
        read_model=runner,
        read_your_writes_timeout=settings.api.read_your_writes_timeout_seconds,
    )
    return Platform(
        settings=settings,
        engine=engine,
        serializer=serializer,
        store=store,
        projections=runner,
        registry=SqlDeviceRegistry(engine),
        devices=devices,
    )

"""The query side of the device registry: what a view holds and how the fleet is searched."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from iot_platform.application.errors import NotFound
from iot_platform.application.ports import EventStore, RecordedEvent
from iot_platform.domain.devices import Device, DeviceStatus

MAX_PAGE = 1000


@dataclass(frozen=True)
class DeviceView:
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
    """Unknown (None) until the device reports its status."""
    distance_km: float | None = None
    """Set only by a ``near`` search: the great-circle distance from the search centre."""


@dataclass(frozen=True)
class Near:
    latitude: float
    longitude: float
    radius_km: float


@dataclass(frozen=True)
class DeviceSearch:
    device_type: str | None = None
    status: DeviceStatus | None = None
    tags: dict[str, str] = field(default_factory=dict)
    near: Near | None = None
    active_within_minutes: float | None = None
    include_decommissioned: bool = False
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class DevicePage:
    items: list[DeviceView]
    next_cursor: str | None


class InvalidCursor(ValueError):
    pass


class DeviceRegistryQueries(Protocol):
    """The registry read model. Ordered by device id, or nearest first with ``near``."""

    async def get(self, device_id: str) -> DeviceView | None: ...

    async def search(self, criteria: DeviceSearch) -> DevicePage: ...


async def device_history(store: EventStore, device_id: str) -> list[RecordedEvent]:
    """A device's domain events in order; its stream is the history, so no read model."""
    history = await store.read_stream(Device.stream_type, device_id)
    if not history:
        raise NotFound(f"device {device_id!r} is not registered")
    return history

"""The device registry read model: one row per device, its tags, and its last-seen time.

Search runs in SQL on indexed columns: type and status indexes, a (key, value) tag index, and
for ``near`` a latitude band (and a longitude band away from the poles and the antimeridian)
that the index can use before the exact great-circle distance is computed.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from datetime import timedelta
from functools import singledispatchmethod
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iot_platform.application.clock import utcnow
from iot_platform.application.devices.queries import (
    MAX_PAGE,
    DevicePage,
    DeviceSearch,
    DeviceView,
    InvalidCursor,
)
from iot_platform.application.ports import RecordedEvent
from iot_platform.domain.devices import (
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
    DeviceStatus,
    DeviceSuspended,
    DeviceTagsChanged,
    Location,
)
from iot_platform.domain.events import DomainEvent
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import device_presence, rm_device_tags, rm_devices

KM_PER_DEGREE = 111.195


def _location_columns(location: Location | None) -> dict[str, Any]:
    if location is None:
        return {"latitude": None, "longitude": None, "altitude": None, "address": None}
    return {
        "latitude": location.latitude,
        "longitude": location.longitude,
        "altitude": location.altitude,
        "address": location.address,
    }


class DeviceRegistryProjection:
    name = "device_registry"
    tables: Sequence[Table] = (rm_devices, rm_device_tags)
    stream_types = frozenset({"device"})

    async def apply(self, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        if recorded.stream_type == "device":
            await self._on(recorded.event, conn, recorded)

    @singledispatchmethod
    async def _on(self, event: DomainEvent, conn: AsyncConnection, recorded: RecordedEvent) -> None:
        """Events this read model does not show."""

    @_on.register
    async def _(self, event: DeviceRegistered, conn: AsyncConnection, r: RecordedEvent) -> None:
        await conn.execute(
            insert(rm_devices).values(
                device_id=r.aggregate_id,
                name=event.name,
                device_type=event.device_type,
                status=DeviceStatus.REGISTERED.value,
                protocol=event.protocol.value,
                tags=json.dumps(event.tags),
                metadata=json.dumps(event.metadata.as_dict()),
                version=r.version,
                registered_at=event.occurred_at,
                updated_at=event.occurred_at,
                **_location_columns(event.location),
            )
        )
        await self._write_tags(conn, r.aggregate_id, event.tags)

    @_on.register
    async def _(self, event: DeviceRenamed, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, name=event.name)

    @_on.register
    async def _(self, event: DeviceTagsChanged, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, tags=json.dumps(event.tags))
        await conn.execute(delete(rm_device_tags).where(rm_device_tags.c.device_id == r.aggregate_id))
        await self._write_tags(conn, r.aggregate_id, event.tags)

    @_on.register
    async def _(self, event: DeviceLocationChanged, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, **_location_columns(event.location))

    @_on.register
    async def _(self, event: DeviceMetadataChanged, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, metadata=json.dumps(event.metadata.as_dict()))

    @_on.register
    async def _(self, event: DeviceConnected, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, connected=True)

    @_on.register
    async def _(self, event: DeviceDisconnected, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, connected=False)

    @_on.register(DeviceJoined)
    @_on.register(CertificateIssued)
    @_on.register(CertificateRevoked)
    async def _(self, event: DomainEvent, conn: AsyncConnection, r: RecordedEvent) -> None:
        # Sessions and certificates are kept by the network server and the CA: only the
        # version moves, so ETags stay those of the aggregate.
        await self._update(conn, r)

    @_on.register
    async def _(self, event: DeviceProvisioned, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, status=DeviceStatus.PROVISIONED.value)

    @_on.register
    async def _(self, event: DeviceActivated, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, status=DeviceStatus.ACTIVE.value)

    @_on.register
    async def _(self, event: DeviceSuspended, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, status=DeviceStatus.SUSPENDED.value)

    @_on.register
    async def _(self, event: DeviceResumed, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, status=event.resumed_status.value)

    @_on.register
    async def _(self, event: DeviceDecommissioned, conn: AsyncConnection, r: RecordedEvent) -> None:
        await self._update(conn, r, status=DeviceStatus.DECOMMISSIONED.value)

    @staticmethod
    async def _update(conn: AsyncConnection, r: RecordedEvent, **values: Any) -> None:
        # The version guard makes a redelivered event (at-least-once transports) a no-op.
        await conn.execute(
            update(rm_devices)
            .where(rm_devices.c.device_id == r.aggregate_id)
            .where(rm_devices.c.version < r.version)
            .values(version=r.version, updated_at=r.event.occurred_at, **values)
        )

    @staticmethod
    async def _write_tags(conn: AsyncConnection, device_id: str, tags: dict[str, str]) -> None:
        if tags:
            await conn.execute(
                insert(rm_device_tags),
                [{"device_id": device_id, "key": k, "value": v} for k, v in tags.items()],
            )


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is not one this API issued") from None
    if not isinstance(values, list) or len(values) != arity:
        raise InvalidCursor("cursor does not belong to this kind of search")
    return values


class SqlDeviceRegistry:
    """Implements ``DeviceRegistryQueries``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader(engine)

    def _base(self) -> Any:
        joined = rm_devices.outerjoin(
            device_presence, device_presence.c.device_id == rm_devices.c.device_id
        )
        return select(rm_devices, device_presence.c.last_seen).select_from(joined)

    async def get(self, device_id: str) -> DeviceView | None:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(self._base().where(rm_devices.c.device_id == device_id))
            ).mappings().first()
        return None if row is None else self._view(row)

    async def search(self, criteria: DeviceSearch) -> DevicePage:
        limit = max(1, min(criteria.limit, MAX_PAGE))
        query = self._base()
        conditions: list[ColumnElement[bool]] = []
        if criteria.device_type is not None:
            conditions.append(rm_devices.c.device_type == criteria.device_type)
        if criteria.status is not None:
            conditions.append(rm_devices.c.status == criteria.status.value)
        elif not criteria.include_decommissioned:
            conditions.append(rm_devices.c.status != DeviceStatus.DECOMMISSIONED.value)
        for key, value in criteria.tags.items():
            conditions.append(
                exists().where(
                    rm_device_tags.c.device_id == rm_devices.c.device_id,
                    rm_device_tags.c.key == key,
                    rm_device_tags.c.value == value,
                )
            )
        if criteria.active_within_minutes is not None:
            since = utcnow() - timedelta(minutes=criteria.active_within_minutes)
            conditions.append(device_presence.c.last_seen >= since)

        if criteria.near is None:
            if criteria.cursor:
                (after,) = _decode_cursor(criteria.cursor, 1)
                conditions.append(rm_devices.c.device_id > after)
            query = query.where(*conditions).order_by(rm_devices.c.device_id)
        else:
            near = criteria.near
            distance = func.haversine_km(
                near.latitude, near.longitude, rm_devices.c.latitude, rm_devices.c.longitude
            )
            conditions.extend(self._bounding_box(near.latitude, near.longitude, near.radius_km))
            conditions.append(distance <= near.radius_km)
            if criteria.cursor:
                last_distance, last_id = _decode_cursor(criteria.cursor, 2)
                conditions.append(
                    or_(
                        distance > last_distance,
                        and_(distance == last_distance, rm_devices.c.device_id > last_id),
                    )
                )
            query = (
                query.add_columns(distance.label("distance_km"))
                .where(*conditions)
                .order_by(distance, rm_devices.c.device_id)
            )
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).mappings().all()
        items = [self._view(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = _encode_cursor(
                [last.device_id] if criteria.near is None else [last.distance_km, last.device_id]
            )
        return DevicePage(items, next_cursor)

    @staticmethod
    def _bounding_box(lat: float, lon: float, radius_km: float) -> list[ColumnElement[bool]]:
        dlat = radius_km / KM_PER_DEGREE
        box: list[ColumnElement[bool]] = [
            rm_devices.c.latitude.between(lat - dlat, lat + dlat),
            rm_devices.c.longitude.is_not(None),
        ]
        cos_lat = math.cos(math.radians(min(89.0, abs(lat) + dlat)))
        dlon = radius_km / (KM_PER_DEGREE * cos_lat) if cos_lat > 0 else 360.0
        if lat + dlat < 89.0 and lat - dlat > -89.0 and -180.0 < lon - dlon and lon + dlon < 180.0:
            box.append(rm_devices.c.longitude.between(lon - dlon, lon + dlon))
        return box

    @staticmethod
    def _view(row: Any) -> DeviceView:
        location = None
        if row["latitude"] is not None:
            location = {
                "latitude": row["latitude"],
                "longitude": row["longitude"],
                "altitude": row["altitude"],
                "address": row["address"],
            }
        return DeviceView(
            device_id=row["device_id"],
            name=row["name"],
            device_type=row["device_type"],
            status=DeviceStatus(row["status"]),
            protocol=row["protocol"],
            tags=json.loads(row["tags"]),
            location=location,
            metadata=json.loads(row["metadata"]),
            version=row["version"],
            registered_at=row["registered_at"],
            updated_at=row["updated_at"],
            last_seen=row["last_seen"],
            connected=row["connected"],
            distance_km=row.get("distance_km"),
        )

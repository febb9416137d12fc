"""Fleet analytics over the read models: the registry, device presence and open alerts.

Counts are grouped in SQL. Latest values are JSON text in ``device_presence.latest``, which the
two backends query differently, so they are picked out in Python; only the rows of the group
are read (type and tag filters run in SQL on their indexes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.analytics.model import (
    OPEN_ALERT_STATUSES,
    DeviceCounts,
    DeviceGroup,
    GroupLatest,
    LatestValue,
)
from iot_platform.domain.devices import DeviceStatus
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import (
    device_presence,
    rm_alerts,
    rm_device_tags,
    rm_devices,
)


class SqlFleetAnalytics:
    """Implements ``FleetReadModel``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._reader = reader(engine)

    async def device_counts(self) -> DeviceCounts:
        query = select(rm_devices.c.status, rm_devices.c.device_type, func.count()).group_by(
            rm_devices.c.status, rm_devices.c.device_type
        )
        by_status = {status.value: 0 for status in DeviceStatus}
        by_type: dict[str, int] = {}
        async with self._reader.connect() as conn:
            for status, device_type, count in await conn.execute(query):
                by_status[status] = by_status.get(status, 0) + count
                by_type[device_type] = by_type.get(device_type, 0) + count
        return DeviceCounts(sum(by_status.values()), by_status, dict(sorted(by_type.items())))

    async def seen_since(self, moments: Sequence[datetime]) -> list[int]:
        if not moments:
            return []
        query = select(
            *(
                func.coalesce(func.sum(case((device_presence.c.last_seen >= moment, 1), else_=0)), 0)
                for moment in moments
            )
        ).select_from(
            device_presence.join(rm_devices, rm_devices.c.device_id == device_presence.c.device_id)
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).one()
        return [int(count) for count in row]

    async def open_alerts_by_severity(self) -> dict[str, int]:
        query = (
            select(rm_alerts.c.severity, func.count())
            .where(rm_alerts.c.status.in_(OPEN_ALERT_STATUSES))
            .group_by(rm_alerts.c.severity)
        )
        async with self._reader.connect() as conn:
            return {severity: int(count) for severity, count in await conn.execute(query)}

    async def latest_values(self, metric: str, group: DeviceGroup) -> GroupLatest:
        conditions: list[ColumnElement[bool]] = [
            rm_devices.c.status != DeviceStatus.DECOMMISSIONED.value
        ]
        if group.device_type is not None:
            conditions.append(rm_devices.c.device_type == group.device_type)
        for key, value in group.tags.items():
            conditions.append(
                exists().where(
                    rm_device_tags.c.device_id == rm_devices.c.device_id,
                    rm_device_tags.c.key == key,
                    rm_device_tags.c.value == value,
                )
            )
        query = (
            select(rm_devices.c.device_id, rm_devices.c.device_type, device_presence.c.latest)
            .select_from(
                rm_devices.outerjoin(
                    device_presence, device_presence.c.device_id == rm_devices.c.device_id
                )
            )
            .where(*conditions)
            .order_by(rm_devices.c.device_id)
        )
        devices = 0
        values: list[LatestValue] = []
        async with self._reader.connect() as conn:
            for device_id, device_type, latest in await conn.execute(query):
                devices += 1
                pair = json.loads(latest).get(metric) if latest else None
                if pair is not None:
                    values.append(LatestValue(device_id, device_type, pair[0], int(pair[1])))
        return GroupLatest(devices, values)

    async def device_exists(self, device_id: str) -> bool:
        query = select(rm_devices.c.device_id).where(rm_devices.c.device_id == device_id)
        async with self._reader.connect() as conn:
            return (await conn.execute(query)).first() is not None

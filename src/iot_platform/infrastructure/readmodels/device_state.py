"""Latest state per device: last-seen time and the newest value of each metric.

A telemetry sink. Merging happens in memory (a bounded LRU of recently active devices, loaded
from the table on first touch), so each batch costs one upsert per device rather than one per
metric, and a reading older than the stored value never overwrites it. Memory grows with the
number of active devices up to the cache bound, never with the number of readings.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.clock import utcnow
from iot_platform.application.telemetry.model import MetricValue, Reading
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import device_presence

Latest = dict[str, list[Any]]  # metric -> [value, timestamp_ns]


@dataclass(frozen=True)
class DeviceLatest:
    device_id: str
    last_seen: datetime
    metrics: dict[str, tuple[MetricValue, int]]


class SqlDeviceState:
    name = "latest_state"

    def __init__(
        self,
        engine: AsyncEngine,
        cache_devices: int = 20_000,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._reader = reader(engine)
        self._capacity = cache_devices
        self._cache: OrderedDict[str, Latest] = OrderedDict()
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(device_presence)
        self._upsert = stmt.on_conflict_do_update(
            index_elements=[device_presence.c.device_id],
            set_={"last_seen": stmt.excluded.last_seen, "latest": stmt.excluded.latest},
        )

    async def handle(self, readings: Sequence[Reading]) -> None:
        by_device: dict[str, list[Reading]] = {}
        for reading in readings:
            by_device.setdefault(reading.device_id, []).append(reading)
        await self._load([d for d in by_device if d not in self._cache])
        seen = self._clock()
        rows = []
        for device_id, device_readings in by_device.items():
            latest = self._cache.get(device_id, {})
            for reading in device_readings:
                for metric, value in reading.metrics.items():
                    current = latest.get(metric)
                    if current is None or current[1] <= reading.timestamp_ns:
                        latest[metric] = [value, reading.timestamp_ns]
            self._remember(device_id, latest)
            rows.append({"device_id": device_id, "last_seen": seen, "latest": json.dumps(latest)})
        async with self._engine.begin() as conn:
            await conn.execute(self._upsert, rows)

    async def _load(self, device_ids: list[str]) -> None:
        for start in range(0, len(device_ids), 500):
            chunk = device_ids[start : start + 500]
            async with self._reader.connect() as conn:
                result = await conn.execute(
                    select(device_presence.c.device_id, device_presence.c.latest).where(
                        device_presence.c.device_id.in_(chunk)
                    )
                )
                for device_id, latest in result:
                    self._remember(device_id, json.loads(latest))

    def _remember(self, device_id: str, latest: Latest) -> None:
        self._cache[device_id] = latest
        self._cache.move_to_end(device_id)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    async def latest(self, device_id: str) -> DeviceLatest | None:
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(
                    select(device_presence).where(device_presence.c.device_id == device_id)
                )
            ).mappings().first()
        if row is None:
            return None
        metrics = {name: (pair[0], int(pair[1])) for name, pair in json.loads(row["latest"]).items()}
        return DeviceLatest(device_id, row["last_seen"], metrics)

"""Device status, type and tags for ingestion and the rule engine, from the registry read model, cached briefly.

Every batch of readings asks; the registry table answers only for devices not asked about in
the last ``ttl_seconds``. Changes made through this process are forgotten at once (the command
handler calls ``forget``); changes made by another process (a suspension, say) show within the
TTL. A short TTL costs a registry read per device per TTL: at 10,000 devices, 2 s was a
measurable share of ingestion CPU.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.telemetry.ports import DeviceInfo
from iot_platform.domain.devices import DeviceStatus
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import rm_devices


class CachedDeviceDirectory:
    def __init__(self, engine: AsyncEngine, ttl_seconds: float = 2.0, capacity: int = 100_000) -> None:
        self._reader = reader(engine)
        self._ttl = ttl_seconds
        self._capacity = capacity
        # device id -> (expires at, info or None for "not registered")
        self._cache: OrderedDict[str, tuple[float, DeviceInfo | None]] = OrderedDict()

    async def lookup(self, device_ids: Iterable[str]) -> dict[str, DeviceInfo]:
        now = time.monotonic()
        found: dict[str, DeviceInfo] = {}
        missing: list[str] = []
        for device_id in device_ids:
            cached = self._cache.get(device_id)
            if cached is not None and cached[0] > now:
                if cached[1] is not None:
                    found[device_id] = cached[1]
            else:
                missing.append(device_id)
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            async with self._reader.connect() as conn:
                rows = await conn.execute(
                    select(
                        rm_devices.c.device_id,
                        rm_devices.c.status,
                        rm_devices.c.device_type,
                        rm_devices.c.tags,
                    )
                    .where(rm_devices.c.device_id.in_(chunk))
                )
                answered = {
                    device_id: DeviceInfo(DeviceStatus(status), device_type, json.loads(tags))
                    for device_id, status, device_type, tags in rows
                }
            for device_id in chunk:
                info = answered.get(device_id)
                self._store(device_id, now + self._ttl, info)
                if info is not None:
                    found[device_id] = info
        return found

    def _store(self, device_id: str, expires: float, info: DeviceInfo | None) -> None:
        self._cache[device_id] = (expires, info)
        self._cache.move_to_end(device_id)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    def forget(self, device_id: str) -> None:
        self._cache.pop(device_id, None)

    def activated(self, device_id: str, info: DeviceInfo) -> None:
        self._store(device_id, time.monotonic() + self._ttl, info)

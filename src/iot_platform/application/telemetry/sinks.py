"""The storage writer: the durable consumer of the telemetry stream."""

from __future__ import annotations

from collections.abc import Sequence

from iot_platform.application.telemetry.model import Reading
from iot_platform.application.telemetry.ports import TimeSeriesStore


class StorageWriter:
    """Writes each batch to the time-series store; a failure is retried by the stream."""

    name = "storage"

    def __init__(self, store: TimeSeriesStore) -> None:
        self._store = store

    async def handle(self, readings: Sequence[Reading]) -> None:
        await self._store.write(readings)

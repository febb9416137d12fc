"""Ports of the telemetry path.

Adapters of ``TimeSeriesStore``: ``InfluxTimeSeriesStore`` (InfluxDB's HTTP API through
influxdb-client) and ``SqliteTimeSeriesStore`` (the embedded default). One contract test suite
runs against both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from iot_platform.application.telemetry.model import (
    AggregateQuery,
    Bucket,
    MetricValue,
    RawQuery,
    Reading,
    Rejection,
    StoredReading,
    TagQuery,
)
from iot_platform.domain.devices import DeviceStatus


class PermanentWriteError(Exception):
    """The store refused these readings and always will (e.g. a field type conflict in
    InfluxDB); retrying cannot help. Any other exception from ``write`` is worth a retry."""


class TimeSeriesStore(Protocol):
    async def write(self, readings: Sequence[Reading]) -> None:
        """Durably stores the batch before returning; raises if it could not (the caller retries).
        Raises ``PermanentWriteError`` when some reading of the batch can never be stored.

        Idempotent: writing the same device + timestamp + metric again overwrites that value,
        so a redelivered reading is never stored twice.
        """
        ...

    async def query(self, query: RawQuery) -> list[StoredReading]:
        """Readings of one device in [start, end), oldest first unless ``descending``."""
        ...

    async def aggregate(self, query: AggregateQuery) -> list[Bucket]:
        """Non-empty buckets in time order. Hourly/daily resolution reads the rollups."""
        ...

    async def search_by_tag(self, query: TagQuery) -> list[StoredReading]:
        """Readings whose own tags hold key=value, any device, oldest first."""
        ...

    async def maintain(self, now_ns: int) -> None:
        """Brings the hourly and daily rollups up to date and drops raw data past retention.

        Called periodically; safe to call at any time and from a restarted process (rollups
        are recomputed from raw data, never incremented).
        """
        ...

    async def check(self) -> None:
        """Raises unless the store answers; the readiness probe."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    status: DeviceStatus
    device_type: str
    tags: Mapping[str, str] = field(default_factory=dict)
    """The registry's tags (rule selectors match on them)."""


class DeviceDirectory(Protocol):
    """What ingestion needs to know of devices, fast: called for every batch."""

    async def lookup(self, device_ids: Iterable[str]) -> dict[str, DeviceInfo]:
        """Known devices among ``device_ids``; unknown ones are absent."""
        ...

    def forget(self, device_id: str) -> None:
        """Drops a cached answer after this process changed the device."""
        ...

    def activated(self, device_id: str, info: DeviceInfo) -> None:
        """This process just activated the device: answer it as active from now on, even
        before the registry's read model shows it (which it does asynchronously)."""
        ...


class DeviceActivator(Protocol):
    async def activate(self, device_id: str) -> None:
        """Records the device's first reading (registered/provisioned -> active)."""
        ...


class IngestionMetrics(Protocol):
    def accepted(self, protocol: str, count: int) -> None: ...

    def rejected(self, protocol: str, reason: Rejection, count: int = 1) -> None: ...

    def duplicates(self, protocol: str, count: int) -> None: ...


class LatestReadings(Protocol):
    """A device's newest value of each metric (``metrics``: name -> (value, timestamp_ns))."""

    @property
    def device_id(self) -> str: ...

    @property
    def last_seen(self) -> datetime: ...

    @property
    def metrics(self) -> Mapping[str, tuple[MetricValue, int]]: ...


class LatestState(Protocol):
    """The latest-state read model the ``/latest`` endpoint answers from."""

    async def latest(self, device_id: str) -> LatestReadings | None: ...


class ConsumerHealth(Protocol):
    """A broker consumer that can say whether it is taking messages (``ok``) or why not."""

    def health(self) -> str: ...

"""Ports of fleet analytics. ``SqlFleetAnalytics`` reads the read models; the ingestion rate is
kept by ``InProcessIngestionRate``, which ingestion feeds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from iot_platform.application.analytics.model import DeviceCounts, DeviceGroup, GroupLatest


class FleetReadModel(Protocol):
    async def device_counts(self) -> DeviceCounts:
        """Every registered device, decommissioned ones included, by status and by type."""
        ...

    async def seen_since(self, moments: Sequence[datetime]) -> list[int]:
        """For each moment, how many registered devices (any status) were last heard from at
        or after it."""
        ...

    async def open_alerts_by_severity(self) -> dict[str, int]:
        """Alerts raised or acknowledged (not resolved), by severity; absent severities absent."""
        ...

    async def latest_values(self, metric: str, group: DeviceGroup) -> GroupLatest:
        """The latest value of ``metric`` of each device of the group, decommissioned devices
        excluded."""
        ...

    async def device_exists(self, device_id: str) -> bool: ...


class AcceptedReadings(Protocol):
    """Told how many readings ingestion accepted, as it accepts them. Must not block."""

    def add(self, count: int) -> None: ...


class IngestionRate(Protocol):
    window_seconds: int

    def per_second(self) -> float:
        """Readings accepted per second, averaged over the last ``window_seconds``."""
        ...

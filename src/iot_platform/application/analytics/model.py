"""What the fleet read model hands to analytics, and what analytics answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from iot_platform.application.analytics.statistics import Summary
from iot_platform.application.telemetry.model import MetricValue

SEVERITIES = ("info", "warning", "critical")
OPEN_ALERT_STATUSES = ("raised", "acknowledged")


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    """Devices of one type and/or carrying every one of these registry tags; empty: the fleet."""

    device_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceCounts:
    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]


@dataclass(frozen=True, slots=True)
class LatestValue:
    device_id: str
    device_type: str
    value: MetricValue
    timestamp_ns: int


@dataclass(frozen=True, slots=True)
class GroupLatest:
    devices: int
    """Devices in the group (decommissioned ones excluded), whether they report the metric or not."""
    values: list[LatestValue]
    """The latest value of the metric of each device in the group that has one, any type."""


@dataclass(frozen=True, slots=True)
class FleetOverview:
    as_of: datetime
    devices: DeviceCounts
    active_last_hour: int
    active_last_day: int
    open_alerts: dict[str, int]
    ingestion_rate_per_second: float
    rate_window_seconds: int


@dataclass(frozen=True, slots=True)
class FleetStats:
    metric: str
    group: DeviceGroup
    devices: int
    not_numeric: int
    """Devices whose latest value of the metric is a string, left out of the figures."""
    summary: Summary


@dataclass(frozen=True, slots=True)
class AnomalousReading:
    timestamp_ns: int
    value: float
    zscore: float


@dataclass(frozen=True, slots=True)
class DeviceAnomalies:
    device_id: str
    metric: str
    start_ns: int
    end_ns: int
    threshold: float
    examined: int
    max_readings: int
    truncated: bool
    """More readings than ``max_readings`` fell in the window; the newest were examined."""
    oldest_examined_ns: int | None
    mean: float | None
    stddev: float | None
    anomalies: list[AnomalousReading]


class OutlierMethod(StrEnum):
    ROBUST = "robust"
    """Median and scaled MAD (modified z-score)."""
    ZSCORE = "zscore"
    """Mean and population standard deviation."""


@dataclass(frozen=True, slots=True)
class Outlier:
    device_id: str
    device_type: str
    value: float
    timestamp_ns: int
    zscore: float


@dataclass(frozen=True, slots=True)
class FleetOutliers:
    metric: str
    group: DeviceGroup
    method: OutlierMethod
    threshold: float
    examined: int
    center: float | None
    scale: float | None
    outliers: list[Outlier]

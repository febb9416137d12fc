"""Bodies of the fleet analytics routes; separate from the application's result objects."""

from __future__ import annotations

from pydantic import BaseModel, Field

from iot_platform.application.analytics.model import (
    DeviceAnomalies,
    DeviceGroup,
    FleetOutliers,
    FleetOverview,
    FleetStats,
)
from iot_platform.presentation.wire import format_timestamp


class DeviceCountsOut(BaseModel):
    total: int
    by_status: dict[str, int] = Field(
        description="every lifecycle status, decommissioned included, zeros shown"
    )
    by_type: dict[str, int] = Field(description="every device type, decommissioned devices included")


class ActiveOut(BaseModel):
    last_hour: int = Field(description="devices (any status) last heard from within the hour")
    last_day: int = Field(description="devices (any status) last heard from within 24 hours")


class OpenAlertsOut(BaseModel):
    total: int
    by_severity: dict[str, int] = Field(description="raised or acknowledged alerts; info, warning, critical")


class IngestionRateOut(BaseModel):
    readings_per_second: float = Field(
        description="readings accepted by THIS platform process, averaged over the window"
    )
    window_seconds: int


class FleetOverviewOut(BaseModel):
    as_of: str
    devices: DeviceCountsOut
    active: ActiveOut
    open_alerts: OpenAlertsOut
    ingestion: IngestionRateOut

    @classmethod
    def of(cls, o: FleetOverview) -> FleetOverviewOut:
        return cls(
            as_of=o.as_of.isoformat().replace("+00:00", "Z"),
            devices=DeviceCountsOut(
                total=o.devices.total, by_status=o.devices.by_status, by_type=o.devices.by_type
            ),
            active=ActiveOut(last_hour=o.active_last_hour, last_day=o.active_last_day),
            open_alerts=OpenAlertsOut(total=sum(o.open_alerts.values()), by_severity=o.open_alerts),
            ingestion=IngestionRateOut(
                readings_per_second=o.ingestion_rate_per_second, window_seconds=o.rate_window_seconds
            ),
        )


class GroupOut(BaseModel):
    device_type: str | None
    tags: dict[str, str]

    @classmethod
    def of(cls, group: DeviceGroup) -> GroupOut:
        return cls(device_type=group.device_type, tags=group.tags)


class FleetStatsOut(BaseModel):
    metric: str
    group: GroupOut
    devices: int = Field(description="devices in the group, decommissioned ones excluded")
    count: int = Field(description="devices whose latest value of the metric is a number or boolean")
    not_numeric: int = Field(description="devices whose latest value is a string (left out)")
    avg: float | None
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p99: float | None
    percentile_method: str = "nearest_rank"

    @classmethod
    def of(cls, s: FleetStats) -> FleetStatsOut:
        m = s.summary
        return cls(
            metric=s.metric,
            group=GroupOut.of(s.group),
            devices=s.devices,
            count=m.count,
            not_numeric=s.not_numeric,
            avg=m.avg,
            min=m.min,
            max=m.max,
            p50=m.p50,
            p90=m.p90,
            p99=m.p99,
        )


class AnomalousReadingOut(BaseModel):
    timestamp: str
    timestamp_ns: int
    value: float
    zscore: float


class DeviceAnomaliesOut(BaseModel):
    device_id: str
    metric: str
    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    threshold: float
    readings_examined: int
    max_readings: int = Field(description="the most readings one query examines (analytics.anomaly_max_readings)")
    truncated: bool = Field(description="the window held more readings; only the newest were examined")
    oldest_examined: str | None
    mean: float | None
    stddev: float | None = Field(description="population standard deviation of the examined values")
    anomalies: list[AnomalousReadingOut]

    @classmethod
    def of(cls, a: DeviceAnomalies) -> DeviceAnomaliesOut:
        return cls.model_validate(
            {
                "device_id": a.device_id,
                "metric": a.metric,
                "from": format_timestamp(a.start_ns),
                "to": format_timestamp(a.end_ns),
                "threshold": a.threshold,
                "readings_examined": a.examined,
                "max_readings": a.max_readings,
                "truncated": a.truncated,
                "oldest_examined": None if a.oldest_examined_ns is None else format_timestamp(a.oldest_examined_ns),
                "mean": a.mean,
                "stddev": a.stddev,
                "anomalies": [
                    AnomalousReadingOut(
                        timestamp=format_timestamp(r.timestamp_ns),
                        timestamp_ns=r.timestamp_ns,
                        value=r.value,
                        zscore=r.zscore,
                    )
                    for r in a.anomalies
                ],
            }
        )


class OutlierOut(BaseModel):
    device_id: str
    device_type: str
    value: float
    timestamp: str
    timestamp_ns: int
    zscore: float


class FleetOutliersOut(BaseModel):
    metric: str
    group: GroupOut
    method: str = Field(description="robust: median and 1.4826 x MAD; zscore: mean and population stddev")
    threshold: float
    devices_examined: int
    center: float | None = Field(description="the median (robust) or the mean (zscore)")
    scale: float | None = Field(description="the scaled MAD (robust) or the standard deviation (zscore)")
    outliers: list[OutlierOut]

    @classmethod
    def of(cls, f: FleetOutliers) -> FleetOutliersOut:
        return cls(
            metric=f.metric,
            group=GroupOut.of(f.group),
            method=f.method.value,
            threshold=f.threshold,
            devices_examined=f.examined,
            center=f.center,
            scale=f.scale,
            outliers=[
                OutlierOut(
                    device_id=o.device_id,
                    device_type=o.device_type,
                    value=o.value,
                    timestamp=format_timestamp(o.timestamp_ns),
                    timestamp_ns=o.timestamp_ns,
                    zscore=o.zscore,
                )
                for o in f.outliers
            ],
        )

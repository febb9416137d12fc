"""Fleet analytics routes: the overview, statistics of latest values, and anomalies."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from iot_platform.application.analytics.model import DeviceGroup, OutlierMethod
from iot_platform.application.telemetry.model import EARLIEST_NS, NS_PER_DAY
from iot_platform.application.telemetry.queries import check_time
from iot_platform.presentation.rest.deps import AnalyticsDep
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.schemas.analytics import (
    DeviceAnomaliesOut,
    FleetOutliersOut,
    FleetOverviewOut,
    FleetStatsOut,
)
from iot_platform.presentation.rest.security import Principal, require
from iot_platform.presentation.wire import WireError, parse_timestamp

router = APIRouter(tags=["analytics"])

Analyst = Annotated[Principal, Depends(require("analytics:read"))]
# The names ingestion accepts, so a typo is a 422 rather than an empty answer.
Metric = Annotated[
    str,
    Query(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="a metric name, e.g. temperature"),
]
DeviceType = Annotated[str | None, Query(description="only devices of this type")]
Tags = Annotated[
    list[str], Query(description="only devices with this registry tag, key:value (repeatable: all must match)")
]
Threshold = Annotated[
    float | None, Query(gt=0, description="|z| above this is anomalous; default analytics.zscore_threshold")
]


def _group(device_type: str | None, tag: list[str]) -> DeviceGroup:
    tags: dict[str, str] = {}
    for item in tag:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise FieldError("tag", f"{item!r} must be key:value")
        if key in tags and tags[key] != value:
            raise FieldError("tag", f"tag {key!r} is asked with two values")
        tags[key] = value
    return DeviceGroup(device_type=device_type, tags=tags)


def _time(value: str | None, field: str, default: int) -> int:
    if value is None:
        return default
    try:
        return parse_timestamp(value)
    except WireError as exc:
        raise FieldError(field, str(exc)) from None


@router.get("/api/fleet/overview", response_model=FleetOverviewOut)
async def fleet_overview(analytics: AnalyticsDep, _: Analyst) -> FleetOverviewOut:
    """Device counts by status (decommissioned included) and by type; devices heard from in the
    last hour and day; open alerts by severity; and this process's ingestion rate over the last
    minute."""
    return FleetOverviewOut.of(await analytics.overview())


@router.get("/api/analytics/fleet", response_model=FleetStatsOut)
async def fleet_stats(
    analytics: AnalyticsDep,
    _: Analyst,
    metric: Metric,
    device_type: DeviceType = None,
    tag: Tags = [],  # noqa: B006
) -> FleetStatsOut:
    """count, avg, min, max, p50, p90, p99 of each device's latest value of ``metric`` across
    the group (decommissioned devices excluded; booleans count 0/1; strings are left out)."""
    stats = await analytics.fleet_stats(metric, _group(device_type, tag))
    return FleetStatsOut.of(stats)


@router.get("/api/analytics/devices/{device_id}/anomalies", response_model=DeviceAnomaliesOut)
async def device_anomalies(
    device_id: str,
    analytics: AnalyticsDep,
    _: Analyst,
    metric: Metric,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339 or epoch ms; default: to - 24h")] = None,
    to: Annotated[str | None, Query(description="RFC 3339 or epoch ms; default: now")] = None,
    threshold: Threshold = None,
) -> DeviceAnomaliesOut:
    """Readings of the window whose z-score within the device's own readings of the window
    exceeds the threshold. At most ``analytics.anomaly_max_readings`` readings are examined
    (the newest); ``truncated`` says when the window held more."""
    end_ns = _time(to, "to", time.time_ns() + 1)
    check_time("to", end_ns)
    start_ns = _time(from_, "from", max(end_ns - NS_PER_DAY, EARLIEST_NS))
    result = await analytics.device_anomalies(device_id, metric, start_ns, end_ns, threshold)
    return DeviceAnomaliesOut.of(result)


@router.get("/api/analytics/anomalies", response_model=FleetOutliersOut)
async def fleet_anomalies(
    analytics: AnalyticsDep,
    _: Analyst,
    metric: Metric,
    threshold: Threshold = None,
    device_type: DeviceType = None,
    tag: Tags = [],  # noqa: B006
    method: Annotated[
        OutlierMethod, Query(description="robust (median/MAD, the default) or zscore (mean/stddev)")
    ] = OutlierMethod.ROBUST,
) -> FleetOutliersOut:
    """Devices whose latest value of ``metric`` is an outlier among the group's latest values."""
    result = await analytics.fleet_outliers(
        metric, _group(device_type, tag), threshold, method
    )
    return FleetOutliersOut.of(result)

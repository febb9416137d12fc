"""FleetAnalytics: the query handler behind the fleet overview, group statistics and anomalies.

Figures come from read models (registry, latest state, alerts) and, for one device's history,
from the time-series store; nothing here loads an aggregate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from iot_platform.application.analytics.model import (
    SEVERITIES,
    AnomalousReading,
    DeviceAnomalies,
    DeviceGroup,
    FleetOutliers,
    FleetOverview,
    FleetStats,
    Outlier,
    OutlierMethod,
)
from iot_platform.application.analytics.ports import FleetReadModel, IngestionRate
from iot_platform.application.analytics.statistics import (
    classic_spread,
    numeric,
    robust_spread,
    summarize,
)
from iot_platform.application.clock import utcnow
from iot_platform.application.errors import NotFound
from iot_platform.application.telemetry.model import RawQuery
from iot_platform.application.telemetry.ports import TimeSeriesStore
from iot_platform.application.telemetry.queries import InvalidQuery, check_range


@dataclass(frozen=True)
class AnalyticsLimits:
    zscore_threshold: float = 3.0
    """Used when a request names no threshold."""
    max_anomaly_readings: int = 10_000
    """Readings of one device examined per anomaly query at most (the newest of the window)."""


class FleetAnalytics:
    def __init__(
        self,
        read_model: FleetReadModel,
        store: TimeSeriesStore,
        rate: IngestionRate,
        limits: AnalyticsLimits = AnalyticsLimits(),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._read_model = read_model
        self._store = store
        self._rate = rate
        self._limits = limits
        self._clock = clock

    async def overview(self) -> FleetOverview:
        now = self._clock()
        counts = await self._read_model.device_counts()
        last_hour, last_day = await self._read_model.seen_since(
            [now - timedelta(hours=1), now - timedelta(days=1)]
        )
        alerts = await self._read_model.open_alerts_by_severity()
        return FleetOverview(
            as_of=now,
            devices=counts,
            active_last_hour=last_hour,
            active_last_day=last_day,
            open_alerts={s: alerts.get(s, 0) for s in SEVERITIES},
            ingestion_rate_per_second=self._rate.per_second(),
            rate_window_seconds=self._rate.window_seconds,
        )

    async def fleet_stats(self, metric: str, group: DeviceGroup) -> FleetStats:
        latest = await self._read_model.latest_values(metric, group)
        values = [n for v in latest.values if (n := numeric(v.value)) is not None]
        return FleetStats(
            metric=metric,
            group=group,
            devices=latest.devices,
            not_numeric=len(latest.values) - len(values),
            summary=summarize(values),
        )

    async def device_anomalies(
        self,
        device_id: str,
        metric: str,
        start_ns: int,
        end_ns: int,
        threshold: float | None = None,
    ) -> DeviceAnomalies:
        """Readings whose |z| within the examined readings exceeds the threshold, oldest first.

        The mean and deviation are taken over the examined readings themselves, anomalies
        included, as a z-score over a window is usually defined.
        """
        check_range(start_ns, end_ns)
        threshold = self._threshold(threshold)
        if not await self._read_model.device_exists(device_id):
            raise NotFound(f"device {device_id!r} is not registered")
        bound = self._limits.max_anomaly_readings
        # Newest first and one more than the bound, to know whether the window held more.
        readings = await self._store.query(
            RawQuery(device_id, start_ns, end_ns, (metric,), limit=bound + 1, descending=True)
        )
        truncated = len(readings) > bound
        points = [
            (r.timestamp_ns, n)
            for r in reversed(readings[:bound])
            if (n := numeric(r.metrics.get(metric))) is not None
        ]
        spread = classic_spread([value for _, value in points])
        anomalies = []
        if spread is not None:
            for timestamp_ns, value in points:
                z = spread.zscore(value)
                if z is not None and abs(z) > threshold:
                    anomalies.append(AnomalousReading(timestamp_ns, value, z))
        return DeviceAnomalies(
            device_id=device_id,
            metric=metric,
            start_ns=start_ns,
            end_ns=end_ns,
            threshold=threshold,
            examined=len(points),
            max_readings=bound,
            truncated=truncated,
            oldest_examined_ns=points[0][0] if points else None,
            mean=spread.center if spread else None,
            stddev=spread.scale if spread else None,
            anomalies=anomalies,
        )

    async def fleet_outliers(
        self,
        metric: str,
        group: DeviceGroup,
        threshold: float | None = None,
        method: OutlierMethod = OutlierMethod.ROBUST,
    ) -> FleetOutliers:
        """Devices whose latest value's |z| against the group's latest values exceeds the
        threshold, the furthest out first."""
        threshold = self._threshold(threshold)
        latest = await self._read_model.latest_values(metric, group)
        points = [
            (v, n) for v in latest.values if (n := numeric(v.value)) is not None
        ]
        values = [n for _, n in points]
        spread = robust_spread(values) if method is OutlierMethod.ROBUST else classic_spread(values)
        outliers = []
        if spread is not None:
            for latest_value, value in points:
                z = spread.zscore(value)
                if z is not None and abs(z) > threshold:
                    outliers.append(
                        Outlier(
                            latest_value.device_id,
                            latest_value.device_type,
                            value,
                            latest_value.timestamp_ns,
                            z,
                        )
                    )
        outliers.sort(key=lambda o: (-abs(o.zscore), o.device_id))
        return FleetOutliers(
            metric=metric,
            group=group,
            method=method,
            threshold=threshold,
            examined=len(points),
            center=spread.center if spread else None,
            scale=spread.scale if spread else None,
            outliers=outliers,
        )

    def _threshold(self, threshold: float | None) -> float:
        if threshold is None:
            return self._limits.zscore_threshold
        if not threshold > 0:
            raise InvalidQuery("threshold", "must be greater than 0")
        return threshold

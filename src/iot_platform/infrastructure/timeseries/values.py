"""How both time-series adapters store a value and pick a percentile, kept in one place so the
two stores cannot answer differently."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from iot_platform.application.telemetry.model import MetricValue

PERCENTILES = (0.5, 0.9, 0.99)

StoredValue = float | bool | str


def storable(value: MetricValue) -> StoredValue | None:
    """Numbers are stored as floats, so a metric never changes type between an int and a float
    reading (InfluxDB would reject the second as a field type conflict). NaN and infinities
    have no representation in InfluxDB, so neither store keeps them (None: skip the value).
    """
    if isinstance(value, bool | str):
        return value
    number = float(value)
    return number if math.isfinite(number) else None


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``q`` of the values at or
    below it. Index ``ceil(q*n) - 1``, which is what InfluxDB's ``quantile(method:
    "exact_selector")`` picks, so both stores answer the same number."""
    index = max(math.ceil(q * len(sorted_values)) - 1, 0)
    return sorted_values[index]


def percentiles(values: Iterable[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p50, p90, p99 = (nearest_rank(ordered, q) for q in PERCENTILES)
    return p50, p90, p99

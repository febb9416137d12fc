"""The figures fleet analytics answers with, as small pure functions over plain floats.

Percentiles are nearest-rank (the smallest value with at least q of the values at or below it,
index ``ceil(q * n) - 1``), the method ``/api/analytics/aggregated`` already uses, so the same
values give the same p50/p90/p99 on every analytics route. Spreads are population standard
deviations: the values examined are the whole group (every device's latest value, or every
reading of the window), not a sample of a larger one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# Scales the median absolute deviation to estimate the standard deviation of normal data
# (1 / Phi^-1(3/4)), so robust and classic z-scores read on the same scale.
MAD_TO_SIGMA = 1.482602218505602
# Scales the mean absolute deviation likewise (sqrt(pi/2)); the fallback when the MAD is 0.
MEAN_AD_TO_SIGMA = 1.2533141373155003


def numeric(value: object) -> float | None:
    """A metric value as a number: booleans count as 0/1, strings and non-finite numbers as
    nothing (they have no place in an average)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """``q`` in (0, 1]; ``sorted_values`` ascending and not empty."""
    return sorted_values[max(math.ceil(q * len(sorted_values)) - 1, 0)]


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    avg: float | None
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p99: float | None


def summarize(values: Sequence[float]) -> Summary:
    """Every figure is None when there are no values."""
    if not values:
        return Summary(0, None, None, None, None, None, None)
    ordered = sorted(values)
    return Summary(
        count=len(ordered),
        avg=statistics.fmean(ordered),
        min=ordered[0],
        max=ordered[-1],
        p50=nearest_rank(ordered, 0.50),
        p90=nearest_rank(ordered, 0.90),
        p99=nearest_rank(ordered, 0.99),
    )


@dataclass(frozen=True, slots=True)
class Spread:
    """Where values centre and how far they scatter; a z-score is (value - center) / scale."""

    center: float
    scale: float

    def zscore(self, value: float) -> float | None:
        """None when the scale is 0: every value is alike and none stands out."""
        return (value - self.center) / self.scale if self.scale > 0 else None


def classic_spread(values: Sequence[float]) -> Spread | None:
    """Mean and population standard deviation; None without values.

    With n values no z-score can exceed (n - 1) / sqrt(n): it takes 11 values before any
    can pass 3, and an outlier inflates the very deviation it is measured by.
    """
    if not values:
        return None
    return Spread(statistics.fmean(values), statistics.pstdev(values))


def robust_spread(values: Sequence[float]) -> Spread | None:
    """Median and the median absolute deviation scaled to a standard deviation
    (Iglewicz and Hoaglin's modified z-score); None without values.

    A few outliers move neither, so they cannot hide each other. When more than half the
    values are equal the MAD is 0; the mean absolute deviation from the median, scaled, is
    used instead, and only when that is 0 too (all values equal) is the scale 0.
    """
    if not values:
        return None
    median = statistics.median(values)
    deviations = [abs(v - median) for v in values]
    mad = statistics.median(deviations)
    if mad > 0:
        return Spread(median, mad * MAD_TO_SIGMA)
    return Spread(median, statistics.fmean(deviations) * MEAN_AD_TO_SIGMA)

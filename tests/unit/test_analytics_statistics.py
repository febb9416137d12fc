"""The statistics of fleet analytics: pure functions, figures worked out by hand."""

from __future__ import annotations

import math
import statistics

import pytest

from iot_platform.application.analytics.statistics import (
    MAD_TO_SIGMA,
    MEAN_AD_TO_SIGMA,
    Spread,
    Summary,
    classic_spread,
    nearest_rank,
    numeric,
    robust_spread,
    summarize,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, 1.0), (False, 0.0), (3, 3.0), (2.5, 2.5), ("hot", None), (float("nan"), None),
     (float("inf"), None), (None, None)],
)
def test_numbers_count_booleans_count_as_0_or_1_and_strings_do_not(
    value: object, expected: float | None
) -> None:
    assert numeric(value) == expected


def test_nearest_rank_is_the_smallest_value_with_at_least_q_of_the_values_at_or_below_it() -> None:
    values = [float(v) for v in range(1, 11)]  # 1..10
    assert nearest_rank(values, 0.5) == 5.0  # ceil(5) - 1 = index 4
    assert nearest_rank(values, 0.9) == 9.0
    assert nearest_rank(values, 0.99) == 10.0  # ceil(9.9) - 1 = index 9
    assert nearest_rank([7.0], 0.5) == 7.0
    assert nearest_rank([1.0, 2.0, 3.0], 0.5) == 2.0  # ceil(1.5) - 1 = index 1
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0  # never interpolates


def test_a_summary_holds_count_avg_min_max_and_three_percentiles() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert summarize(values) == Summary(count=5, avg=3.0, min=1.0, max=5.0, p50=3.0, p90=5.0, p99=5.0)


def test_a_summary_of_nothing_has_no_figures_but_a_zero_count() -> None:
    assert summarize([]) == Summary(0, None, None, None, None, None, None)


def test_the_classic_spread_is_the_mean_and_the_population_standard_deviation() -> None:
    spread = classic_spread([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert spread == Spread(5.0, 2.0)
    assert spread.zscore(11.0) == 3.0
    assert classic_spread([]) is None


def test_equal_values_have_no_zscore_since_none_stands_out() -> None:
    spread = classic_spread([3.0, 3.0, 3.0])
    assert spread == Spread(3.0, 0.0)
    assert spread.zscore(3.0) is None


def test_the_robust_spread_is_the_median_and_the_scaled_median_absolute_deviation() -> None:
    values = [10.0, 11.0, 12.0, 13.0, 100.0]
    spread = robust_spread(values)
    # median 12; deviations 2,1,0,1,88 -> MAD 1
    assert spread == Spread(12.0, MAD_TO_SIGMA)
    assert spread.zscore(100.0) == pytest.approx(88 / 1.4826, rel=1e-4)
    # The same outlier barely stands out against the mean and deviation it inflates.
    classic = classic_spread(values)
    assert classic is not None and (classic.zscore(100.0) or 0) < 2.0


def test_when_most_values_are_equal_the_mean_absolute_deviation_stands_in_for_the_mad() -> None:
    spread = robust_spread([5.0, 5.0, 5.0, 5.0, 9.0])
    assert spread == Spread(5.0, statistics.fmean([0, 0, 0, 0, 4]) * MEAN_AD_TO_SIGMA)
    assert math.isclose(MAD_TO_SIGMA, 1 / statistics.NormalDist().inv_cdf(0.75))
    assert math.isclose(MEAN_AD_TO_SIGMA, math.sqrt(math.pi / 2))
    assert robust_spread([4.0, 4.0]) == Spread(4.0, 0.0)
    assert robust_spread([]) is None

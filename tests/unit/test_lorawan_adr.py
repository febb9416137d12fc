"""Adaptive data rate decisions: given how well a device was heard, then what it is asked for."""

from __future__ import annotations

import pytest

from iot_platform.domain.lorawan.adr import LinkSettings, adr_decision


@pytest.mark.parametrize(
    ("snrs", "current", "expected"),
    [
        # SF12 needs -20 dB; heard at +5 with a 10 dB margin leaves 15 dB: five steps, DR0 -> DR5.
        ([5.0, -3.0, 1.0], LinkSettings(0, 0), LinkSettings(5, 0)),
        # Another 6 dB beyond DR5 (floor -7.5): two steps of less power.
        ([8.5], LinkSettings(5, 0), LinkSettings(5, 2)),
        # Already as fast and as quiet as it gets.
        ([20.0], LinkSettings(5, 7), LinkSettings(5, 7)),
        # Headroom under one step changes nothing.
        ([-20.0 + 10.0 + 2.9], LinkSettings(0, 0), LinkSettings(0, 0)),
        # Heard worse than the margin: power comes back first, the data rate is left alone.
        ([-7.5 + 10.0 - 6.0], LinkSettings(5, 3), LinkSettings(5, 1)),
        ([-30.0], LinkSettings(2, 0), LinkSettings(2, 0)),
        ([], LinkSettings(1, 1), LinkSettings(1, 1)),
    ],
)
def test_the_decision_spends_each_3_db_of_headroom_on_one_step(
    snrs: list[float], current: LinkSettings, expected: LinkSettings
) -> None:
    assert adr_decision(snrs, current, margin_db=10.0) == expected

"""The rate_limits section: a policy given in part keeps its other default (bad values are in
test_config's one-line table)."""

from __future__ import annotations

import pytest

from iot_platform.config import RateLimitSettings, load_settings


def test_a_policy_given_in_part_keeps_its_other_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOT_RATE_LIMITS__DEVICE_READINGS__BURST", "7")
    limits = load_settings(None).rate_limits
    assert limits.device_readings.burst == 7
    assert limits.device_readings.per_second == RateLimitSettings().device_readings.per_second

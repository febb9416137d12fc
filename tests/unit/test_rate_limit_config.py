"""The rate_limits section: a bad value stops start-up with one line naming the key; a policy
given in part keeps its other default."""

from __future__ import annotations

from pathlib import Path

import pytest

from iot_platform.config import ConfigError, RateLimitSettings, load_settings


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("rate_limits:\n  login_per_username:\n    burst: 0\n", "rate_limits.login_per_username.burst"),
        ("rate_limits:\n  device_readings:\n    per_second: fast\n", "rate_limits.device_readings.per_second"),
        ("rate_limits:\n  login_per_client:\n    per_second: 0\n", "rate_limits.login_per_client.per_second"),
        ("rate_limits:\n  credential_failures_per_client:\n    per_second: .inf\n",
         "rate_limits.credential_failures_per_client.per_second"),
        ("rate_limits:\n  logins: 5\n", "rate_limits.logins"),
    ],
)
def test_a_bad_rate_limit_is_one_line_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as bad:
        load_settings(config)
    assert "\n" not in str(bad.value)
    assert str(bad.value).startswith(f"bad config value {key}:")


def test_a_policy_given_in_part_keeps_its_other_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOT_RATE_LIMITS__DEVICE_READINGS__BURST", "7")
    limits = load_settings(None).rate_limits
    assert limits.device_readings.burst == 7
    assert limits.device_readings.per_second == RateLimitSettings().device_readings.per_second

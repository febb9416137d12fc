"""Defect 7: a time outside what the stores hold is the caller's mistake (422 naming the
parameter), never an overflow inside the store (500).

Both time-series stores keep signed 64-bit nanoseconds: 1677-09-21 to 2262-04-11. The API
takes times from 1678-01-01 to 2262-01-01. Asked with curl, as a user would, on the embedded
store and on InfluxDB.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_service
from tests.e2e.platform_process import RunningPlatform, running_platform
from tests.e2e.test_telemetry import register

pytestmark = pytest.mark.e2e

QUERIES = [
    "/api/devices/d1/data",
    "/api/analytics/aggregated?metric=t&interval=1h",
    "/api/analytics/aggregated?metric=t&interval=1h&device_id=d1",
    "/api/telemetry/search?tag=room:1",
    "/api/analytics/devices/d1/anomalies?metric=t",
    "/api/alerts",
]
OUT_OF_RANGE = ["2300-01-01T00:00:00Z", "1600-01-01T00:00:00Z", "99999999999999999999",
                "0001-01-01T00:00:00+01:00"]  # before year 1 in UTC


@pytest.fixture(params=["embedded", "influxdb"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> RunningPlatform:
    env: dict[str, str] = {}
    if request.param == "influxdb":
        env = {
            "IOT_TIMESERIES__BACKEND": "influxdb",
            "IOT_TIMESERIES__URL": require_service("IOT_TEST_INFLUX_URL", "InfluxDB"),
            "IOT_TIMESERIES__BUCKET": require_service("IOT_TEST_INFLUX_BUCKET", "InfluxDB"),
            "IOT_TIMESERIES__TOKEN": require_service("IOT_TEST_INFLUX_TOKEN", "InfluxDB"),
        }
    with running_platform(tmp_path, f"sqlite:///{tmp_path / 'data' / 'iot.db'}", **env) as running:
        yield running  # type: ignore[misc]


def curl(platform: RunningPlatform, *args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        ["curl", "-s", "-g", "-w", "\n%{http_code}", "-H", platform.headers["Authorization"].join(["Authorization: ", ""]),
         *args],
        capture_output=True, text=True, check=True, timeout=60)
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body) if body else {}


def test_a_time_past_2262_or_before_1678_is_a_422_naming_the_parameter(platform: RunningPlatform) -> None:
    # Given a device
    with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        register(api, "d1")
    wrong: list[str] = []
    for query in QUERIES:
        for parameter in ("from", "to"):
            for value in OUT_OF_RANGE:
                # When a query names a time the stores cannot hold
                separator = "&" if "?" in query else "?"
                status, body = curl(platform, "--get", "--data-urlencode", f"{parameter}={value}",
                                    f"{platform.base_url}{query}")
                # Then it is refused, naming that parameter
                error = body.get("error", {})
                field = error.get("details", [{}])[0].get("field") if isinstance(error, dict) else None  # type: ignore[union-attr]
                if status != 422 or field != parameter:
                    wrong.append(f"{query}{separator}{parameter}={value}: {status} {body}")
    assert not wrong, "\n".join(wrong)


def test_a_reading_timestamped_outside_the_range_is_rejected_with_its_reason(platform: RunningPlatform) -> None:
    with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        register(api, "d1")
    for timestamp, reason in [("2300-01-01T00:00:00Z", "timestamp_in_future"),
                              ("1600-01-01T00:00:00Z", "invalid_timestamp"),
                              (1e30, "timestamp_in_future")]:
        reading = json.dumps({"device_id": "d1", "timestamp": timestamp, "metrics": {"t": 1}})
        status, body = curl(platform, "-H", "Content-Type: application/json", "-d", reading,
                            f"{platform.base_url}/api/telemetry")
        assert (status, body["error"]["code"]) == (422, reason), body  # type: ignore[index]
        status, outcomes = curl(platform, "-H", "Content-Type: application/json", "-d", f"[{reading}]",
                                f"{platform.base_url}/api/telemetry/batch")
        assert status == 200 and outcomes[0]["reason"] == reason, outcomes  # type: ignore[index]

"""A time outside what the stores hold is the caller's mistake (422 naming the
parameter), never an overflow inside the store (500).

Both time-series stores keep signed 64-bit nanoseconds: 1677-09-21 to 2262-04-11. The API
takes times from 1678-01-01 to 2262-01-01. Asked in process, on the embedded store and on
InfluxDB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.api.conftest import InProcessPlatform, in_process_platform
from tests.conftest import require_service
from tests.e2e.test_telemetry import register

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
def platform(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InProcessPlatform]:
    timeseries: dict[str, Any] = {}
    if request.param == "influxdb":
        timeseries = {
            "backend": "influxdb",
            "url": require_service("IOT_TEST_INFLUX_URL", "InfluxDB"),
            "bucket": require_service("IOT_TEST_INFLUX_BUCKET", "InfluxDB"),
            "token": require_service("IOT_TEST_INFLUX_TOKEN", "InfluxDB"),
        }
    with in_process_platform(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'data' / 'iot.db'}",
                             **({"timeseries": timeseries} if timeseries else {})) as running:
        yield running


def ask(platform: InProcessPlatform, method: str, path: str, body: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of a request as the admin; a body goes as JSON."""
    with platform.client(platform.headers) as client:
        answer = client.request(method, path, content=body,
                                headers={"Content-Type": "application/json"} if body is not None else {})
    return answer.status_code, answer.json() if answer.content else {}


def test_a_time_past_2262_or_before_1678_is_a_422_naming_the_parameter(platform: InProcessPlatform) -> None:
    # Given a device
    with platform.client(platform.headers, "/api") as api:
        register(api, "d1")
    wrong: list[str] = []
    for query in QUERIES:
        for parameter in ("from", "to"):
            for value in OUT_OF_RANGE:
                # When a query names a time the stores cannot hold
                separator = "&" if "?" in query else "?"
                status, body = ask(platform, "GET", f"{query}{separator}{urlencode({parameter: value})}")
                # Then it is refused, naming that parameter
                error = body.get("error", {})
                field = error.get("details", [{}])[0].get("field") if isinstance(error, dict) else None
                if status != 422 or field != parameter:
                    wrong.append(f"{query}{separator}{parameter}={value}: {status} {body}")
    assert not wrong, "\n".join(wrong)


def test_a_reading_timestamped_outside_the_range_is_rejected_with_its_reason(platform: InProcessPlatform) -> None:
    with platform.client(platform.headers, "/api") as api:
        register(api, "d1")
    for timestamp, reason in [("2300-01-01T00:00:00Z", "timestamp_in_future"),
                              ("1600-01-01T00:00:00Z", "invalid_timestamp"),
                              (1e30, "timestamp_in_future")]:
        reading = json.dumps({"device_id": "d1", "timestamp": timestamp, "metrics": {"t": 1}})
        status, body = ask(platform, "POST", "/api/telemetry", reading)
        assert (status, body["error"]["code"]) == (422, reason), body
        status, outcomes = ask(platform, "POST", "/api/telemetry/batch", f"[{reading}]")
        assert status == 200 and outcomes[0]["reason"] == reason, outcomes

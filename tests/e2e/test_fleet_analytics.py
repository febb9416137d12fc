"""Fleet analytics end to end: devices registered over REST, readings sent over HTTP and MQTT,
then every figure checked against values the test works out itself.

The anomaly route over one device's history runs on the embedded time-series store (with both
event stores) and on the real InfluxDB.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from iot_platform.infrastructure.persistence.database import create_engine
from iot_platform.infrastructure.persistence.schema import rm_alerts
from tests.conftest import require_service
from tests.e2e.platform_process import RunningPlatform, running_platform
from tests.e2e.test_telemetry import eventually, mosquitto_pub

BASE_MS = 1_735_732_800_000  # 2025-01-01T12:00:00Z
MINUTE_MS = 60_000


def register(api: httpx.Client, device_id: str, device_type: str = "thermo", **tags: str) -> None:
    response = api.post("/devices", json={"device_id": device_id, "device_type": device_type, "tags": tags})
    assert response.status_code == 201, response.text


def send(api: httpx.Client, events: list[dict[str, Any]]) -> list[str]:
    response = api.post("/telemetry/batch", json=events)
    assert response.status_code == 200, response.text
    return [r["status"] for r in response.json()]


def insert_alerts(database_url: str, *rows: tuple[str, str, str]) -> None:
    """The alerts read model belongs to the rule engine; here its rows are written directly."""

    async def write() -> None:
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(insert(rm_alerts), [
                    {"alert_id": alert_id, "rule_id": "r1", "device_id": "t1", "rule_name": "hot",
                     "metric": "temp", "severity": severity, "status": status, "value": 1.0,
                     "message": "too hot", "raised_at": datetime.now(UTC), "version": 1}
                    for alert_id, severity, status in rows
                ])
        finally:
            await engine.dispose()

    asyncio.run(write())


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def median(values: list[float]) -> float:
    ordered, n = sorted(values), len(values)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def assert_unprocessable(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field, error


# The fleet: latest temperature of each device once the readings below are in.
THERMO_HQ = {"t1": 20.0, "t2": 22.5, "t3": True}
THERMO_LAB = {"t4": "fault", "t6": 21.0, "t7": 21.5, "t8": 23.0, "t9": 23.5}


def test_overview_group_statistics_and_fleet_outliers(
    platform: RunningPlatform, api: httpx.Client, platform_database_url: str
) -> None:
    for device_id in THERMO_HQ:
        register(api, device_id, site="hq")
    for device_id in (*THERMO_LAB, "t5", "paused"):
        register(api, device_id, site="lab")
    register(api, "g1", "gps", site="hq")
    register(api, "dead", site="hq")
    register(api, "idle", site="hq")  # never reports

    started = time.monotonic()
    events = [{"device_id": d, "timestamp": BASE_MS, "metrics": {"temp": v}}
              for d, v in {**THERMO_HQ, **THERMO_LAB, "g1": 80.0, "dead": 500.0, "paused": 21.0}.items()]
    events.append({"device_id": "t2", "timestamp": BASE_MS - MINUTE_MS, "metrics": {"temp": 99.0}})  # older
    events.append({"device_id": "ghost", "metrics": {"temp": 1.0}})  # unknown: rejected, not counted
    statuses = send(api, events)
    assert statuses.count("stored") == 12 and statuses[-1] == "rejected"
    mosquitto_pub(platform.mqtt_port, "devices/t5/telemetry",
                  message='{"temp": 24.0, "timestamp": "2025-01-01T12:00:00Z"}')
    accepted = 13
    # Last-seen follows within the latest-state sink's flush: every device but "idle".
    eventually(lambda: api.get("/fleet/overview").json()["active"]["last_hour"], lambda n: n == 12)
    assert api.delete("/devices/dead").status_code == 200
    assert api.post("/devices/paused/suspend", json={}).status_code == 200
    insert_alerts(platform_database_url, ("a1", "critical", "raised"), ("a2", "warning", "acknowledged"),
                  ("a3", "critical", "resolved"), ("a4", "info", "resolved"))

    overview = api.get("/fleet/overview")
    elapsed = time.monotonic() - started
    assert overview.status_code == 200, overview.text
    body = overview.json()
    assert body["devices"] == {
        "total": 13,
        "by_status": {"registered": 1, "provisioned": 0, "active": 10, "suspended": 1, "decommissioned": 1},
        "by_type": {"gps": 1, "thermo": 12},
    }
    assert body["active"] == {"last_hour": 12, "last_day": 12}  # all but idle, dead included
    assert body["open_alerts"] == {"total": 2, "by_severity": {"info": 0, "warning": 1, "critical": 1}}
    rate = body["ingestion"]
    assert rate["window_seconds"] == 60
    if elapsed < 59:  # every reading is still inside the one-minute window
        assert rate["readings_per_second"] == accepted / 60
    else:
        assert 0 <= rate["readings_per_second"] <= accepted / 60

    # Latest values: decommissioned "dead" is out, t2's newer reading wins, True counts 1,
    # "fault" is left out, and "idle" is in the group without a value.
    numbers = [20.0, 22.5, 1.0, 21.0, 21.5, 23.0, 23.5, 24.0, 21.0, 80.0]
    fleet = api.get("/analytics/fleet", params={"metric": "temp"}).json()
    assert fleet == {
        "metric": "temp", "group": {"device_type": None, "tags": {}},
        "devices": 12, "count": 10, "not_numeric": 1,
        "avg": math.fsum(numbers) / 10, "min": 1.0, "max": 80.0,
        "p50": nearest_rank(numbers, 0.5), "p90": nearest_rank(numbers, 0.9),
        "p99": nearest_rank(numbers, 0.99), "percentile_method": "nearest_rank",
    }
    assert (fleet["p50"], fleet["p90"], fleet["p99"]) == (21.5, 24.0, 80.0)
    hq = api.get("/analytics/fleet", params={"metric": "temp", "device_type": "thermo", "tag": "site:hq"}).json()
    assert (hq["devices"], hq["count"], hq["avg"], hq["min"], hq["max"], hq["p50"]) == (
        4, 3, (20.0 + 22.5 + 1.0) / 3, 1.0, 22.5, 20.0
    )
    nothing = api.get("/analytics/fleet", params={"metric": "pressure"}).json()
    assert (nothing["devices"], nothing["count"], nothing["avg"], nothing["p99"]) == (12, 0, None, None)

    # Outliers among the latest values: median and scaled MAD by default.
    center = median(numbers)
    scale = median([abs(v - center) for v in numbers]) * 1.482602218505602
    assert (center, scale) == (22.0, 1.25 * 1.482602218505602)
    robust = api.get("/analytics/anomalies", params={"metric": "temp"}).json()
    assert (robust["method"], robust["threshold"], robust["devices_examined"]) == ("robust", 3.0, 10)
    assert (robust["center"], robust["scale"]) == (center, scale)
    assert [(o["device_id"], o["device_type"], o["value"], o["zscore"], o["timestamp"]) for o in robust["outliers"]] == [
        ("g1", "gps", 80.0, (80.0 - center) / scale, "2025-01-01T12:00:00Z"),
        ("t3", "thermo", 1.0, (1.0 - center) / scale, "2025-01-01T12:00:00Z"),
    ]
    mean = math.fsum(numbers) / 10
    stddev = math.sqrt(math.fsum((v - mean) ** 2 for v in numbers) / 10)
    classic = api.get("/analytics/anomalies", params={"metric": "temp", "method": "zscore", "threshold": 2.5}).json()
    assert (classic["center"], classic["scale"]) == (pytest.approx(mean), pytest.approx(stddev))
    assert [o["device_id"] for o in classic["outliers"]] == ["g1"]  # (80 - 25.75) / 19.2: about 2.8
    lab = api.get("/analytics/anomalies", params={"metric": "temp", "tag": "site:lab"}).json()
    assert (lab["devices_examined"], lab["outliers"]) == (6, [])

    for params, field in (
        ({}, "metric"),
        ({"metric": "bad name"}, "metric"),
        ({"metric": "temp", "tag": "nocolon"}, "tag"),
    ):
        assert_unprocessable(api.get("/analytics/fleet", params=params), field)
    assert_unprocessable(api.get("/analytics/anomalies", params={"metric": "temp", "threshold": "0"}), "threshold")
    assert_unprocessable(api.get("/analytics/anomalies", params={"metric": "temp", "method": "iqr"}), "method")
    missing = api.get("/analytics/devices/ghost/anomalies", params={"metric": "temp"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    documented = httpx.get(f"{platform.base_url}/openapi.json").json()
    for path, schema in (("/api/fleet/overview", "FleetOverviewOut"), ("/api/analytics/fleet", "FleetStatsOut"),
                         ("/api/analytics/devices/{device_id}/anomalies", "DeviceAnomaliesOut"),
                         ("/api/analytics/anomalies", "FleetOutliersOut")):
        answer = documented["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer == {"$ref": f"#/components/schemas/{schema}"}


# One device's history: alternating 10 and 12 every minute, and a spike of 40.
HISTORY = [(BASE_MS + i * MINUTE_MS, 10.0 if i % 2 == 0 else 12.0) for i in range(30)]
HISTORY[25] = (HISTORY[25][0], 40.0)
WINDOW = {"from": "2025-01-01T12:00:00Z", "to": "2025-01-01T13:00:00Z"}


def check_device_anomalies(api: httpx.Client, device_id: str, max_readings: int) -> None:
    register(api, device_id, "thermo")
    events = [{"device_id": device_id, "timestamp": ts, "metrics": {"temp": v}} for ts, v in HISTORY]
    events.append({"device_id": device_id, "timestamp": BASE_MS + 3 * 3600_000, "metrics": {"temp": 500.0}})
    assert set(send(api, events)) == {"stored"}

    examined = HISTORY[-max_readings:]  # the newest of the window
    values = [v for _, v in examined]
    mean = math.fsum(values) / len(values)
    stddev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    found = api.get(f"/analytics/devices/{device_id}/anomalies", params={"metric": "temp", **WINDOW})
    assert found.status_code == 200, found.text
    body = found.json()
    assert {k: body[k] for k in ("device_id", "metric", "from", "to", "threshold", "readings_examined",
                                 "max_readings", "truncated")} == {
        "device_id": device_id, "metric": "temp", **WINDOW, "threshold": 3.0,
        "readings_examined": len(examined), "max_readings": max_readings,
        "truncated": len(HISTORY) > max_readings,
    }
    assert body["oldest_examined"] == datetime.fromtimestamp(examined[0][0] / 1000, UTC).isoformat().replace("+00:00", "Z")
    assert (body["mean"], body["stddev"]) == (pytest.approx(mean), pytest.approx(stddev))
    spike = HISTORY[25]
    assert [(a["timestamp_ns"], a["value"]) for a in body["anomalies"]] == [(spike[0] * 1_000_000, 40.0)]
    assert body["anomalies"][0]["timestamp"] == "2025-01-01T12:25:00Z"
    assert body["anomalies"][0]["zscore"] == pytest.approx((40.0 - mean) / stddev)
    assert body["anomalies"][0]["zscore"] > 3

    stricter = api.get(f"/analytics/devices/{device_id}/anomalies",
                       params={"metric": "temp", "threshold": "10", **WINDOW}).json()
    assert (stricter["threshold"], stricter["anomalies"]) == (10.0, [])
    outside = api.get(f"/analytics/devices/{device_id}/anomalies",
                      params={"metric": "temp", "from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"}).json()
    assert (outside["readings_examined"], outside["mean"], outside["anomalies"]) == (0, None, [])
    assert_unprocessable(api.get(f"/analytics/devices/{device_id}/anomalies",
                                 params={"metric": "temp", "from": WINDOW["to"], "to": WINDOW["from"]}), "from")
    assert_unprocessable(api.get(f"/analytics/devices/{device_id}/anomalies",
                                 params={"metric": "temp", "from": "yesterday"}), "from")


@dataclass
class InfluxDatabase:
    """A database of one test's own on the harness's InfluxDB."""

    url: str
    token: str
    name: str

    def influxql(self, statement: str, **params: str) -> Any:
        headers = {"Authorization": f"Token {self.token}"} if self.token else {}
        response = httpx.post(f"{self.url}/query", params={"q": statement, **params}, headers=headers, timeout=30)
        response.raise_for_status()
        assert "error" not in response.text, response.text
        return response.json()

    def platform_settings(self) -> dict[str, str]:
        return {"IOT_TIMESERIES__BACKEND": "influxdb", "IOT_TIMESERIES__URL": self.url,
                "IOT_TIMESERIES__BUCKET": f"{self.name}/autogen", "IOT_TIMESERIES__TOKEN": self.token}


@pytest.fixture
def influx_database() -> Iterator[InfluxDatabase]:
    database = InfluxDatabase(
        require_service("IOT_TEST_INFLUX_URL", "InfluxDB"),
        os.environ.get("IOT_TEST_INFLUX_TOKEN", ""),
        f"iot_analytics_e2e_{uuid.uuid4().hex[:12]}",
    )
    database.influxql(f'CREATE DATABASE "{database.name}"')
    try:
        yield database
    finally:
        database.influxql(f'DROP DATABASE "{database.name}"')


def test_device_anomalies_on_influxdb_with_a_bound_on_the_readings_examined(
    tmp_path: Path, influx_database: InfluxDatabase
) -> None:
    database_url = f"sqlite:///{tmp_path / 'data' / 'iot.db'}"
    with running_platform(tmp_path, database_url, 60.0, IOT_ANALYTICS__ANOMALY_MAX_READINGS="20",
                          **influx_database.platform_settings()) as platform:
        with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
            check_device_anomalies(api, "th-influx", max_readings=20)
    # The readings examined were InfluxDB's: all 31 are stored there.
    counted = influx_database.influxql('SELECT count("temp") FROM "telemetry"', db=influx_database.name)
    assert counted["results"][0]["series"][0]["values"][0][1] == 31

"""Telemetry end to end: the whole platform, real MQTT clients, values read back over REST."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest

from tests.conftest import require_service
from tests.e2e.platform_process import RunningPlatform, external_mqtt_env, running_platform


def mosquitto_pub(port: int, topic: str, *, message: str | None = None, file: Path | None = None,
                  retain: bool = False) -> None:
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic]
    args += ["-f", str(file)] if file is not None else ["-m", message or ""]
    if retain:
        args.append("-r")
    subprocess.run(args, check=True, timeout=30)


def eventually(fetch: Any, until: Any, deadline: float = 30.0) -> Any:
    """Polls ``fetch`` until ``until(result)``; fails with the last result after the deadline."""
    give_up = time.monotonic() + deadline
    while True:
        result = fetch()
        if until(result):
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"condition not met; last result: {result}")
        time.sleep(0.1)


def register(api: httpx.Client, device_id: str, **fields: Any) -> None:
    response = api.post("/devices", json={"device_id": device_id, "device_type": "th", **fields})
    assert response.status_code == 201, response.text


def readings(api: httpx.Client, device_id: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get(f"/devices/{device_id}/data", params={"from": "2020-01-01T00:00:00Z", **params})
    assert response.status_code == 200, response.text
    return list(response.json()["readings"])


def test_mosquitto_pub_json_and_cbor_then_read_back_over_rest(platform: RunningPlatform, api: httpx.Client) -> None:
    register(api, "sensor-001")
    assert api.get("/devices/sensor-001").json()["status"] == "registered"
    mosquitto_pub(platform.mqtt_port, "devices/sensor-001/telemetry",
                  message='{"temperature": 23.5, "humidity": 45.2, "timestamp": "2024-01-01T12:00:00Z"}')
    cbor_file = platform.workdir / "reading.cbor"
    cbor_file.write_bytes(cbor2.dumps({"message_id": "c-1", "timestamp": "2024-01-01T12:00:01Z",
                                       "metrics": {"temperature": 24.0, "door_open": True}}))
    mosquitto_pub(platform.mqtt_port, "devices/sensor-001/telemetry", file=cbor_file)
    mosquitto_pub(platform.mqtt_port, "sensors/sensor-001/pressure",
                  message='{"value": 1013.2, "timestamp": "2024-01-01T12:00:02Z"}')
    got = eventually(lambda: readings(api, "sensor-001"), lambda r: len(r) == 3)
    assert got == [
        {"timestamp": "2024-01-01T12:00:00Z", "timestamp_ns": 1704110400000000000,
         "metrics": {"humidity": 45.2, "temperature": 23.5}, "tags": {}},
        {"timestamp": "2024-01-01T12:00:01Z", "timestamp_ns": 1704110401000000000,
         "metrics": {"door_open": True, "temperature": 24.0}, "tags": {}},
        {"timestamp": "2024-01-01T12:00:02Z", "timestamp_ns": 1704110402000000000,
         "metrics": {"pressure": 1013.2}, "tags": {}},
    ]
    # Stored readings are readable at once; last-seen follows within the state sink's flush.
    device = eventually(lambda: api.get("/devices/sensor-001").json(), lambda d: d["last_seen"])
    assert device["status"] == "active"
    latest = eventually(lambda: api.get("/devices/sensor-001/data/latest").json(),
                        lambda body: len(body["metrics"]) == 4)
    assert latest["metrics"]["temperature"] == {
        "value": 24.0, "timestamp": "2024-01-01T12:00:01Z", "timestamp_ns": 1704110401000000000
    }
    history = [e["event_type"] for e in api.get("/devices/sensor-001/history").json()["events"]]
    assert history == ["DeviceRegistered", "DeviceActivated"]


def test_malformed_mqtt_payloads_are_counted_and_the_rest_is_stored(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    register(api, "sensor-001")
    mosquitto_pub(platform.mqtt_port, "devices/sensor-001/telemetry", message="{not json")
    mosquitto_pub(platform.mqtt_port, "devices/ghost/telemetry", message='{"t": 1}')
    mosquitto_pub(platform.mqtt_port, "devices/sensor-001/telemetry", message='{"t": 1, "bad name": 2}')
    mosquitto_pub(platform.mqtt_port, "devices/sensor-001/telemetry", message='{"t": 2.5}')
    eventually(lambda: readings(api, "sensor-001"), lambda r: len(r) == 1)
    metrics = httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text
    for reason in ("undecodable", "unknown_device", "invalid_metric_name"):
        assert f'iot_readings_rejected_total{{protocol="mqtt",reason="{reason}"}} 1.0' in metrics
    assert 'iot_readings_accepted_total{protocol="mqtt"} 1.0' in metrics


def test_a_qos1_burst_that_ends_in_a_disconnect_is_stored_whole(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    """mosquitto_pub -l sends its lines and disconnects as soon as the last is acknowledged: the
    broker must hand on every reading it acknowledged, the burst's tail too."""
    register(api, "sensor-001")
    an_hour_ago = int(time.time() * 1000) - 3_600_000  # inside timeseries.retention_days
    lines = "".join(json.dumps({"message_id": f"burst-{n}", "timestamp": an_hour_ago + n,
                                "metrics": {"temperature": n}}) + "\n" for n in range(300))
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(platform.mqtt_port), "-q", "1",
                    "-t", "devices/sensor-001/telemetry", "-l"], input=lines, text=True, check=True, timeout=60)
    stored = eventually(lambda: readings(api, "sensor-001", limit=1000), lambda r: len(r) >= 300)
    assert sorted(r["metrics"]["temperature"] for r in stored) == list(range(300))


def test_status_and_last_will_mark_a_device_connected_and_disconnected(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    register(api, "sensor-001")
    mosquitto_pub(platform.mqtt_port, "devices/sensor-001/status", message="online")
    eventually(lambda: api.get("/devices/sensor-001").json()["connected"], lambda c: c is True)
    # A client that dies leaves its last will: mosquitto_sub with a will, killed.
    holder = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(platform.mqtt_port), "-t", "x/none",
         "--will-topic", "devices/sensor-001/status", "--will-payload", "offline", "--will-qos", "1",
         "-k", "5"])
    time.sleep(0.5)  # let it connect before it dies; the will is what is under test
    holder.kill()
    holder.wait()
    eventually(lambda: api.get("/devices/sensor-001").json()["connected"], lambda c: c is False)
    history = [e["event_type"] for e in api.get("/devices/sensor-001/history").json()["events"]]
    assert history == ["DeviceRegistered", "DeviceConnected", "DeviceDisconnected"]


@pytest.mark.postgres
def test_scaled_out_mosquitto_influxdb_and_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The production shape: external Mosquitto (MQTT 5, shared subscription), InfluxDB, PostgreSQL."""
    mqtt_url = require_service("IOT_TEST_MQTT_URL", "Mosquitto")
    influx_url = require_service("IOT_TEST_INFLUX_URL", "InfluxDB")
    import asyncio

    from tests.conftest import reset_postgres

    asyncio.run(reset_postgres(postgres_url))
    env = {
        **external_mqtt_env(mqtt_url, f"e2e-{tmp_path.name}"),
        "IOT_TIMESERIES__BACKEND": "influxdb",
        "IOT_TIMESERIES__URL": influx_url,
        "IOT_TIMESERIES__BUCKET": require_service("IOT_TEST_INFLUX_BUCKET", "InfluxDB"),
        "IOT_TIMESERIES__TOKEN": require_service("IOT_TEST_INFLUX_TOKEN", "InfluxDB"),
    }
    device = f"scaled-{tmp_path.name[-8:]}"
    with running_platform(tmp_path, postgres_url, **env) as platform:
        with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
            register(api, device)
            for i in range(5):
                mosquitto_pub(platform.mqtt_port, f"devices/{device}/telemetry",
                              message=json.dumps({"message_id": f"m{i}", "timestamp": 1_735_732_800_000 + i,
                                                  "metrics": {"temperature": 20 + i}}))
            got = eventually(lambda: readings(api, device), lambda r: len(r) == 5)
            assert [r["metrics"]["temperature"] for r in got] == [20.0, 21.0, 22.0, 23.0, 24.0]
            # Activation is in the event store before the readings are stored; the registry
            # read model follows it asynchronously.
            eventually(lambda: api.get(f"/devices/{device}").json()["status"], lambda s: s == "active")

"""One bad message never stops ingestion, with real clients.

The reproduction: ``mosquitto_pub -t devices/ANY/telemetry -m '{"x":[[[...1,000 deep...]]]}'``
used to raise RecursionError inside the MQTT consumer; the batch that held it never finished,
every later batch waited behind it, readings published afterwards were lost and ``/ready``
still said MQTT was fine. Now the message is a rejected reading (``nesting_too_deep``), the
next reading is stored, and the platform stays ready.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import require_service
from tests.e2e.platform_process import RunningPlatform, external_mqtt_env, running_platform
from tests.e2e.test_telemetry import eventually, mosquitto_pub, readings, register

DEEP = '{"x":' + "[" * 1000 + "]" * 1000 + "}"
"""About 2 KB: the issue's payload."""


def _metrics(platform: RunningPlatform) -> str:
    return httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers, timeout=30).text


def _ready(platform: RunningPlatform) -> httpx.Response:
    return httpx.get(f"{platform.base_url}/ready", timeout=30)


def _deep_message_then_a_reading(platform: RunningPlatform, api: httpx.Client, device: str) -> None:
    """Given a registered device, when the deep message and then a normal reading are
    published, then the reading is stored, the deep one counted, and the platform ready."""
    register(api, device)
    mosquitto_pub(platform.mqtt_port, "devices/ANY/telemetry", message=DEEP)
    mosquitto_pub(platform.mqtt_port, f"devices/{device}/telemetry",
                  message=json.dumps({"message_id": "after-deep", "metrics": {"temperature": 21.5}}))
    got = eventually(lambda: readings(api, device), lambda r: len(r) == 1)
    assert got[0]["metrics"] == {"temperature": 21.5}
    assert 'iot_readings_rejected_total{protocol="mqtt",reason="nesting_too_deep"} 1.0' in _metrics(platform)
    ready = _ready(platform)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["mqtt"] == "ok"


def test_a_deep_message_on_the_embedded_broker_does_not_stop_ingestion(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    _deep_message_then_a_reading(platform, api, "sensor-001")


def test_a_deep_message_on_mosquitto_does_not_stop_ingestion(tmp_path: Path, postgres_url: str) -> None:
    """The same through the harness Mosquitto (the platform on an external broker)."""
    mqtt_url = require_service("IOT_TEST_MQTT_URL", "Mosquitto")
    import asyncio

    from tests.conftest import reset_postgres

    asyncio.run(reset_postgres(postgres_url))
    env = external_mqtt_env(mqtt_url, f"e2e-deep-{tmp_path.name}")
    with running_platform(tmp_path, postgres_url, **env) as platform:
        with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
            _deep_message_then_a_reading(platform, api, f"deep-{tmp_path.name[-8:]}")


def test_on_kafka_the_deep_message_is_dead_lettered_and_listed(tmp_path: Path, platform_database_url: str) -> None:
    """Where there is a dead-letter path (streaming.backend kafka), the refused message is
    kept there as it came: ``iot-platform dlq list`` shows it with its reason and MQTT topic."""
    import subprocess
    from uuid import uuid4

    from tests.e2e.platform_process import BIN, platform_env
    from tests.e2e.test_kafka_backbone import kafka_env

    brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka")
    run = uuid4().hex[:8]
    env = kafka_env(run, brokers)

    def dlq_list() -> str:
        return subprocess.run([str(BIN / "iot-platform"), "dlq", "list"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env=platform_env(platform_database_url, **env), check=True).stdout

    with running_platform(tmp_path, platform_database_url, **env) as platform:
        with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
            _deep_message_then_a_reading(platform, api, "sensor-001")
        listed = eventually(dlq_list, lambda out: "1 dead letters" in out, deadline=60)
        [letter] = [line for line in listed.splitlines() if "\t" in line]
        assert "\tnesting_too_deep\tmqtt:devices/ANY/telemetry\t" in letter

"""The real-services harness ``tools/services.sh`` works end to end.

``smoke`` drives PostgreSQL, Mosquitto, Kafka and InfluxDB with their real clients (psql,
mosquitto_pub/sub, kcat, curl), so a green run here means the servers the other integration
tests talk to are up and answering. When they are down the smoke tests FAIL under CI=true (CI
must never pass by skipping) and are skipped on a developer machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "services.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SERVICES = ("postgres", "mosquitto", "kafka", "influxdb")
DEFAULT_SERVICES_DIR = "/tmp/iot-platform-services"
# Read at import time: the shared autouse fixture strips IOT_* variables (other than
# IOT_TEST_*) from the environment before every test, and the script needs this one
# to find the services' pid files.
SERVICES_DIR = os.environ.get("IOT_SERVICES_DIR") or DEFAULT_SERVICES_DIR

FIXED_ENV = {
    "IOT_TEST_POSTGRES_URL": "postgresql+asyncpg://iot:iot@127.0.0.1:25432/iot_test",
    "IOT_TEST_MQTT_URL": "mqtt://127.0.0.1:21883",
    "IOT_TEST_MQTTS_URL": "mqtts://127.0.0.1:28883",
    "IOT_TEST_PKI_DIR": f"{SERVICES_DIR}/pki",
    "IOT_TEST_KAFKA_BROKERS": "127.0.0.1:29092",
    "IOT_TEST_INFLUX_URL": "http://127.0.0.1:28086",
    "IOT_TEST_INFLUX_BUCKET": "iot_test/autogen",
    "IOT_SERVICES_DIR": SERVICES_DIR,
}
ENV_NAMES = set(FIXED_ENV) | {"IOT_TEST_INFLUX_TOKEN", "IOT_TEST_INFLUX_ORG"}


def run_script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, IOT_SERVICES_DIR=SERVICES_DIR)
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def status_lines() -> dict[str, list[str]]:
    result = run_script("status", timeout=60)
    return {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}


def require_services_running() -> None:
    lines = status_lines()
    down = [name for name in SERVICES if name not in lines or lines[name][1] != "running"]
    if down:
        message = f"services not running: {', '.join(down)} (run: tools/services.sh start)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def parse_exports(text: str) -> dict[str, str]:
    exports: dict[str, str] = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        name, sep, value = line.removeprefix("export ").partition("=")
        assert sep == "=", line
        exports[name] = value
    return exports


def test_env_prints_exactly_the_documented_variables() -> None:
    result = run_script("env")

    assert result.returncode == 0, result.stderr
    exports = parse_exports(result.stdout)
    assert set(exports) == ENV_NAMES
    for name, value in FIXED_ENV.items():
        assert exports[name] == value, name
    assert exports["IOT_TEST_INFLUX_TOKEN"]
    assert exports["IOT_TEST_INFLUX_ORG"]


def test_env_output_can_be_evaluated_by_a_shell() -> None:
    shell = f'eval "$(bash {SCRIPT} env)" && printf "%s\\n" "$IOT_TEST_KAFKA_BROKERS" "$IOT_TEST_INFLUX_BUCKET"'
    result = subprocess.run(
        ["bash", "-c", shell],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, IOT_SERVICES_DIR=SERVICES_DIR),
        stdin=subprocess.DEVNULL,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["127.0.0.1:29092", "iot_test/autogen"]


def test_status_names_every_service_with_its_loopback_port() -> None:
    require_services_running()
    lines = status_lines()

    ports = {"postgres": 25432, "mosquitto": 21883, "kafka": 29092, "influxdb": 28086}
    for name, port in ports.items():
        assert lines[name][2] == f"127.0.0.1:{port}", lines[name]


def test_smoke_exercises_every_service_with_a_real_client() -> None:
    require_services_running()

    result = run_script("smoke", timeout=180)

    assert result.returncode == 0, result.stdout + result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("ok ")] == [
        f"ok {name}" for name in SERVICES
    ]

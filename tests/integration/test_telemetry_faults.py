"""Faults on the telemetry path, against the real Mosquitto and InfluxDB of tools/services.sh.

The platform runs in this process, subscribed to the harness's Mosquitto with its persistent
MQTT 5 session; the test restarts a real service with tools/services.sh while a publisher
pushes QoS 1 messages, and then counts what the store holds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiomqtt
import pytest
import pytest_asyncio

from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.composition import Platform, build_platform
from iot_platform.config import Settings
from tests.conftest import require_service

pytestmark = [pytest.mark.asyncio, pytest.mark.serial]

REPO = Path(__file__).resolve().parents[2]
T0 = 1_735_732_800_000  # 2025-01-01T12:00:00Z in ms


def services(*args: str) -> None:
    subprocess.run(["bash", str(REPO / "tools" / "services.sh"), *args], check=True, timeout=180,
                   stdin=subprocess.DEVNULL, capture_output=True)


def mqtt_address() -> tuple[str, int]:
    url = require_service("IOT_TEST_MQTT_URL", "Mosquitto")
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def influx() -> dict[str, str]:
    return {
        "backend": "influxdb",
        "url": require_service("IOT_TEST_INFLUX_URL", "InfluxDB"),
        "bucket": require_service("IOT_TEST_INFLUX_BUCKET", "InfluxDB"),
        "token": require_service("IOT_TEST_INFLUX_TOKEN", "InfluxDB"),
    }


def settings(
    tmp_path: Path, eventstore_url: str | None = None, group: str = "", **timeseries: Any
) -> Settings:
    host, port = mqtt_address()
    return Settings(
        eventstore={"url": eventstore_url or f"sqlite:///{tmp_path / 'iot.db'}"},
        mqtt={
            "embedded_broker": False,
            "broker_url": f"mqtt://{host}:{port}",
            "client_id": f"faults-{uuid4().hex[:8]}",
            "shared_subscription_group": group,
            "session_expiry_seconds": 30,  # the shared broker forgets this test's session soon
            "reconnect_initial_seconds": 0.2,
            "reconnect_max_seconds": 1.0,
        },
        timeseries={"url": f"sqlite:///{tmp_path / 'ts.db'}", "retry_max_seconds": 1.0, **timeseries},
        coap={"enabled": False},  # several platforms in one test: no fixed UDP port for them all
        lorawan={"enabled": False},
        security={"ca_cert_path": str(tmp_path / "pki" / "ca.crt"), "ca_key_path": str(tmp_path / "pki" / "ca.key"),
                  "crl_path": str(tmp_path / "pki" / "crl.pem"),
                  "encryption_key_file": str(tmp_path / "secrets" / "encryption.key")},
    )


@pytest_asyncio.fixture
async def started() -> AsyncIterator[list[Platform]]:
    platforms: list[Platform] = []
    yield platforms
    for platform in platforms:
        await platform.stop()


async def start(platform: Platform, holder: list[Platform], device_id: str | None) -> None:
    await platform.start()
    holder.append(platform)
    if device_id is not None:
        await platform.devices.register(RegisterDevice(device_id, "th"))
    assert platform.telemetry.mqtt is not None
    await asyncio.wait_for(platform.telemetry.mqtt.subscribed.wait(), 30)


async def publish_reliably(device_id: str, count: int, after: dict[int, Any]) -> int:
    """Publishes ``count`` QoS 1 readings, reconnecting and re-sending whatever was not
    acknowledged, as a real device does. ``after[i]`` is awaited once message i is sent."""
    host, port = mqtt_address()
    sent, attempts = 0, 0
    while sent < count:
        attempts += 1
        try:
            # A clean session: this publisher re-sends what was not acknowledged by itself.
            async with aiomqtt.Client(host, port, identifier=f"pub-{device_id}", clean_session=True) as client:
                while sent < count:
                    body = {"message_id": f"m{sent}", "timestamp": T0 + sent, "metrics": {"seq": sent}}
                    await client.publish(f"devices/{device_id}/telemetry", json.dumps(body), qos=1)
                    sent += 1
                    if sent in after:
                        await after.pop(sent)()
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)
    return attempts


async def stored_sequence(platform: Platform, device_id: str, count: int, deadline: float = 90) -> list[int]:
    give_up = time.monotonic() + deadline
    while True:
        readings = await platform.telemetry.queries.history(
            device_id, T0 * 1_000_000, (T0 + count) * 1_000_000, limit=10_000
        )
        values = [int(r.metrics["seq"]) for r in readings]
        if len(values) >= count or time.monotonic() > give_up:
            return values
        await asyncio.sleep(0.2)


async def test_a_broker_restart_mid_stream_loses_no_qos1_message(
    tmp_path: Path, started: list[Platform]
) -> None:
    device = f"restart-{uuid4().hex[:6]}"
    platform = build_platform(settings(tmp_path))
    await start(platform, started, device)

    async def restart_broker() -> None:
        await asyncio.to_thread(services, "restart", "mosquitto")

    attempts = await publish_reliably(device, 600, {200: restart_broker})
    assert attempts >= 2, "the publisher never saw the broker go away"
    assert await stored_sequence(platform, device, 600) == list(range(600))
    assert platform.metrics.mqtt_reconnects._value.get() >= 1


async def test_influxdb_down_for_a_while_then_back_every_reading_arrives_once(
    tmp_path: Path, started: list[Platform]
) -> None:
    device = f"outage-{uuid4().hex[:6]}"
    platform = build_platform(settings(tmp_path, **influx()))
    await start(platform, started, device)
    await publish_reliably(device, 100, {})
    assert len(await stored_sequence(platform, device, 100)) == 100
    errors = platform.metrics.sink_errors.labels("storage")
    services("stop", "influxdb")
    try:
        publishing = asyncio.create_task(publish_reliably(device, 400, {}))
        # While InfluxDB is down the writer fails and retries with back-off; nothing is acked.
        while errors._value.get() < 3:
            await asyncio.sleep(0.2)
    finally:
        services("start", "influxdb")
    await publishing
    assert await stored_sequence(platform, device, 400) == list(range(400))
    assert platform.metrics.sink_retries.labels("storage")._value.get() >= 3


@pytest.mark.postgres
async def test_two_platform_processes_in_one_shared_group_split_the_load(
    tmp_path: Path, started: list[Platform], postgres_url: str
) -> None:
    from tests.conftest import reset_postgres

    await reset_postgres(postgres_url)
    group = f"split-{uuid4().hex[:6]}"
    device = f"split-{uuid4().hex[:6]}"
    first = build_platform(settings(tmp_path / "a", postgres_url, group, **influx()))
    second = build_platform(settings(tmp_path / "b", postgres_url, group, **influx()))
    await start(first, started, device)
    await start(second, started, None)
    await publish_reliably(device, 400, {})
    assert await stored_sequence(first, device, 400) == list(range(400))
    shares = [p.metrics.readings_accepted.labels("mqtt")._value.get() for p in (first, second)]
    assert sum(shares) == 400 and min(shares) > 0, shares

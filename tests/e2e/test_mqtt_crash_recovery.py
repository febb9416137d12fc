"""kill -9 during a saturated QoS 1 stream loses nothing and stores nothing twice.

Given the platform subscribed to the harness Mosquitto with a persistent session, and a
publisher streaming a few thousand QoS 1 readings (each with its own message id and
timestamp) as fast as the broker takes them, when the platform is SIGKILLed mid-stream and
started again on the same data directory and database, then every reading the broker
acknowledged to the publisher (PUBACK) is stored exactly once.

Why it holds: the platform acknowledges a message to the broker only after its reading is
durably stored, so anything it had not acknowledged is redelivered to the resumed session;
a redelivered reading that had been stored lands on the same (series, timestamp) key.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.conftest import require_service, reset_postgres
from tests.e2e.platform_process import RunningPlatform, running_platform
from tests.e2e.test_telemetry import register

READINGS = 3000
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z; reading i is at T0 + i ms


class Publisher(threading.Thread):
    """paho QoS 1 publisher; ``acknowledged()`` is what the broker PUBACKed."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:12]}",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.max_inflight_messages_set(200)
        self.client.connect(host, port)
        self.client.loop_start()
        self.sent: list[mqtt.MQTTMessageInfo] = []

    def run(self) -> None:
        for i in range(READINGS):
            payload = json.dumps({"message_id": f"r-{i}", "timestamp": T0_MS + i, "metrics": {"seq": i}})
            self.sent.append(self.client.publish(self.topic, payload, qos=1))

    def acknowledged(self) -> set[int]:
        return {i for i, info in enumerate(self.sent) if info.is_published()}

    def close(self) -> None:
        self.join()
        for info in self.sent:
            info.wait_for_publish(timeout=60)
        self.client.loop_stop()
        self.client.disconnect()


def stored(platform: RunningPlatform, device: str) -> list[int]:
    response = httpx.get(
        f"{platform.base_url}/api/devices/{device}/data", headers=platform.headers, timeout=30,
        params={"from": "2025-12-31T00:00:00Z", "to": "2026-01-02T00:00:00Z", "limit": 10_000},
    )
    assert response.status_code == 200, response.text
    return [int(r["metrics"]["seq"]) for r in response.json()["readings"]]


def settle(platform: RunningPlatform, device: str, quiet: float = 5.0, deadline: float = 300.0) -> list[int]:
    """The stored readings once their count has stopped changing for ``quiet`` seconds."""
    give_up = time.monotonic() + deadline
    last, since = -1, time.monotonic()
    while time.monotonic() < give_up:
        values = stored(platform, device)
        if len(values) != last:
            last, since = len(values), time.monotonic()
        elif len(values) > 0 and time.monotonic() - since >= quiet:
            return values
        time.sleep(0.5)
    raise AssertionError(f"stored count still changing after {deadline}s (last {last})")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_kill_9_mid_stream_then_restart_stores_every_acknowledged_reading_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    mqtt_url = require_service("IOT_TEST_MQTT_URL", "Mosquitto")
    if backend == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'data' / 'iot.db'}"
    else:
        database_url = str(request.getfixturevalue("postgres_url"))
        asyncio.run(reset_postgres(database_url))
    broker = urlsplit(mqtt_url)
    name = f"crash-{uuid.uuid4().hex[:8]}"
    env = {
        "IOT_MQTT__EMBEDDED_BROKER": "false",
        "IOT_MQTT__BROKER_URL": mqtt_url,
        "IOT_MQTT__CLIENT_ID": f"e2e-{name}",  # the same on restart: the session resumes
        "IOT_MQTT__SESSION_EXPIRY_SECONDS": "120",  # outlives the restart, not the test by much
    }
    device = name
    with running_platform(tmp_path, database_url, **env) as first:
        with httpx.Client(base_url=f"{first.base_url}/api", headers=first.headers, timeout=30) as api:
            register(api, device)
        publisher = Publisher(broker.hostname or "127.0.0.1", broker.port or 1883, f"devices/{device}/telemetry")
        publisher.start()
        # Mid-stream: the platform has stored some readings and the publisher is still going.
        give_up = time.monotonic() + 120
        while (stored_at_kill := len(stored(first, device))) < 100:
            assert time.monotonic() < give_up, "the platform stored nothing"
            time.sleep(0.05)
        acknowledged_at_kill = len(publisher.acknowledged())
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    publisher.close()
    acknowledged = publisher.acknowledged()
    assert len(acknowledged) == READINGS, "the broker acknowledged every reading to the publisher"
    assert stored_at_kill < READINGS, "the kill came mid-stream"
    print(f"killed with {stored_at_kill} stored, {acknowledged_at_kill} acknowledged to the publisher")

    with running_platform(tmp_path, database_url, **env) as second:
        values = settle(second, device)
    counts = Counter(values)
    assert not {i: n for i, n in counts.items() if n > 1}, "no reading is stored twice"
    missing = sorted(acknowledged - set(counts))
    assert not missing, f"{len(missing)} acknowledged readings lost, e.g. {missing[:10]}"

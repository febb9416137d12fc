"""Device commands end to end: the whole platform, mosquitto clients acting as devices, REST.

A ``mosquitto_sub`` process is the device: it subscribes to its ``devices/<id>/commands`` on the
platform's embedded broker, and ``mosquitto_pub`` sends its acknowledgements.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_service
from tests.e2e.platform_process import RunningPlatform, running_platform
from tests.e2e.test_telemetry import eventually, mosquitto_pub, register


class MqttDevice:
    """A device listening on its command topic through a real ``mosquitto_sub``."""

    def __init__(self, port: int, device_id: str) -> None:
        self.port, self.device_id = port, device_id
        self._probe = f"probe/{device_id}"
        self._process = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-v",
             "-t", f"devices/{device_id}/commands", "-t", self._probe],
            stdout=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._wait_until_subscribed()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\n"))

    def _wait_until_subscribed(self) -> None:
        # Subscribed once a probe published to it comes back; no blind sleep.
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            mosquitto_pub(self.port, self._probe, message="ping")
            try:
                if self._lines.get(timeout=0.5).startswith(self._probe):
                    return
            except queue.Empty:
                continue
        raise AssertionError("mosquitto_sub did not subscribe")

    def next_command(self) -> dict[str, Any]:
        """The next message on the command topic (probes that arrive late are skipped)."""
        while True:
            topic, _, payload = self._lines.get(timeout=30).partition(" ")
            if topic == f"devices/{self.device_id}/commands":
                body: dict[str, Any] = json.loads(payload)
                return body

    def ack(self, command_id: str, status: str, result: Any = None) -> None:
        mosquitto_pub(self.port, f"devices/{self.device_id}/commands/ack",
                      message=json.dumps({"command_id": command_id, "status": status, "result": result}))

    def close(self) -> None:
        self._process.terminate()
        self._process.wait()
        self._reader.join()  # it ends at the pipe's end of file
        assert self._process.stdout is not None
        self._process.stdout.close()


@pytest.fixture
def devices(platform: RunningPlatform) -> Iterator[list[MqttDevice]]:
    started: list[MqttDevice] = []
    yield started
    for device in started:
        device.close()


def listen(platform: RunningPlatform, devices: list[MqttDevice], device_id: str) -> MqttDevice:
    device = MqttDevice(platform.mqtt_port, device_id)
    devices.append(device)
    return device


def status_of(api: httpx.Client, device_id: str, command_id: str, wait: float = 0) -> dict[str, Any]:
    response = api.get(f"/devices/{device_id}/commands/{command_id}", params={"wait": wait})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_mqtt_device_receives_a_command_and_its_acknowledgement_makes_it_succeed(
    platform: RunningPlatform, api: httpx.Client, devices: list[MqttDevice]
) -> None:
    register(api, "sensor-001")
    device = listen(platform, devices, "sensor-001")
    created = api.post("/devices/sensor-001/commands", json={
        "command": "set_sampling_rate", "parameters": {"interval_seconds": 30}, "ttl_seconds": 3600})
    assert created.status_code == 201, created.text
    command = created.json()
    assert command["status"] == "sent"  # connectivity unknown: pushed at once
    assert created.headers["Location"] == f"/api/devices/sensor-001/commands/{command['command_id']}"

    received = device.next_command()
    assert received == {
        "command_id": command["command_id"], "command": "set_sampling_rate",
        "parameters": {"interval_seconds": 30},
        "issued_at": received["issued_at"], "expires_at": received["expires_at"],
    }
    assert received["issued_at"].endswith("Z") and received["expires_at"].endswith("Z")

    device.ack(command["command_id"], "delivered")
    device.ack(command["command_id"], "succeeded", {"interval_seconds": 30})
    final = status_of(api, "sensor-001", command["command_id"], wait=30)
    assert (final["status"], final["result"]) == ("succeeded", {"interval_seconds": 30})
    assert final["sent_at"] and final["completed_at"]

    # A malformed acknowledgement is counted and logged; the platform carries on.
    mosquitto_pub(platform.mqtt_port, "devices/sensor-001/commands/ack", message="{not json")
    eventually(lambda: httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text,
               lambda text: 'iot_mqtt_messages_total{kind="command_ack_malformed"} 1.0' in text)
    listed = api.get("/devices/sensor-001/commands", params={"status": "succeeded"}).json()["items"]
    assert [c["command_id"] for c in listed] == [command["command_id"]]
    history = [e["event_type"] for e in api.get("/devices/sensor-001/history").json()["events"]]
    assert history == ["DeviceRegistered"]  # commands have streams of their own


def test_a_command_to_an_offline_device_is_delivered_when_it_comes_online(
    platform: RunningPlatform, api: httpx.Client, devices: list[MqttDevice]
) -> None:
    register(api, "sensor-002")
    mosquitto_pub(platform.mqtt_port, "devices/sensor-002/status", message="offline")
    eventually(lambda: api.get("/devices/sensor-002").json()["connected"], lambda c: c is False)
    device = listen(platform, devices, "sensor-002")
    created = api.post("/devices/sensor-002/commands", json={"command": "reboot"})
    assert created.status_code == 201 and created.json()["status"] == "issued"
    command_id = created.json()["command_id"]

    mosquitto_pub(platform.mqtt_port, "devices/sensor-002/status", message="online")
    assert device.next_command()["command_id"] == command_id
    eventually(lambda: status_of(api, "sensor-002", command_id)["status"], lambda s: s == "sent")
    device.ack(command_id, "failed", {"error": "low battery"})
    final = status_of(api, "sensor-002", command_id, wait=30)
    assert (final["status"], final["result"]) == ("failed", {"error": "low battery"})


def test_a_command_not_finished_within_its_ttl_expires(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    register(api, "sensor-003")
    mosquitto_pub(platform.mqtt_port, "devices/sensor-003/status", message="offline")
    eventually(lambda: api.get("/devices/sensor-003").json()["connected"], lambda c: c is False)
    created = api.post("/devices/sensor-003/commands", json={"command": "reboot", "ttl_seconds": 1})
    command_id = created.json()["command_id"]
    expired = eventually(lambda: status_of(api, "sensor-003", command_id, wait=5),
                         lambda body: body["status"] == "expired")
    assert expired["completed_at"] is not None
    late = api.post(f"/devices/sensor-003/commands/{command_id}/ack", json={"status": "succeeded"})
    assert late.status_code == 409 and "expired" in late.json()["error"]["message"]
    # Coming online later does not bring an expired command back.
    mosquitto_pub(platform.mqtt_port, "devices/sensor-003/status", message="online")
    eventually(lambda: api.get("/devices/sensor-003").json()["connected"], lambda c: c is True)
    assert status_of(api, "sensor-003", command_id)["status"] == "expired"
    assert api.get("/devices/sensor-003/commands/pending").json() == {"items": []}


def test_commands_through_an_external_mqtt5_mosquitto(tmp_path: Path) -> None:
    """The scaled-out broker: the platform publishes and subscribes over MQTT 5."""
    mqtt_url = require_service("IOT_TEST_MQTT_URL", "Mosquitto")
    env = {
        "IOT_MQTT__EMBEDDED_BROKER": "false",
        "IOT_MQTT__BROKER_URL": mqtt_url,
        "IOT_MQTT__CLIENT_ID": f"e2e-cmds-{tmp_path.name}",
        "IOT_MQTT__SESSION_EXPIRY_SECONDS": "30",
    }
    device_id = f"cmd-{tmp_path.name[-8:]}"  # the broker is shared: a name of our own
    with running_platform(tmp_path, f"sqlite:///{tmp_path / 'data' / 'iot.db'}", **env) as platform, \
            httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        register(api, device_id)
        device = MqttDevice(platform.mqtt_port, device_id)
        try:
            command_id = api.post(f"/devices/{device_id}/commands", json={"command": "ping"}).json()["command_id"]
            assert device.next_command()["command_id"] == command_id
            device.ack(command_id, "succeeded", "pong")
            final = status_of(api, device_id, command_id, wait=30)
            assert (final["status"], final["result"]) == ("succeeded", "pong")
        finally:
            device.close()

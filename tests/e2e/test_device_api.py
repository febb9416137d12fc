"""The device REST API as a user first meets it: curl against the running platform, on both
backends. Everything else about the API is in tests/api, in process."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.e2e.platform_process import ADMIN_KEY, RunningPlatform

SENSOR = {
    "device_id": "sensor-001",
    "device_type": "temperature_humidity",
    "location": {"latitude": 37.7749, "longitude": -122.4194, "address": "San Francisco, CA"},
    "metadata": {"manufacturer": "ACME Sensors", "model": "TH-2000", "firmware_version": "1.2.3"},
}


def curl(*args: str) -> tuple[int, dict[str, Any]]:
    """curl, the client the README tells users to try; returns (status, JSON body)."""
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--write-out", "\n%{http_code}",
         "-H", f"Authorization: Bearer {ADMIN_KEY}", *args],
        capture_output=True, text=True, check=True, timeout=60,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body) if body else {}


def test_register_with_curl_then_read_it_back_at_once(platform: RunningPlatform) -> None:
    status, created = curl(
        "-X", "POST", f"{platform.base_url}/api/devices",
        "-H", "Content-Type: application/json", "-d", json.dumps(SENSOR),
    )
    assert status == 201
    assert created["status"] == "registered" and created["version"] == 1
    assert created["metadata"]["manufacturer"] == "ACME Sensors"
    status, fetched = curl(f"{platform.base_url}/api/devices/sensor-001")
    assert (status, fetched) == (200, created)

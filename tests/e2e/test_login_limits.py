"""End to end: a device over its reading budget is throttled alone, over HTTP and MQTT.

The login flood and the throttled API-key guesses are in tests/api/test_login_limits.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform_process import running_platform
from tests.e2e.test_telemetry import eventually, mosquitto_pub, readings, register

pytestmark = pytest.mark.e2e


def test_a_device_over_its_reading_budget_is_throttled_and_others_are_not(tmp_path: Path) -> None:
    with running_platform(tmp_path, f"sqlite:///{tmp_path / 'data' / 'iot.db'}",
                          IOT_RATE_LIMITS__DEVICE_READINGS__BURST="3",
                          IOT_RATE_LIMITS__DEVICE_READINGS__PER_SECOND="0.01") as platform:
        with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
            register(api, "noisy")
            register(api, "quiet")
            statuses = [api.post("/telemetry", json={"device_id": "noisy", "message_id": f"m{i}",
                                                     "metrics": {"t": i}}) for i in range(5)]
            assert [s.status_code for s in statuses] == [201, 201, 201, 429, 429]
            assert statuses[3].json()["error"]["code"] == "throttled"
            assert int(statuses[3].headers["retry-after"]) >= 1
            assert api.post("/telemetry", json={"device_id": "quiet", "metrics": {"t": 1}}).status_code == 201
            # The budget is the device's on every protocol: over MQTT the noisy one is refused
            # (counted, with its reason) and the quiet one still stored
            for i in range(3):
                mosquitto_pub(platform.mqtt_port, "devices/noisy/telemetry",
                              message=json.dumps({"message_id": f"q{i}", "metrics": {"t": i}}))
            mosquitto_pub(platform.mqtt_port, "devices/quiet/telemetry",
                          message=json.dumps({"message_id": "q0", "metrics": {"t": 2}}))
            eventually(lambda: readings(api, "quiet"), lambda got: len(got) == 2)
            metrics = eventually(lambda: httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text,
                                 lambda text: 'iot_readings_throttled_total{protocol="mqtt"} 3.0' in text)
            assert 'iot_readings_throttled_total{protocol="http"} 2.0' in metrics
            assert 'iot_readings_rejected_total{protocol="mqtt",reason="throttled"} 3.0' in metrics
            assert len(readings(api, "noisy")) == 3

"""A bad HTTP telemetry body is a 422 naming the body, never a 400 that names nothing, and the
next reading is stored: in process, on both event stores. The same messages from real MQTT
clients and on Kafka are in tests/e2e/test_ingestion_resilience.py."""

from __future__ import annotations

import httpx

from tests.api.conftest import InProcessPlatform
from tests.e2e.test_telemetry import register


def _metrics(platform: InProcessPlatform) -> str:
    with platform.client(platform.headers) as client:
        return client.get("/metrics/").text


def test_a_deep_http_telemetry_body_is_a_422_naming_the_body(
    platform: InProcessPlatform, api: httpx.Client
) -> None:
    """Given the deep document as an HTTP telemetry body, then 422 naming ``body`` (not a
    400 that names nothing), counted as a rejected reading; the next reading is stored."""
    register(api, "sensor-001")
    deep_event = '{"device_id": "sensor-001", "metrics": {"x": ' + "[" * 1000 + "]" * 1000 + "}}"
    for route, body in (("/telemetry", deep_event), ("/telemetry/batch", f"[{deep_event}]")):
        response = api.post(route, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert error["message"].startswith("body: payload is nested deeper than")
    assert 'iot_readings_rejected_total{protocol="http",reason="nesting_too_deep"} 2.0' in _metrics(platform)
    stored = api.post("/telemetry", json={"device_id": "sensor-001", "metrics": {"temperature": 20.0}})
    assert stored.status_code == 201, stored.text


def test_malformed_http_telemetry_bodies_are_a_422_naming_the_body(
    api: httpx.Client,
) -> None:
    """Not JSON, or an integer of 5,000 digits (the standard library's json raised ValueError
    for it: a 400 naming nothing): 422 naming ``body``."""
    register(api, "sensor-001")
    for body in ('{"device_id": "sensor-001", "metrics": {"t": 1}', '{"device_id": "sensor-001", "message_id": '
                 + "9" * 5000 + ', "metrics": {"t": 1}}'):
        response = api.post("/telemetry", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith("body: invalid JSON")

"""The platform on the Kafka backbone, read by clients nobody here wrote (kcat).

With ``streaming.backend: kafka`` the outbox relay publishes every domain event to the
domain-events topic; with ``projections_source: kafka`` the read models are fed from it, so the
REST API still reads its own writes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from tests.conftest import require_service
from tests.e2e.platform_process import running_platform
from tests.e2e.test_telemetry import eventually

pytestmark = pytest.mark.e2e


def kcat_read(brokers: str, topic: str, count: int) -> list[tuple[str, dict[str, str], dict[str, object]]]:
    """(key, headers, value) of the topic's first ``count`` records, read by kcat."""
    out = subprocess.run(
        ["kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-c", str(count), "-e", "-q",
         "-f", "%k\\t%h\\t%s\\n"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    records = []
    for line in out.splitlines():
        key, headers, value = line.split("\t", 2)
        records.append((key, dict(h.split("=", 1) for h in headers.split(",")), json.loads(value)))
    return records


@pytest.mark.parametrize("source", ["store", "kafka"])
def test_a_kcat_consumer_of_the_domain_events_topic_sees_device_registered(
    tmp_path: Path, e2e_database_url: str, source: str
) -> None:
    brokers = require_service("IOT_TEST_KAFKA_BROKERS", "Kafka")
    topic = f"iot-domain-events-{uuid4().hex[:8]}"
    with running_platform(tmp_path, e2e_database_url, IOT_STREAMING__BACKEND="kafka",
                          IOT_STREAMING__BROKERS=brokers, IOT_STREAMING__TOPICS__DOMAIN_EVENTS=topic,
                          IOT_STREAMING__PROJECTIONS_SOURCE=source,
                          IOT_STREAMING__CONSUMER_GROUP=f"e2e-{uuid4().hex[:8]}") as running, \
            httpx.Client(base_url=f"{running.base_url}/api", timeout=30) as api:
        created = api.post("/devices", json={"device_id": "sensor-1", "device_type": "th"})
        assert created.status_code == 201, created.text
        # read-your-writes holds whichever way the read model is fed
        assert api.get("/devices/sensor-1").json()["status"] == "registered"
        eventually(lambda: httpx.get(f"{running.base_url}/metrics", follow_redirects=True).text,
                   lambda text: f'iot_outbox_relayed_total{{topic="{topic}"}} 1.0' in text)
        [(key, headers, value)] = kcat_read(brokers, topic, 1)
    assert key == "sensor-1"
    assert headers["event_type"] == "DeviceRegistered" and headers["position"] == "1"
    assert value["event_type"] == "DeviceRegistered" and value["aggregate_id"] == "sensor-1"
    assert value["data"]["device_type"] == "th"  # type: ignore[index]

"""One device's anomalies over REST, in process on the embedded time-series store with both
event stores. The fleet figures (readings over MQTT too) and the same route on InfluxDB are in
tests/e2e/test_fleet_analytics.py."""

from __future__ import annotations

import httpx

from tests.e2e.test_fleet_analytics import check_device_anomalies


def test_device_anomalies_on_the_embedded_store(api: httpx.Client) -> None:
    check_device_anomalies(api, "th-1", max_readings=10_000)

"""Telemetry over REST, in process on both event stores: single and batch ingestion with their
duplicates and rejections, tag search, history and aggregates, and the 422s that name the field.
Readings sent by real MQTT clients are in tests/e2e/test_telemetry.py."""

from __future__ import annotations

import httpx

from tests.e2e.test_telemetry import register


def test_http_ingestion_single_batch_and_the_existing_api_form(api: httpx.Client) -> None:
    register(api, "deviceA")
    single = api.post("/telemetry", json={"device_id": "deviceA", "message_id": "m1",
                                          "timestamp": "2025-01-15T10:00:00Z", "metrics": {"temp": 34.2}})
    assert single.status_code == 201 and single.json()["status"] == "stored"
    again = api.post("/telemetry", json={"device_id": "deviceA", "message_id": "m1",
                                         "timestamp": "2025-01-15T10:00:00Z", "metrics": {"temp": 34.2}})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    unknown = api.post("/telemetry", json={"device_id": "ghost", "metrics": {"temp": 1}})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_device"
    batch = api.post("/telemetry/batch", json=[
        {"event_id": "e002", "device_id": "deviceA", "timeStamp": "2025-01-15T10:02:00",
         "metrics": {"temp": 30}, "tags": ["room:101"]},
        {"event_id": "e003", "device_id": "deviceA", "timeStamp": "2025-01-15T10:03:00",
         "metrics": {"temp": 35}, "tags": ["room:102"]},
        {"event_id": "e002", "device_id": "deviceA", "timeStamp": "2025-01-15T10:02:00",
         "metrics": {"temp": 30}, "tags": ["room:101"]},
        {"event_id": "e004", "device_id": "deviceA", "metrics": {"temp": "NaN"}},
        {"event_id": "e005", "device_id": "deviceA", "timeStamp": "2999-01-01T00:00:00Z", "metrics": {"temp": 1}},
    ])
    assert batch.status_code == 200
    assert [(r["event_id"], r["status"], r["reason"]) for r in batch.json()] == [
        ("e002", "stored", None), ("e003", "stored", None), ("e002", "duplicate", None),
        ("e004", "stored", None), ("e005", "rejected", "timestamp_in_future"),
    ]
    room = api.get("/telemetry/search", params={"tag": "room:101", "from": "2025-01-01T00:00:00Z"}).json()
    assert [(r["device_id"], r["metrics"]) for r in room["readings"]] == [("deviceA", {"temp": 30})]
    bad = api.post("/telemetry", json={"metrics": {"t": 1}})
    assert bad.status_code == 422 and bad.json()["error"]["message"].startswith("device_id:")


def test_history_and_aggregates_over_http(api: httpx.Client) -> None:
    register(api, "a", device_type="thermo", tags={"site": "hq"})
    register(api, "b", device_type="thermo", tags={"site": "hq"})
    register(api, "c", device_type="other")
    base = 1_735_732_800_000  # 2025-01-01T12:00:00Z in ms
    events = [{"device_id": d, "timestamp": base + i * 60_000, "metrics": {"temp": v + i}}
              for d, v in (("a", 10.0), ("b", 20.0), ("c", 100.0)) for i in range(4)]
    assert all(r["status"] == "stored" for r in api.post("/telemetry/batch", json=events).json())
    window = {"from": str(base), "to": str(base + 4 * 60_000)}
    desc = api.get("/devices/a/data", params={**window, "order": "desc", "limit": 2}).json()["readings"]
    assert [r["metrics"]["temp"] for r in desc] == [13.0, 12.0]
    one = api.get("/analytics/aggregated", params={**window, "metric": "temp", "device_id": "a", "interval": "2m"}).json()
    assert one["resolution"] == "raw"
    assert [(b["count"], b["min"], b["max"], b["avg"]) for b in one["buckets"]] == [(2, 10.0, 11.0, 10.5), (2, 12.0, 13.0, 12.5)]
    group = api.get("/analytics/aggregated", params={**window, "metric": "temp", "device_type": "thermo",
                                                     "interval": "1h", "fn": "count,sum,p50"}).json()
    assert [(b["count"], b["sum"]) for b in group["buckets"]] == [(8, 10 + 11 + 12 + 13 + 20 + 21 + 22 + 23)]
    assert set(group["buckets"][0]) == {"start", "start_ns", "count", "sum", "p50"}
    tagged = api.get("/analytics/aggregated", params={**window, "metric": "temp", "tag": "site:hq", "interval": "1h"}).json()
    assert tagged["buckets"][0]["count"] == 8
    fleet = api.get("/analytics/aggregated", params={**window, "metric": "temp", "interval": "1h"}).json()
    assert fleet["buckets"][0]["count"] == 12
    for params, field in (
        ({**window, "metric": "temp", "interval": "1h", "fn": "median"}, "fn"),
        ({"from": str(base + 1), "to": str(base), "metric": "temp"}, "from"),
        ({**window, "metric": "temp", "interval": "fortnight"}, "interval"),
        ({"from": "2000-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z", "metric": "temp", "interval": "1s"}, "interval"),
        ({**window, "metric": "temp", "interval": "10m", "resolution": "hourly"}, "interval"),
        ({**window, "metric": "temp", "interval": "1h", "resolution": "hourly", "fn": "p99"}, "fn"),
    ):
        response = api.get("/analytics/aggregated", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["details"][0]["field"] == field
    assert api.get("/devices/ghost/data").status_code == 404
    assert api.get("/devices/ghost/data/latest").status_code == 404

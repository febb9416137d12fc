"""The device REST API, driven in process (ASGI) on both event stores: the lifecycle and its
history, ETag and If-Match, 422 bodies naming the field, 404 and 409 answers, fleet search and
paging, the probes and the OpenAPI document."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.api.conftest import InProcessPlatform


def register(api: httpx.Client, device_id: str, **fields: Any) -> httpx.Response:
    body = {"device_id": device_id, "device_type": "th", **fields}
    return api.post("/devices", json=body)


def test_every_write_is_readable_by_the_next_request(api: httpx.Client) -> None:
    for n in range(25):
        assert register(api, f"rw-{n}").status_code == 201
        assert api.get(f"/devices/rw-{n}").status_code == 200
        assert api.patch(f"/devices/rw-{n}", json={"name": f"renamed {n}"}).status_code == 200
        assert api.get(f"/devices/rw-{n}").json()["name"] == f"renamed {n}"


def test_lifecycle_and_history(api: httpx.Client) -> None:
    created = register(api, "sensor-001", tags={"site": "sf"})
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == "/api/devices/sensor-001"
    suspended = api.post("/devices/sensor-001/suspend", json={"reason": "maintenance"})
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert api.post("/devices/sensor-001/suspend").status_code == 409
    resumed = api.post("/devices/sensor-001/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "registered"
    assert api.post("/devices/sensor-001/resume").status_code == 409
    gone = api.delete("/devices/sensor-001", params={"reason": "scrapped"})
    assert gone.status_code == 200 and gone.json()["status"] == "decommissioned"
    # History is kept: the device and its events are still there, but it takes no more changes.
    assert api.get("/devices/sensor-001").json()["status"] == "decommissioned"
    assert api.patch("/devices/sensor-001", json={"name": "x"}).status_code == 409
    history = api.get("/devices/sensor-001/history").json()["events"]
    assert [e["event_type"] for e in history] == [
        "DeviceRegistered", "DeviceSuspended", "DeviceResumed", "DeviceDecommissioned"
    ]
    assert [e["version"] for e in history] == [1, 2, 3, 4]
    assert history[1]["data"]["reason"] == "maintenance"
    assert history[3]["data"]["reason"] == "scrapped"
    assert all(e["actor"] == "apikey:admin (security.admin_api_key)" for e in history)  # who called
    assert api.get("/devices").json()["items"] == []
    listed = api.get("/devices", params={"include_decommissioned": "true"}).json()["items"]
    assert [d["device_id"] for d in listed] == ["sensor-001"]


def test_patch_with_if_match_detects_a_stale_writer(api: httpx.Client) -> None:
    etag = register(api, "sensor-001").headers["ETag"]
    first = api.patch("/devices/sensor-001", json={"name": "Lobby"}, headers={"If-Match": etag})
    assert first.status_code == 200 and first.headers["ETag"] == '"2"'
    stale = api.patch("/devices/sensor-001", json={"name": "Hall"}, headers={"If-Match": etag})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_version"
    assert stale.json()["error"]["details"] == {"expected_version": 1, "actual_version": 2}
    body_version = api.patch("/devices/sensor-001", json={"name": "Hall", "expected_version": 2})
    assert body_version.status_code == 200


def test_concurrent_patches_at_one_version_one_wins(platform: InProcessPlatform) -> None:
    with platform.client(platform.headers, "/api") as api:
        register(api, "sensor-001")

    def patch(name: str) -> int:
        with platform.client(platform.headers, "/api") as client:
            return client.patch(
                "/devices/sensor-001", json={"name": name}, headers={"If-Match": '"1"'}
            ).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(patch, ["a", "b", "c", "d"]))
    assert statuses == [200, 409, 409, 409]


def test_patch_replaces_tags_and_metadata_and_clears_location(api: httpx.Client) -> None:
    register(api, "sensor-001", tags={"a": "1"}, location={"latitude": 1, "longitude": 2})
    patched = api.patch(
        "/devices/sensor-001",
        json={"tags": {"b": "2"}, "metadata": {"firmware_version": "2.0"}, "location": None},
    ).json()
    assert patched["tags"] == {"b": "2"}
    assert patched["metadata"] == {"firmware_version": "2.0"}
    assert patched["location"] is None
    assert patched["version"] == 4


def assert_unprocessable(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith(f"{field}:")
    assert error["details"][0]["field"] == field


def test_bad_input_is_422_naming_the_field(api: httpx.Client) -> None:
    assert_unprocessable(register(api, "d", location={"latitude": 91, "longitude": 0}), "location.latitude")
    assert_unprocessable(api.post("/devices", json={"device_id": "d"}), "device_type")
    assert_unprocessable(register(api, "has/slash"), "device_id")
    assert_unprocessable(register(api, "d", protocol="zigbee"), "protocol")
    assert_unprocessable(register(api, "d", colour="red"), "colour")
    assert_unprocessable(register(api, "d", tags={"bad key": "x"}), "tags.bad key")
    assert_unprocessable(api.get("/devices", params={"near": "north"}), "near")
    assert_unprocessable(api.get("/devices", params={"near": "1,2"}), "radius_km")
    assert_unprocessable(api.get("/devices", params={"tag": "nocolon"}), "tag")
    assert_unprocessable(api.get("/devices", params={"cursor": "garbage"}), "cursor")
    assert_unprocessable(api.get("/devices", params={"limit": 5000}), "limit")
    assert_unprocessable(api.get("/devices", params={"status": "sleeping"}), "status")
    assert_unprocessable(
        api.patch("/devices/x", json={"name": "y"}, headers={"If-Match": "banana"}), "If-Match"
    )
    not_json = api.post("/devices", content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 422
    assert api.get("/devices").json()["items"] == []  # nothing half-written


def test_unknown_and_duplicate_devices(api: httpx.Client) -> None:
    missing = api.get("/devices/ghost")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "not_found", "message": "device 'ghost' is not registered", "details": None}
    }
    assert api.post("/devices/ghost/suspend").status_code == 404
    assert api.get("/devices/ghost/history").status_code == 404
    assert api.delete("/devices/ghost").status_code == 404
    register(api, "sensor-001")
    duplicate = register(api, "sensor-001")
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "already_exists"


def test_fleet_search_over_http(api: httpx.Client) -> None:
    register(api, "sf", location={"latitude": 37.7749, "longitude": -122.4194}, tags={"site": "hq"})
    register(api, "oak", location={"latitude": 37.8044, "longitude": -122.2712}, device_type="gw")
    register(api, "tyo", location={"latitude": 35.6762, "longitude": 139.6503}, tags={"site": "hq"})
    for n in range(7):
        register(api, f"x{n}")
    near = api.get("/devices", params={"near": "37.7749,-122.4194", "radius_km": 50}).json()
    assert [(d["device_id"], round(d["distance_km"])) for d in near["items"]] == [("sf", 0), ("oak", 13)]
    assert [d["device_id"] for d in api.get("/devices", params={"tag": "site:hq"}).json()["items"]] == ["sf", "tyo"]
    assert [d["device_id"] for d in api.get("/devices", params={"device_type": "gw"}).json()["items"]] == ["oak"]
    seen, cursor = [], None
    while True:
        page = api.get("/devices", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        seen += [d["device_id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(["sf", "oak", "tyo"] + [f"x{n}" for n in range(7)])
    assert api.get("/devices", params={"active_within": 5}).json()["items"] == []


def test_ops_endpoints_and_openapi(platform: InProcessPlatform) -> None:
    with platform.client() as web, platform.client(platform.headers) as admin:
        assert web.get("/health").json() == {"status": "ok"}
        assert web.get("/api/health").json() == {"status": "ok"}
        ready = web.get("/ready").json()
        assert ready == {"status": "ready", "checks": {"eventstore": "ok", "timeseries": "ok", "mqtt": "ok"}}
        assert web.get("/docs").status_code == 200
        paths = web.get("/openapi.json").json()["paths"]
        for path in ("/api/devices", "/api/devices/{device_id}", "/api/devices/{device_id}/history",
                     "/api/devices/{device_id}/suspend", "/api/devices/{device_id}/resume", "/api/ready"):
            assert path in paths
        admin.get("/api/devices/ghost")
        metrics = admin.get("/metrics/").text
    assert 'iot_http_requests_total{method="GET",route="/api/devices/{device_id}",status="404"}' in metrics


def test_correlation_ids_flow_into_the_events(api: httpx.Client) -> None:
    response = api.post(
        "/devices", json={"device_id": "c1", "device_type": "th"}, headers={"X-Correlation-ID": "req-42"}
    )
    assert response.headers["X-Correlation-ID"] == "req-42"
    (event,) = api.get("/devices/c1/history").json()["events"]
    assert event["correlation_id"] == "req-42"

"""Device commands over REST, in process on both event stores: an HTTP device's long poll and
acknowledgement, and the checks on command requests. Devices on MQTT are in
tests/e2e/test_commands.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.test_commands import status_of
from tests.e2e.test_telemetry import register


def test_an_http_device_long_polls_for_its_commands_and_acknowledges_over_rest(
    api: httpx.Client,
) -> None:
    register(api, "meter-1", protocol="http")
    with ThreadPoolExecutor(1) as pool:
        poll = pool.submit(lambda: api.get("/devices/meter-1/commands/pending", params={"wait": 30}))
        created = api.post("/devices/meter-1/commands",
                           json={"command": "set_tariff", "parameters": {"tariff": "night"}})
        assert created.status_code == 201 and created.json()["status"] == "issued"
        command_id = created.json()["command_id"]
        answer = poll.result()
    assert answer.status_code == 200, answer.text
    [item] = answer.json()["items"]
    assert (item["command_id"], item["command"], item["parameters"]) == (command_id, "set_tariff", {"tariff": "night"})
    assert status_of(api, "meter-1", command_id)["status"] == "sent"

    acked = api.post(f"/devices/meter-1/commands/{command_id}/ack",
                     json={"status": "succeeded", "result": {"tariff": "night"}})
    assert acked.status_code == 200, acked.text
    assert (acked.json()["status"], acked.json()["result"]) == ("succeeded", {"tariff": "night"})
    assert api.get("/devices/meter-1/commands/pending", params={"wait": 0}).json() == {"items": []}


def test_command_requests_are_checked(api: httpx.Client) -> None:
    register(api, "sensor-004")
    for body, field in (
        ({"parameters": {}}, "command"),
        ({"command": "reboot now"}, "command"),
        ({"command": "reboot", "ttl_seconds": 0}, "ttl_seconds"),
        ({"command": "reboot", "ttl_seconds": 10**9}, "ttl_seconds"),
        ({"command": "reboot", "parameters": [1]}, "parameters"),
    ):
        response = api.post("/devices/sensor-004/commands", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["details"][0]["field"] == field
    assert api.post("/devices/ghost/commands", json={"command": "reboot"}).status_code == 404
    assert api.get("/devices/ghost/commands").status_code == 404
    assert api.get("/devices/sensor-004/commands/nope").status_code == 404
    too_long = api.get("/devices/sensor-004/commands/pending", params={"wait": 3600})
    assert too_long.status_code == 422 and too_long.json()["error"]["details"][0]["field"] == "wait"
    assert api.delete("/devices/sensor-004").status_code == 200
    gone = api.post("/devices/sensor-004/commands", json={"command": "reboot"})
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "invalid_transition"

"""Defect 5, end to end: logins cannot stall the platform, cannot be hammered, and do not tell
which usernames exist; a device over its reading budget is throttled alone.

Before: the password hash ran on the event loop (100 concurrent wrong-password logins slowed
/health to seconds), nothing limited attempts, and an unknown username answered ten times
faster than a known one.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform_process import RunningPlatform, running_platform
from tests.e2e.test_telemetry import eventually, mosquitto_pub, readings, register

pytestmark = pytest.mark.e2e


async def flood_while_polling_health(base_url: str, logins: int) -> tuple[list[httpx.Response], list[int]]:
    """``logins`` concurrent wrong-password logins; /health polled one after another until they
    are all answered. The logins' responses, and the statuses /health gave meanwhile."""
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        done = asyncio.Event()
        health: list[int] = []

        async def poll() -> None:
            while not done.is_set():
                health.append((await client.get("/health")).status_code)

        poller = asyncio.create_task(poll())
        answers = await asyncio.gather(*(
            client.post("/api/auth/token", data={"username": "alice", "password": f"guess-{i}"})
            for i in range(logins)))
        done.set()
        await poller
    return list(answers), health


def test_a_login_flood_is_throttled_with_retry_after_and_health_keeps_answering(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    # Given a user
    assert api.post("/auth/users", json={"username": "alice", "password": "correct horse battery",
                                         "roles": ["viewer"]}).status_code == 201
    token = f"{platform.base_url}/api/auth/token"
    # When a wrong password is given for her, and any password for a user that does not exist
    known = httpx.post(token, data={"username": "alice", "password": "nope"})
    unknown = httpx.post(token, data={"username": "nobody-such", "password": "nope"})
    # Then both answer the same 401 (the same path: a hash is verified either way)
    assert (known.status_code, unknown.status_code) == (401, 401)
    assert known.json() == unknown.json()
    assert known.headers["www-authenticate"] == unknown.headers["www-authenticate"] == "Bearer"

    # When 100 wrong-password logins arrive at once while /health is polled
    answers, health = asyncio.run(flood_while_polling_health(platform.base_url, 100))
    # Then /health answered all along, the logins got 401 or 429, and the 429s say when to retry
    assert health and set(health) == {200}
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {401, 429}, statuses
    throttled = [a for a in answers if a.status_code == 429]
    assert len(throttled) >= 90  # at most a burst of failures is ever hashed
    assert all(int(a.headers["retry-after"]) >= 1 for a in throttled)
    assert throttled[0].json()["error"]["code"] == "too_many_requests"
    # And alice's right password waits for the budget too (the guesser learns nothing)
    assert httpx.post(token, data={"username": "alice", "password": "correct horse battery"}).status_code == 429


def test_bad_api_keys_from_one_client_are_throttled(platform: RunningPlatform) -> None:
    """Guessed keys answer 401 until the client's budget (a burst of 50, then one a second)
    is spent, then 429 (however slowly this machine serves them, the guesses outrun the refill)."""
    statuses: list[int] = []
    with httpx.Client(base_url=platform.base_url, timeout=30) as client:
        while 429 not in statuses and len(statuses) < 2000:
            guess = f"Bearer iotk_guess{len(statuses)}_secret"
            statuses.append(client.get("/api/devices", headers={"Authorization": guess}).status_code)
        refused = client.get("/api/devices", headers={"Authorization": "Bearer iotk_x_y"})
    assert statuses[0] == 401 and statuses[-1] == 429 and set(statuses) == {401, 429}
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


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

"""In process on both event stores: logins cannot stall the platform, cannot be
hammered, and do not tell which usernames exist; guessed API keys are throttled.

Before: the password hash ran on the event loop (100 concurrent wrong-password logins slowed
/health to seconds), nothing limited attempts, and an unknown username answered ten times
faster than a known one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import InProcessPlatform, in_process_platform

SLOW_REFILL = {"per_second": 0.0001}
"""A budget that does not refill within a test: the flood is served as fast as this machine
can, and a token back mid-flood would let alice's right password through."""


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform_database_url: str) -> Iterator[InProcessPlatform]:
    """The default bursts, with login budgets that only a test's own attempts can spend."""
    limits = {"login_per_username": SLOW_REFILL, "login_per_client": SLOW_REFILL}
    with in_process_platform(tmp_path, monkeypatch, platform_database_url, rate_limits=limits) as running:
        yield running


async def flood_while_polling_health(app: FastAPI, logins: int) -> tuple[list[httpx.Response], list[int]]:
    """``logins`` concurrent wrong-password logins; /health polled one after another until they
    are all answered. The logins' responses, and the statuses /health gave meanwhile."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver",
                                 timeout=120) as client:
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
    platform: InProcessPlatform, api: httpx.Client, web: httpx.Client
) -> None:
    # Given a user
    assert api.post("/auth/users", json={"username": "alice", "password": "correct horse battery",
                                         "roles": ["viewer"]}).status_code == 201
    token = "/api/auth/token"
    # When a wrong password is given for her, and any password for a user that does not exist
    known = web.post(token, data={"username": "alice", "password": "nope"})
    unknown = web.post(token, data={"username": "nobody-such", "password": "nope"})
    # Then both answer the same 401 (the same path: a hash is verified either way)
    assert (known.status_code, unknown.status_code) == (401, 401)
    assert known.json() == unknown.json()
    assert known.headers["www-authenticate"] == unknown.headers["www-authenticate"] == "Bearer"

    # When 100 wrong-password logins arrive at once while /health is polled
    answers, health = platform.portal.call(flood_while_polling_health, platform.app, 100)
    # Then /health answered all along, the logins got 401 or 429, and the 429s say when to retry
    assert health and set(health) == {200}
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {401, 429}, statuses
    throttled = [a for a in answers if a.status_code == 429]
    assert len(throttled) >= 90  # at most a burst of failures is ever hashed
    assert all(int(a.headers["retry-after"]) >= 1 for a in throttled)
    assert throttled[0].json()["error"]["code"] == "too_many_requests"
    # And alice's right password waits for the budget too (the guesser learns nothing)
    assert web.post(token, data={"username": "alice", "password": "correct horse battery"}).status_code == 429


def test_bad_api_keys_from_one_client_are_throttled(platform: InProcessPlatform) -> None:
    """Guessed keys answer 401 until the client's budget (a burst of 50, then one a second)
    is spent, then 429 (however slowly this machine serves them, the guesses outrun the refill)."""
    statuses: list[int] = []
    with platform.client() as client:
        while 429 not in statuses and len(statuses) < 2000:
            guess = f"Bearer iotk_guess{len(statuses)}_secret"
            statuses.append(client.get("/api/devices", headers={"Authorization": guess}).status_code)
        refused = client.get("/api/devices", headers={"Authorization": "Bearer iotk_x_y"})
    assert statuses[0] == 401 and statuses[-1] == 429 and set(statuses) == {401, 429}
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1

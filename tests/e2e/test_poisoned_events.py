"""One bad request or one unreadable stored event never bricks the platform.

Run as a user runs it: a real ``iot-platform serve`` process, restarted, on SQLite and
PostgreSQL; the unreadable event is planted with raw SQL, as the old bug wrote it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from iot_platform.infrastructure.persistence.database import create_engine
from tests.e2e.platform_process import RunningPlatform, running_platform
from tests.e2e.test_cli import cli

RULE = {"name": "hot", "device_pattern": "s-*", "metric": "temperature", "op": ">", "threshold": 30,
        "severity": "critical", "notification_channels": ["sse"], "duration_seconds": 0}
RULE_NULLS = ["enabled", "severity", "name", "duration_seconds", "notification_channels", "metric", "op"]
DEVICE_NULLS = ["name", "tags", "metadata"]


def _api(platform: RunningPlatform) -> httpx.Client:
    return httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30)


def _eventually(check: Any, what: str, deadline: float = 30.0) -> Any:
    give_up = time.monotonic() + deadline
    while True:
        outcome = check()
        if outcome:
            return outcome
        if time.monotonic() > give_up:
            raise AssertionError(f"not within {deadline}s: {what}")
        time.sleep(0.2)


def test_a_null_field_is_a_422_naming_it_and_the_platform_restarts_as_it_was(
    tmp_path: Path, platform_database_url: str
) -> None:
    # Given a rule and a device
    with running_platform(tmp_path, platform_database_url) as platform, _api(platform) as api:
        created = api.post("/analytics/rules", json=RULE)
        assert created.status_code == 201, created.text
        rule = created.json()
        assert api.post("/devices", json={"device_id": "s-1", "device_type": "th"}).status_code == 201
        # When each field that has no "nothing" value is sent as null
        for field in RULE_NULLS:
            answer = api.patch(f"/analytics/rules/{rule['id']}", json={field: None})
            # Then it is refused, naming the field, and nothing is written
            assert answer.status_code == 422, (field, answer.text)
            assert answer.json()["error"]["details"][0]["field"] == field
        for field in DEVICE_NULLS:
            answer = api.patch("/devices/s-1", json={field: None})
            assert answer.status_code == 422, (field, answer.text)
            assert answer.json()["error"]["details"][0]["field"] == field
        assert api.get(f"/analytics/rules/{rule['id']}").json() == rule
        assert api.get("/devices/s-1").json()["version"] == 1
    # When the platform restarts, Then it starts, the rule reads back, and new devices appear
    with running_platform(tmp_path, platform_database_url) as platform, _api(platform) as api:
        assert api.get(f"/analytics/rules/{rule['id']}").json() == rule
        assert api.post("/devices", json={"device_id": "s-2", "device_type": "th"}).status_code == 201
        assert api.get("/devices/s-2").status_code == 200
        changed = api.patch(f"/analytics/rules/{rule['id']}", json={"enabled": False})
        assert changed.status_code == 200 and changed.json()["enabled"] is False


async def _plant_unreadable_rule_change(database_url: str, rule_id: str) -> int:
    """Appends an ``AlertRuleChanged`` with ``"enabled": null`` by raw SQL, as the old bug
    stored it (stream version, position counter, outbox and all). Returns its position."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            stream_id = f"alert_rule:{rule_id}"
            last = (await conn.execute(text(
                "SELECT data, version FROM events WHERE stream_id = :s ORDER BY version DESC"), {"s": stream_id}
            )).first()
            assert last is not None
            data = json.loads(last.data)
            data["definition"]["enabled"] = None
            data["correlation_id"] = "planted"
            position = (await conn.execute(text(
                "UPDATE event_position_counter SET last_position = last_position + 1 WHERE id = 1 "
                "RETURNING last_position"))).scalar_one()
            await conn.execute(text("UPDATE event_streams SET version = version + 1 WHERE stream_id = :s"),
                               {"s": stream_id})
            await conn.execute(text(
                "INSERT INTO events (position, stream_id, version, event_type, schema_version, occurred_at, "
                "recorded_at, correlation_id, data) VALUES (:p, :s, :v, 'AlertRuleChanged', 1, :t, :t, "
                "'planted', :d)"),
                {"p": position, "s": stream_id, "v": last.version + 1, "d": json.dumps(data),
                 "t": data["occurred_at"] if "sqlite" in database_url else _utc(data["occurred_at"])})
            await conn.execute(text("INSERT INTO outbox (position) VALUES (:p)"), {"p": position})
        return int(position)
    finally:
        await engine.dispose()


def _utc(moment: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def test_an_unreadable_stored_event_stalls_one_projection_not_the_platform(
    tmp_path: Path, platform_database_url: str
) -> None:
    # Given a rule, and an unreadable change of it planted in the store while the platform is down
    with running_platform(tmp_path, platform_database_url) as platform, _api(platform) as api:
        rule = api.post("/analytics/rules", json=RULE).json()
    position = asyncio.run(_plant_unreadable_rule_change(platform_database_url, rule["id"]))
    # When the platform restarts
    with running_platform(tmp_path, platform_database_url, wait_ready=False) as platform, _api(platform) as api:
        # Then it starts, and /ready names the stalled projection and why
        ready = _eventually(lambda: (r := httpx.get(f"{platform.base_url}/ready")).status_code == 503 and r,
                            "/ready turns 503")
        check = ready.json()["checks"]["projection:alert_rules"]
        assert f"stalled at position {position} (AlertRuleChanged" in check and "enabled" in check
        metrics = httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text
        assert 'iot_projection_stalled{projection="alert_rules"} 1.0' in metrics
        assert 'iot_projection_stalled{projection="device_registry"} 0.0' in metrics
        # And new devices still appear in the registry, at once
        assert api.post("/devices", json={"device_id": "s-9", "device_type": "th"}).status_code == 201
        assert api.get("/devices/s-9").status_code == 200
        # And the rule still reads (as it was), and changing it is refused by name, not a 500
        assert api.get(f"/analytics/rules/{rule['id']}").json()["threshold"] == 30
        refused = api.patch(f"/analytics/rules/{rule['id']}", json={"threshold": 5})
        assert refused.status_code == 409 and str(position) in refused.text
        # When an operator skips the event
        status = cli(tmp_path, platform_database_url, "projections", "status")
        assert f"alert_rules: {position - 1}" in status.stdout and "STALLED" in status.stdout
        skipped = cli(tmp_path, platform_database_url, "projections", "skip", "alert_rules", str(position),
                      "--reason", "planted by the test")
        assert skipped.returncode == 0, skipped.stderr
        assert f"skipped AlertRuleChanged of alert_rule:{rule['id']} at position {position}" in skipped.stdout
        # Then the running platform is ready again, and rules are created and listed
        _eventually(lambda: httpx.get(f"{platform.base_url}/ready").status_code == 200, "/ready back to 200")
        assert api.post("/analytics/rules", json={**RULE, "name": "after"}).status_code == 201
        assert {r["name"] for r in api.get("/analytics/rules").json()["items"]} == {"hot", "after"}
    # And the skip is on record, and a second skip of it is refused
    again = cli(tmp_path, platform_database_url, "projections", "skip", "alert_rules", str(position))
    assert again.returncode != 0 and "not stalled" in again.stderr

"""The fleet analytics read-model adapter on every backend (SQLite and PostgreSQL).

Registry and alert rows are written as their projections would write them; presence and
latest values come from the real latest-state sink.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.analytics.model import DeviceCounts, DeviceGroup, LatestValue
from iot_platform.application.telemetry.model import Reading
from iot_platform.infrastructure.persistence.schema import rm_alerts, rm_device_tags, rm_devices
from iot_platform.infrastructure.readmodels.device_state import SqlDeviceState
from iot_platform.infrastructure.readmodels.fleet_analytics import SqlFleetAnalytics

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def register(
    engine: AsyncEngine, device_id: str, device_type: str = "th", status: str = "active",
    **tags: str,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(rm_devices).values(
                device_id=device_id, name=device_id, device_type=device_type, status=status,
                protocol="mqtt", tags=json.dumps(tags), metadata="{}", version=1,
                registered_at=NOW - timedelta(days=30), updated_at=NOW - timedelta(days=30),
            )
        )
        if tags:
            await conn.execute(
                insert(rm_device_tags),
                [{"device_id": device_id, "key": k, "value": v} for k, v in tags.items()],
            )


async def seen(engine: AsyncEngine, at: datetime, *readings: Reading) -> None:
    await SqlDeviceState(engine, clock=lambda: at).handle(list(readings))


async def alert(engine: AsyncEngine, alert_id: str, severity: str, status: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(rm_alerts).values(
                alert_id=alert_id, rule_id="r1", device_id="a", rule_name="hot", metric="t",
                severity=severity, status=status, value=99.0, message="too hot",
                raised_at=NOW - timedelta(minutes=10), version=1,
            )
        )


async def test_devices_are_counted_by_status_and_type_with_decommissioned_ones_included(
    engine: AsyncEngine,
) -> None:
    await register(engine, "a", "th")
    await register(engine, "b", "th", status="suspended")
    await register(engine, "c", "gps", status="decommissioned")
    await register(engine, "d", "gps", status="registered")

    counts = await SqlFleetAnalytics(engine).device_counts()

    assert counts == DeviceCounts(
        total=4,
        by_status={"registered": 1, "provisioned": 0, "active": 1, "suspended": 1, "decommissioned": 1},
        by_type={"gps": 2, "th": 2},
    )


async def test_an_empty_registry_counts_zero_everywhere(engine: AsyncEngine) -> None:
    analytics = SqlFleetAnalytics(engine)
    counts = await analytics.device_counts()
    assert (counts.total, set(counts.by_status.values()), counts.by_type) == (0, {0}, {})
    assert await analytics.seen_since([NOW]) == [0]
    assert await analytics.open_alerts_by_severity() == {}


async def test_devices_seen_since_each_moment_come_from_presence(engine: AsyncEngine) -> None:
    for device_id in ("a", "b", "c", "d"):
        await register(engine, device_id)
    await seen(engine, NOW - timedelta(minutes=1), Reading("a", 1, {"t": 1.0}))
    await seen(engine, NOW - timedelta(hours=1), Reading("b", 1, {"t": 1.0}))  # exactly an hour
    await seen(engine, NOW - timedelta(hours=5), Reading("c", 1, {"t": 1.0}))
    await seen(engine, NOW - timedelta(days=2), Reading("d", 1, {"t": 1.0}))
    await seen(engine, NOW, Reading("not-registered", 1, {"t": 1.0}))

    counts = await SqlFleetAnalytics(engine).seen_since(
        [NOW - timedelta(hours=1), NOW - timedelta(days=1), NOW - timedelta(days=7)]
    )

    assert counts == [2, 3, 4]


async def test_open_alerts_are_the_raised_and_acknowledged_ones_by_severity(engine: AsyncEngine) -> None:
    await alert(engine, "1", "critical", "raised")
    await alert(engine, "2", "critical", "acknowledged")
    await alert(engine, "3", "warning", "raised")
    await alert(engine, "4", "info", "resolved")
    await alert(engine, "5", "critical", "resolved")

    assert await SqlFleetAnalytics(engine).open_alerts_by_severity() == {"critical": 2, "warning": 1}


async def test_latest_values_of_a_group_leave_out_decommissioned_devices(engine: AsyncEngine) -> None:
    await register(engine, "a", "th", site="hq", floor="1")
    await register(engine, "b", "th", site="hq", floor="2")
    await register(engine, "c", "th", site="lab")
    await register(engine, "d", "gps", site="hq")
    await register(engine, "e", "th", status="decommissioned", site="hq")
    await register(engine, "f", "th", site="hq")  # never reported
    await seen(
        engine, NOW,
        Reading("a", 100, {"t": 21.5, "h": 40}), Reading("a", 200, {"t": 22.0}),
        Reading("b", 150, {"t": True}),
        Reading("c", 100, {"t": "broken"}),
        Reading("d", 100, {"t": 5}),
        Reading("e", 100, {"t": 99.0}),
    )
    analytics = SqlFleetAnalytics(engine)

    every = await analytics.latest_values("t", DeviceGroup())
    thermos_at_hq = await analytics.latest_values("t", DeviceGroup("th", {"site": "hq"}))
    first_floor = await analytics.latest_values("t", DeviceGroup(tags={"site": "hq", "floor": "1"}))
    humidity = await analytics.latest_values("h", DeviceGroup())

    assert every.devices == 5
    assert every.values == [
        LatestValue("a", "th", 22.0, 200),
        LatestValue("b", "th", True, 150),
        LatestValue("c", "th", "broken", 100),
        LatestValue("d", "gps", 5, 100),
    ]
    assert (thermos_at_hq.devices, [v.device_id for v in thermos_at_hq.values]) == (3, ["a", "b"])
    assert (first_floor.devices, [v.device_id for v in first_floor.values]) == (1, ["a"])
    assert (humidity.devices, humidity.values) == (5, [LatestValue("a", "th", 40, 100)])


async def test_a_device_exists_once_registered_whatever_its_status(engine: AsyncEngine) -> None:
    await register(engine, "gone", status="decommissioned")
    analytics = SqlFleetAnalytics(engine)
    assert await analytics.device_exists("gone")
    assert not await analytics.device_exists("ghost")

"""The latest-state read model on every backend: newest value per metric, last seen."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.telemetry.model import Reading
from iot_platform.infrastructure.readmodels.device_state import SqlDeviceState

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_the_newest_value_of_each_metric_wins_whatever_the_arrival_order(
    engine: AsyncEngine,
) -> None:
    state = SqlDeviceState(engine, clock=lambda: T0)
    await state.handle([Reading("d1", 200, {"t": 2.0, "h": 40}), Reading("d1", 100, {"t": 1.0, "ok": True})])
    await state.handle([Reading("d1", 150, {"t": 1.5, "label": "x"})])  # late: t stays at 2.0
    latest = await state.latest("d1")
    assert latest is not None
    assert latest.metrics == {"t": (2.0, 200), "h": (40, 200), "ok": (True, 100), "label": ("x", 150)}
    assert latest.last_seen == T0
    assert await state.latest("unknown") is None


async def test_a_restarted_process_merges_onto_what_is_stored(engine: AsyncEngine) -> None:
    await SqlDeviceState(engine).handle([Reading("d1", 100, {"t": 1.0, "h": 50})])
    restarted = SqlDeviceState(engine, cache_devices=1)
    await restarted.handle([Reading("d1", 300, {"t": 3.0}), Reading("d2", 10, {"x": 1})])
    await restarted.handle([Reading("d1", 50, {"h": 10})])  # evicted from the cache, reloaded
    latest = await restarted.latest("d1")
    assert latest is not None and latest.metrics == {"t": (3.0, 300), "h": (50, 100)}

"""Per-device reading budgets: a device over its budget is refused ``throttled`` and counted,
and the other devices of the same batch are stored as if it were not there."""

from __future__ import annotations

import pytest

from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.application.telemetry.model import Candidate, Rejection, Status
from iot_platform.domain.devices import DeviceStatus
from iot_platform.infrastructure.rate_limits import TokenBuckets
from tests.unit.test_ingestion import NOW, CountingMetrics, FakeActivator, FakeDirectory, FakeStream
from tests.unit.test_rate_limits import FakeClock

pytestmark = pytest.mark.asyncio


async def test_a_device_over_its_budget_is_throttled_and_the_others_are_stored() -> None:
    # Given two active devices and a budget of 3 readings at once, 1 a second
    directory = FakeDirectory({"noisy": DeviceStatus.ACTIVE, "quiet": DeviceStatus.ACTIVE})
    stream, metrics, clock = FakeStream(), CountingMetrics(), FakeClock()
    ingest = IngestTelemetry(directory, FakeActivator(directory), stream, metrics, clock_ns=lambda: NOW,
                             budget=TokenBuckets(per_second=1.0, burst=3, clock=clock))
    # When the noisy one sends 10 readings in one batch, mixed with one of the quiet one
    batch = [Candidate("noisy", NOW - i, {"t": float(i)}) for i in range(10)]
    batch.insert(5, Candidate("quiet", NOW, {"t": 1.0}))
    outcomes = await ingest.ingest(batch, "mqtt")
    # Then 3 of the noisy device's are stored, 7 refused with the reason, and the quiet one stored
    noisy = [o for o in outcomes if o.device_id == "noisy"]
    assert [o.status for o in noisy] == [Status.STORED] * 3 + [Status.REJECTED] * 7
    assert {o.reason for o in noisy[3:]} == {Rejection.THROTTLED}
    assert "retry in" in (noisy[3].detail or "")
    assert [o.status for o in outcomes if o.device_id == "quiet"] == [Status.STORED]
    assert metrics.counts["mqtt:rejected:throttled"] == 7
    assert sorted(r.device_id for r in stream.published) == ["noisy"] * 3 + ["quiet"]
    # And once its budget has refilled, the noisy device is heard again
    clock.now += 1.0
    (again,) = await ingest.ingest([Candidate("noisy", NOW + 1, {"t": 0.0})], "mqtt")
    assert again.status is Status.STORED


async def test_an_unknown_device_spends_no_budget() -> None:
    """Refusals that come first (unknown device) do not fill the limiter with made-up ids."""
    directory = FakeDirectory({})
    buckets = TokenBuckets(per_second=1.0, burst=1, clock=FakeClock())
    ingest = IngestTelemetry(directory, FakeActivator(directory), FakeStream(), CountingMetrics(),
                             clock_ns=lambda: NOW, budget=buckets)
    await ingest.ingest([Candidate(f"ghost-{i}", NOW, {"t": 1.0}) for i in range(50)], "http")
    assert len(buckets) == 0

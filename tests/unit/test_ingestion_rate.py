"""The ingestion rate of the fleet overview: a per-second sliding window over the last minute,
fed by IngestTelemetry as it accepts readings."""

from __future__ import annotations

import pytest

from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.application.telemetry.model import Candidate
from iot_platform.domain.devices import DeviceStatus
from iot_platform.infrastructure.ingestion_rate import InProcessIngestionRate
from tests.unit.test_ingestion import NOW, CountingMetrics, FakeActivator, FakeDirectory, FakeStream


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_the_readings_of_the_last_sixty_seconds_over_sixty() -> None:
    clock = Clock(1000.2)
    rate = InProcessIngestionRate(clock=clock)
    rate.add(30)
    clock.now = 1030.9
    rate.add(60)
    rate.add(30)
    assert rate.per_second() == 120 / 60
    clock.now = 1059.99  # second 1059: the window is seconds 1000..1059
    assert rate.per_second() == 120 / 60
    clock.now = 1060.0  # second 1000 has left the window
    assert rate.per_second() == 90 / 60
    clock.now = 1091.0
    assert rate.per_second() == 0.0


def test_a_slot_reused_after_a_full_window_starts_from_zero() -> None:
    clock = Clock(5.0)
    rate = InProcessIngestionRate(window_seconds=10, clock=clock)
    rate.add(7)
    clock.now = 15.0  # the same slot, ten seconds on
    rate.add(1)
    assert rate.per_second() == 1 / 10
    assert rate.window_seconds == 10


def test_nothing_accepted_is_a_rate_of_zero() -> None:
    assert InProcessIngestionRate(clock=Clock()).per_second() == 0.0


@pytest.mark.asyncio
async def test_ingestion_counts_only_the_readings_it_accepted() -> None:
    clock = Clock()
    rate = InProcessIngestionRate(clock=clock)
    directory = FakeDirectory({"d1": DeviceStatus.ACTIVE, "gone": DeviceStatus.DECOMMISSIONED})
    ingest = IngestTelemetry(
        directory, FakeActivator(directory), FakeStream(), CountingMetrics(),
        clock_ns=lambda: NOW, rate=rate,
    )
    await ingest.ingest(
        [
            Candidate("d1", NOW, {"t": 1.0}, message_id="a"),
            Candidate("d1", NOW, {"t": 1.0}, message_id="a"),  # duplicate
            Candidate("gone", NOW, {"t": 1.0}),  # rejected
            Candidate("d1", NOW - 1, {"t": 2.0}),
        ],
        "http",
    )
    assert rate.per_second() == 2 / 60

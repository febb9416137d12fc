"""This process's ingestion rate, from a sliding window of per-second counts in memory.

Each process counts only what it accepted itself; with several platform processes the fleet
rate is the sum of theirs (Prometheus ``iot_readings_accepted`` gives that across processes).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class InProcessIngestionRate:
    """Implements ``AcceptedReadings`` (fed by ingestion) and ``IngestionRate`` (read by the
    overview). One slot per second of the window; a slot is reused once its second has left the
    window, so memory is fixed and ``add`` is O(1). Called from the event loop only."""

    def __init__(self, window_seconds: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_seconds = window_seconds
        self._clock = clock
        self._seconds = [-1] * window_seconds
        self._counts = [0] * window_seconds

    def add(self, count: int) -> None:
        second = int(self._clock())
        slot = second % self.window_seconds
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = 0
        self._counts[slot] += count

    def per_second(self) -> float:
        """The readings of the current second and the ``window_seconds - 1`` before it, over
        ``window_seconds`` (also in a process's first minute, so the rate ramps up from 0)."""
        now = int(self._clock())
        oldest = now - self.window_seconds + 1
        total = sum(
            count
            for second, count in zip(self._seconds, self._counts, strict=True)
            if oldest <= second <= now
        )
        return total / self.window_seconds

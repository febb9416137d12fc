"""The real clock, behind the application's ``Clock`` ports (commands think in datetimes, the
rule engine in epoch seconds)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class EpochClock:
    def now(self) -> float:
        return time.time()

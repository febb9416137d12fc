"""Token buckets in memory: the ``RateLimiter`` of one platform process.

Each key's bucket holds up to ``burst`` tokens and refills at ``per_second``; an action costs
tokens. Memory is bounded: past ``max_keys`` buckets the least recently used is forgotten (a
forgotten key starts again with a full bucket, which only ever errs towards letting a caller
through). O(1) per call, from the event loop only. With several platform processes each keeps
its own budgets, so a caller spread over N processes gets up to N times the budget.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self,
        per_second: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if not (per_second > 0 and math.isfinite(per_second)) or not burst >= 1:
            raise ValueError("a token bucket needs per_second > 0 and burst >= 1")
        self.per_second = per_second
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """key -> (tokens, when they were counted)"""

    def _tokens(self, key: str, now: float) -> float:
        held = self._buckets.get(key)
        if held is None:
            return self.burst
        tokens, then = held
        return min(self.burst, tokens + max(0.0, now - then) * self.per_second)

    def retry_after(self, key: str) -> float:
        tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.per_second

    def hit(self, key: str, cost: float = 1.0) -> float:
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < cost:
            return (cost - tokens) / self.per_second
        self._buckets[key] = (tokens - cost, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return 0.0

    def credit(self, key: str, cost: float = 1.0) -> None:
        if key in self._buckets:
            now = self._clock()
            self._buckets[key] = (min(self.burst, self._tokens(key, now) + cost), now)

    def __len__(self) -> int:
        return len(self._buckets)

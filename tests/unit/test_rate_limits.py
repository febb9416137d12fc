"""The token buckets behind every rate limit (logins, bad credentials, device readings), over a
fake clock: a burst at once, then the refill rate; each key on its own; memory bounded."""

from __future__ import annotations

import pytest

from iot_platform.infrastructure.rate_limits import TokenBuckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_allowed_at_once_then_the_next_waits_for_the_refill() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_second=0.5, burst=3, clock=clock)
    assert [buckets.hit("alice") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.hit("alice") == pytest.approx(2.0)  # one token refills in 1 / 0.5 s
    assert buckets.retry_after("alice") == pytest.approx(2.0)
    clock.now += 1.0
    assert buckets.retry_after("alice") == pytest.approx(1.0)
    clock.now += 1.0
    assert buckets.retry_after("alice") == 0.0
    assert buckets.hit("alice") == 0.0
    assert buckets.hit("alice") > 0


def test_a_refused_hit_spends_nothing() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_second=1.0, burst=1, clock=clock)
    assert buckets.hit("d1") == 0.0
    for _ in range(100):  # hammering while refused does not push the wait further out
        assert buckets.hit("d1") == pytest.approx(1.0)
    clock.now += 1.0
    assert buckets.hit("d1") == 0.0


def test_an_idle_key_refills_only_up_to_its_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_second=10.0, burst=5, clock=clock)
    buckets.hit("d1", cost=5)
    clock.now += 3600
    assert [buckets.hit("d1") for _ in range(5)] == [0.0] * 5
    assert buckets.hit("d1") > 0


def test_looking_spends_nothing_and_keys_are_independent() -> None:
    buckets = TokenBuckets(per_second=1.0, burst=1, clock=FakeClock())
    for _ in range(10):
        assert buckets.retry_after("alice") == 0.0
    assert buckets.hit("alice") == 0.0 and buckets.hit("alice") > 0
    assert buckets.hit("bob") == 0.0  # alice's failures cost bob nothing


def test_memory_is_bounded_by_forgetting_the_least_recently_used_key() -> None:
    buckets = TokenBuckets(per_second=1.0, burst=1, clock=FakeClock(), max_keys=100)
    for i in range(1000):
        buckets.hit(f"device-{i}")
    assert len(buckets) == 100
    assert buckets.hit("device-999") > 0  # the newest are remembered
    assert buckets.hit("device-0") == 0.0  # the oldest were forgotten: a full bucket again


@pytest.mark.parametrize(("per_second", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_a_bucket_that_could_never_refill_or_hold_a_token_is_refused(per_second: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(per_second=per_second, burst=burst)

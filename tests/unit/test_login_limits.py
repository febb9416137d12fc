"""Logins and bearer credentials under attack, over fakes: an unknown username is checked
against a hash just like a known one (no timing oracle), and failures are budgeted per username
and per client address (then ``Throttled``, which the API answers 429 with Retry-After)."""

from __future__ import annotations

import asyncio

import pytest

from iot_platform.application.access.service import AccessLimits, AccessService
from iot_platform.application.limits import Throttled
from iot_platform.infrastructure.access.tokens import JwtSigner
from iot_platform.infrastructure.rate_limits import TokenBuckets
from tests.unit.test_access_service import Clock, Keys, People
from tests.unit.test_rate_limits import FakeClock

pytestmark = pytest.mark.asyncio


class FakeHasher:
    """Hashes are "hash:<password>"; records every verification it was asked for."""

    def __init__(self) -> None:
        self.verified: list[str] = []

    async def hash(self, password: str) -> str:
        return f"hash:{password}"

    async def verify(self, password: str, stored: str) -> bool:
        self.verified.append(stored)
        return stored == f"hash:{password}"


def access_with(hasher: FakeHasher, limits: AccessLimits = AccessLimits()) -> AccessService:
    return AccessService(Keys(), People(), JwtSigner(lambda: b"k" * 32), Clock(),
                         passwords=hasher, limits=limits)


async def test_an_unknown_username_is_verified_against_a_hash_like_a_known_one() -> None:
    # Given alice, and a hasher that records what it verifies
    hasher = FakeHasher()
    access = access_with(hasher)
    await access.create_user("alice", "correct horse battery", ("viewer",))
    # When someone logs in as alice with a wrong password, and as nobody-such
    assert await access.token_for("alice", "wrong") is None
    assert await access.token_for("mallory", "wrong") is None
    assert await access.token_for("mallory", "hash:x") is None  # no password opens the dummy
    # Then both went through a verification, the second against a hash of no known password
    assert len(hasher.verified) == 3
    assert hasher.verified[0] == "hash:correct horse battery"
    assert hasher.verified[1] == hasher.verified[2] != hasher.verified[0]
    assert (await access.token_for("alice", "correct horse battery")) is not None


async def test_failed_logins_for_one_username_are_throttled_and_the_right_password_waits_too() -> None:
    clock = FakeClock()
    limits = AccessLimits(login_per_username=TokenBuckets(per_second=0.1, burst=3, clock=clock))
    hasher = FakeHasher()
    access = access_with(hasher, limits)
    await access.create_user("alice", "pw", ("viewer",))
    for _ in range(3):
        assert await access.token_for("alice", "guess", client="10.0.0.1") is None
    with pytest.raises(Throttled) as refused:
        await access.token_for("alice", "pw", client="10.0.0.2")
    assert refused.value.retry_after == pytest.approx(10.0)
    verified = len(hasher.verified)
    with pytest.raises(Throttled):
        await access.token_for("alice", "guess")
    assert len(hasher.verified) == verified  # a throttled attempt costs no hash
    assert await access.token_for("bob", "guess") is None  # other usernames are not affected
    clock.now += 10
    assert await access.token_for("alice", "pw") is not None


async def test_failed_logins_from_one_client_are_throttled_whatever_the_username() -> None:
    clock = FakeClock()
    access = access_with(FakeHasher(), AccessLimits(login_per_client=TokenBuckets(per_second=1, burst=2, clock=clock)))
    assert await access.token_for("a", "x", client="10.0.0.9") is None
    assert await access.token_for("b", "x", client="10.0.0.9") is None
    with pytest.raises(Throttled):
        await access.token_for("c", "x", client="10.0.0.9")
    assert await access.token_for("c", "x", client="10.0.0.8") is None


async def test_bad_bearer_credentials_from_one_client_are_throttled() -> None:
    clock = FakeClock()
    access = access_with(FakeHasher(), AccessLimits(
        credential_failures_per_client=TokenBuckets(per_second=1, burst=2, clock=clock)))
    _, good = await access.create_key("grafana", ("viewer",), "admin")
    assert await access.authenticate("iotk_nope_nope", client="10.0.0.9") is None
    assert await access.authenticate("not-a-jwt", client="10.0.0.9") is None
    with pytest.raises(Throttled):
        await access.authenticate(good, client="10.0.0.9")
    assert await access.authenticate(good, client="10.0.0.8") is not None  # good ones never count
    assert await access.authenticate(good, client="10.0.0.8") is not None
    assert await access.authenticate(good, client="10.0.0.8") is not None
    clock.now += 1
    assert await access.authenticate(good, client="10.0.0.9") is not None


class SlowHasher(FakeHasher):
    async def verify(self, password: str, stored: str) -> bool:
        await asyncio.sleep(0.01)
        return await super().verify(password, stored)


async def test_concurrent_guesses_cannot_all_slip_past_the_budget() -> None:
    """The budget is spent before the (slow) hash, so 50 guesses in flight at once get no
    more hashes than the burst."""
    hasher = SlowHasher()
    access = access_with(hasher, AccessLimits(login_per_username=TokenBuckets(per_second=0.1, burst=5,
                                                                             clock=FakeClock())))
    results = await asyncio.gather(*(access.token_for("alice", f"guess-{i}") for i in range(50)),
                                   return_exceptions=True)
    assert sum(isinstance(r, Throttled) for r in results) == 45
    assert len(hasher.verified) == 5


async def test_mqtt_passwords_share_the_client_s_budget_of_failed_credentials() -> None:
    """The embedded broker checks a device's password through the same budget as REST, so the
    broker is no faster a way to guess keys."""
    from iot_platform.composition.broker import device_of

    clock = FakeClock()
    limits = AccessLimits(credential_failures_per_client=TokenBuckets(per_second=0.01, burst=2, clock=clock))
    access = access_with(FakeHasher(), limits)
    _, key = await access.create_key("d1", ("device",), "test", device_id="d1")
    device_for = device_of(access)
    # Given a client whose guesses have spent its budget
    assert await device_for("iotk_guess_1", "10.0.0.9") is None
    assert await device_for("iotk_guess_2", "10.0.0.9") is None
    # When it then presents a valid device key, it is still refused; another client is not
    assert await device_for(key, "10.0.0.9") is None
    assert await device_for(key, "10.0.0.10") == "d1"
    # Then, once the budget has refilled, the valid key works from the first client too
    clock.now += 200
    assert await device_for(key, "10.0.0.9") == "d1"

"""API keys and users over fakes: given credentials made, when presented, then who they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from iot_platform.application.access.model import ApiKey, DeviceBinding, Principal, UnknownRole, User
from iot_platform.application.access.ports import CredentialTaken
from iot_platform.application.access.service import AccessService
from iot_platform.infrastructure.access.passwords import ScryptPasswords, hash_password, password_matches
from iot_platform.infrastructure.access.tokens import JwtSigner

pytestmark = pytest.mark.asyncio


class Keys:
    def __init__(self) -> None:
        self.rows: dict[str, ApiKey] = {}

    async def add(self, key: ApiKey) -> None:
        self.rows[key.key_id] = key

    async def get(self, key_id: str) -> ApiKey | None:
        return self.rows.get(key_id)

    async def list(self) -> Sequence[ApiKey]:
        return list(self.rows.values())

    async def revoke(self, key_id: str, at: datetime) -> bool:
        key = self.rows.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self.rows[key_id] = replace(key, revoked_at=at)
        return True

    async def count(self) -> int:
        return len(self.rows)


class People:
    def __init__(self) -> None:
        self.rows: dict[str, User] = {}

    async def add(self, user: User) -> None:
        if user.username in self.rows:
            raise CredentialTaken(user.username)
        self.rows[user.username] = user

    async def get(self, username: str) -> User | None:
        return self.rows.get(username)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def service() -> tuple[AccessService, Keys, Clock]:
    keys, clock = Keys(), Clock()
    return AccessService(keys, People(), JwtSigner(lambda: b"k" * 32), clock,
                         passwords=ScryptPasswords()), keys, clock


async def test_a_key_is_kept_only_as_a_hash_and_names_its_holder() -> None:
    access, keys, _ = service()
    record, plaintext = await access.create_key("grafana", ("viewer",), "alice")
    assert plaintext.startswith(f"iotk_{record.key_id}_")
    assert plaintext.split("_", 2)[2] not in str(keys.rows)
    assert await access.authenticate(plaintext) == Principal("apikey:grafana", frozenset({"viewer"}))


async def test_a_wrong_secret_a_revoked_key_and_an_expired_key_name_nobody() -> None:
    access, _, clock = service()
    record, plaintext = await access.create_key("k", ("viewer",), "a", expires_in=timedelta(days=1))
    assert await access.authenticate(plaintext[:-1] + ("x" if not plaintext.endswith("x") else "y")) is None
    clock.now += timedelta(days=2)
    assert await access.authenticate(plaintext) is None
    _, other = await access.create_key("k2", ("viewer",), "a")
    assert await access.revoke_key(other.split("_")[1])
    assert await access.authenticate(other) is None


async def test_a_device_key_is_confined_to_its_device() -> None:
    access, _, _ = service()
    with pytest.raises(ValueError):
        await access.create_key("d", ("device",), "a")
    _, plaintext = await access.create_key("d", ("device",), "a", device_id="dev-1")
    principal = await access.authenticate(plaintext)
    assert principal is not None and principal.may_act_for("dev-1") and not principal.may_act_for("dev-2")
    assert principal.may("telemetry:write") and not principal.may("devices:read")


@pytest.mark.parametrize(("roles", "device_id", "field"), [
    (("device",), None, "device_id"),
    (("device", "viewer"), "dev-1", "roles"),
    (("viewer",), "dev-1", "device_id"),
])
async def test_a_device_user_is_bound_to_exactly_one_device_and_nothing_else(
    roles: tuple[str, ...], device_id: str | None, field: str
) -> None:
    """The device role without a device (or mixed with other roles, which would leave open
    what the device confines) is refused naming the field, as for API keys."""
    access, _, _ = service()
    with pytest.raises(DeviceBinding) as refused:
        await access.create_user("d", "correct horse battery", roles, device_id)
    assert refused.value.field == field
    if "device" in roles:
        with pytest.raises(DeviceBinding):
            await access.create_key("d", roles, "a", device_id)


async def test_a_device_user_s_token_carries_its_device_and_is_confined_to_it() -> None:
    access, _, _ = service()
    await access.create_user("dev-1", "correct horse battery", ("device",), "dev-1")
    issued = await access.token_for("dev-1", "correct horse battery")
    assert issued is not None
    principal = await access.authenticate(issued[0])
    assert principal == Principal("user:dev-1", frozenset({"device"}), "dev-1")
    assert principal.may_act_for("dev-1") and not principal.may_act_for("dev-2")


async def test_a_device_credential_that_names_no_device_acts_for_nothing() -> None:
    """One stored before devices were bound (or a token minted then): it may only ask who it is."""
    unbound = Principal("user:old", frozenset({"device"}))
    assert not unbound.may("telemetry:write") and not unbound.may("commands:receive")
    assert unbound.may("self:read") and not unbound.may_act_for("dev-2")
    assert Principal("user:alice", frozenset({"fleet_manager"})).may_act_for("dev-2")


async def test_unknown_roles_are_refused() -> None:
    access, _, _ = service()
    with pytest.raises(UnknownRole):
        await access.create_key("x", ("wizard",), "a")


async def test_a_user_trades_a_password_for_a_token_that_names_them() -> None:
    access, _, _ = service()
    await access.create_user("alice", "correct horse battery", ("fleet_manager",))
    assert await access.token_for("alice", "wrong") is None
    issued = await access.token_for("alice", "correct horse battery")
    assert issued is not None
    assert await access.authenticate(issued[0]) == Principal("user:alice", frozenset({"fleet_manager"}))
    assert await access.authenticate(issued[0] + "x") is None


async def test_a_configured_key_is_made_once() -> None:
    access, keys, _ = service()
    configured = "iotk_cafe0001_a-long-enough-secret-for-the-test"
    assert await access.ensure_key(configured, "admin", ("admin",))
    assert not await access.ensure_key(configured, "admin", ("admin",))
    assert len(keys.rows) == 1 and (await access.authenticate(configured)) is not None


async def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("pw-123456789"), hash_password("pw-123456789")
    assert first != second and first.startswith("scrypt$")
    assert password_matches("pw-123456789", first) and not password_matches("pw-12345678", first)


async def test_a_configured_key_whose_id_holds_another_secret_or_was_revoked_stops_start_up() -> None:
    access, _, _ = service()
    await access.ensure_key("iotk_cafe0002_first-secret-long-enough-0000", "admin", ("admin",))
    with pytest.raises(ValueError, match="another secret"):
        await access.ensure_key("iotk_cafe0002_second-secret-long-enough-000", "admin", ("admin",))
    await access.revoke_key("cafe0002")
    with pytest.raises(ValueError, match="revoked"):
        await access.ensure_key("iotk_cafe0002_first-secret-long-enough-0000", "admin", ("admin",))

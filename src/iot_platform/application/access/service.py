"""API keys and users: made, shown once, kept hashed, checked on every request.

An API key reads ``iotk_<key id>_<secret>``. The id finds the record; only a SHA-256 of the
32-byte random secret is kept (a fast hash suffices for a secret that cannot be guessed).
Passwords, which can be guessed, are kept as scrypt hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from iot_platform.application.access.model import (
    ApiKey,
    DeviceBinding,
    Principal,
    User,
    check_device_binding,
    check_roles,
)
from iot_platform.application.access.ports import (
    ApiKeys,
    CredentialTaken,
    PasswordHasher,
    TokenSigner,
    Users,
)
from iot_platform.application.limits import RateLimiter, Throttled, Unlimited

_PREFIX = "iotk_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class AccessLimits:
    """Budgets of failed attempts. A caller over one is refused (``Throttled``) before its
    credential is even checked, so guessing gets no faster by trying harder. A login spends
    from its username's and its client's budget while it is checked and gets it back if it
    succeeds."""

    login_per_username: RateLimiter = Unlimited()
    login_per_client: RateLimiter = Unlimited()
    credential_failures_per_client: RateLimiter = Unlimited()
    """Bearer credentials (API keys, tokens) that did not check out, per client address."""


class AccessService:
    def __init__(self, keys: ApiKeys, users: Users, signer: TokenSigner,
                 clock: Callable[[], datetime], token_ttl_seconds: int = 3600,
                 key_cache_seconds: float = 5.0, *, passwords: PasswordHasher,
                 limits: AccessLimits = AccessLimits()) -> None:
        self._keys = keys
        self._passwords = passwords
        self._limits = limits
        self._dummy_hash: str | None = None
        self._key_cache_seconds = key_cache_seconds
        self._recent: dict[tuple[str, str], tuple[Principal, datetime]] = {}
        self._users = users
        self._signer = signer
        self._clock = clock
        self._ttl = token_ttl_seconds

    async def create_key(
        self, name: str, roles: tuple[str, ...], created_by: str, device_id: str | None = None,
        expires_in: timedelta | None = None, plaintext: str | None = None,
    ) -> tuple[ApiKey, str]:
        """The record and the key itself, which is shown this once. ``plaintext`` takes a key
        chosen by the operator (a bootstrap key from config) instead of a new one."""
        roles = check_roles(roles)
        check_device_binding(roles, device_id)
        if plaintext is not None:
            key_id, secret = _split(plaintext) or (None, None)
            if key_id is None or secret is None:
                raise ValueError("an API key reads iotk_<id>_<secret>")
        else:
            key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self._clock()
        key = ApiKey(key_id=key_id, name=name, roles=roles, secret_hash=_digest(secret),
                     created_at=now, created_by=created_by, device_id=device_id,
                     expires_at=now + expires_in if expires_in else None)
        await self._keys.add(key)
        return key, f"{_PREFIX}{key_id}_{secret}"

    async def ensure_key(self, plaintext: str, name: str, roles: tuple[str, ...]) -> bool:
        """Makes the given key exist (a configured bootstrap key); True if it was added here.
        Raises ``ValueError`` if its id is taken by another secret, or it was revoked: the
        operator would otherwise believe a key works that does not."""
        parts = _split(plaintext)
        if parts is None:
            raise ValueError("an API key reads iotk_<id>_<secret>")
        existing = await self._keys.get(parts[0])
        if existing is None:
            try:
                await self.create_key(name, roles, "config", plaintext=plaintext)
                return True
            except CredentialTaken:  # another process of the platform made it at the same moment
                existing = await self._keys.get(parts[0])
        if existing is None or not hmac.compare_digest(existing.secret_hash, _digest(parts[1])):
            raise ValueError(f"key id {parts[0]} exists with another secret; choose a new key")
        if not existing.usable(self._clock()):
            raise ValueError(f"key {parts[0]} was revoked or has expired; choose a new key")
        return False

    async def ensure_admin(self, configured_key: str, announce: Callable[[str], None]) -> None:
        """First-run setup of access: the configured admin key exists; or, on a first start
        without one, a new admin key is made and shown once through ``announce``, so a new user
        can call the API at once. Raises ``RuntimeError`` naming the setting if the configured
        key cannot be used, since the operator would otherwise believe it works."""
        if configured_key:
            try:
                await self.ensure_key(configured_key, "admin (security.admin_api_key)", ("admin",))
            except ValueError as exc:
                raise RuntimeError(f"security.admin_api_key: {exc}") from None
        elif not await self.any_keys():
            _, key = await self.create_key("initial admin", ("admin",), "first start")
            announce(f"Admin API key: {key}")

    async def any_keys(self) -> bool:
        return await self._keys.count() > 0

    async def revoke_key(self, key_id: str) -> bool:
        self._recent.clear()  # a revocation here holds at once; elsewhere within the cache time
        return await self._keys.revoke(key_id, self._clock())

    async def create_user(self, username: str, password: str, roles: tuple[str, ...],
                          device_id: str | None = None) -> User:
        """Raises ``DeviceBinding`` for a device role without its one device (or with other
        roles), and for a device id given without the device role."""
        roles = check_roles(roles)
        check_device_binding(roles, device_id)
        if device_id is not None and "device" not in roles:
            raise DeviceBinding("device_id goes with the device role only", "device_id")
        user = User(username, await self._passwords.hash(password), roles, self._clock(), device_id)
        await self._users.add(user)
        return user

    async def token_for(self, username: str, password: str, client: str = "") -> tuple[str, int] | None:
        """A bearer token (JWT) for a user's password, and its lifetime in seconds; None for an
        unknown user or a wrong password, which take the same path (a hash is verified either
        way, so the time taken does not tell which usernames exist). Raises ``Throttled`` when
        the username or the ``client`` address has failed too often lately."""
        limits = self._limits
        # Spent before the check, so a flood of concurrent guesses cannot all pass one look.
        wait = limits.login_per_username.hit(username)
        if wait > 0:
            raise Throttled("failed logins", wait)
        wait = limits.login_per_client.hit(client)
        if wait > 0:
            limits.login_per_username.credit(username)
            raise Throttled("failed logins", wait)
        user = await self._users.get(username)
        stored = user.password_hash if user is not None else await self._unknown_user_hash()
        matches = await self._passwords.verify(password, stored)
        if user is None or not matches:
            return None
        limits.login_per_username.credit(username)  # only failures count
        limits.login_per_client.credit(client)
        principal = Principal(f"user:{user.username}", frozenset(user.roles), user.device_id)
        return self._signer.issue(principal, self._ttl), self._ttl

    async def _unknown_user_hash(self) -> str:
        """A hash of a random password, made once: what an unknown username is checked against."""
        if self._dummy_hash is None:
            self._dummy_hash = await self._passwords.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    async def authenticate(self, credential: str, client: str | None = None) -> Principal | None:
        """The caller a bearer credential (API key or token) names, or None. A key that
        checked out is remembered for ``key_cache_seconds``, so a busy client (a scraper, a
        device posting readings) costs one lookup per interval, not one per request.

        ``client`` (its address) is refused with ``Throttled`` once its credentials have
        failed too often lately; each failure counts against it."""
        if client is not None:
            wait = self._limits.credential_failures_per_client.retry_after(client)
            if wait > 0:
                raise Throttled("failed credentials", wait)
        principal = await self._principal(credential)
        if principal is None and client is not None:
            self._limits.credential_failures_per_client.hit(client)
        return principal

    async def _principal(self, credential: str) -> Principal | None:
        parts = _split(credential)
        if parts is None:
            return self._signer.verify(credential)
        digest = _digest(parts[1])
        now = self._clock()
        cached = self._recent.get((parts[0], digest))
        if cached is not None and now < cached[1]:
            return cached[0]
        key = await self._keys.get(parts[0])
        if key is None or not hmac.compare_digest(key.secret_hash, digest):
            return None
        if not key.usable(now):
            return None
        principal = Principal(f"apikey:{key.name}", frozenset(key.roles), key.device_id)
        until = now + timedelta(seconds=self._key_cache_seconds)
        if key.expires_at is not None:
            until = min(until, key.expires_at)
        if len(self._recent) > 10_000:
            self._recent.clear()
        self._recent[(parts[0], digest)] = (principal, until)
        return principal


def _split(credential: str) -> tuple[str, str] | None:
    if not credential.startswith(_PREFIX):
        return None
    key_id, sep, secret = credential[len(_PREFIX):].partition("_")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret

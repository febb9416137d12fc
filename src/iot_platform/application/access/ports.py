"""Where credentials are kept, and what signs tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from iot_platform.application.access.model import ApiKey, Principal, User


class CredentialTaken(Exception):
    pass


class ApiKeys(Protocol):
    async def add(self, key: ApiKey) -> None: ...

    async def get(self, key_id: str) -> ApiKey | None: ...

    async def list(self) -> Sequence[ApiKey]: ...

    async def revoke(self, key_id: str, at: datetime) -> bool: ...

    async def count(self) -> int: ...


class Users(Protocol):
    async def add(self, user: User) -> None:
        """Raises ``CredentialTaken`` for a username in use."""

    async def get(self, username: str) -> User | None: ...


class TokenSigner(Protocol):
    def issue(self, principal: Principal, ttl_seconds: int) -> str: ...

    def verify(self, token: str) -> Principal | None:
        """The token's principal, or None if it is forged, malformed or expired."""


class PasswordHasher(Protocol):
    """Slow, salted password hashes, computed where they do not hold up other requests."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password: str, stored: str) -> bool:
        """False also for a ``stored`` hash that is malformed."""

"""API keys and users in the platform database (hashes only, never the secrets)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.access.model import ApiKey, User
from iot_platform.application.access.ports import CredentialTaken
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import api_keys, users


def _key(row: Any) -> ApiKey:
    return ApiKey(key_id=row.key_id, name=row.name, roles=tuple(row.roles.split(",")),
                  secret_hash=row.secret_hash, created_at=row.created_at, created_by=row.created_by,
                  device_id=row.device_id, expires_at=row.expires_at, revoked_at=row.revoked_at)


class SqlApiKeys:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader(engine)

    async def add(self, key: ApiKey) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(api_keys).values(
                    key_id=key.key_id, name=key.name, roles=",".join(key.roles),
                    secret_hash=key.secret_hash, created_at=key.created_at, created_by=key.created_by,
                    device_id=key.device_id, expires_at=key.expires_at, revoked_at=None))
        except IntegrityError:
            raise CredentialTaken(f"API key {key.key_id} exists") from None

    async def get(self, key_id: str) -> ApiKey | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()
        return _key(row) if row else None

    async def list(self) -> Sequence[ApiKey]:
        async with self._reader.connect() as conn:
            return [_key(r) for r in await conn.execute(select(api_keys).order_by(api_keys.c.created_at))]

    async def revoke(self, key_id: str, at: datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(update(api_keys).where(
                api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=at))
            return bool(result.rowcount)

    async def count(self) -> int:
        async with self._reader.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(api_keys)) or 0)


class SqlUsers:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader(engine)

    async def add(self, user: User) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(users).values(
                    username=user.username, password_hash=user.password_hash,
                    roles=",".join(user.roles), created_at=user.created_at, device_id=user.device_id))
        except IntegrityError:
            raise CredentialTaken(f"user {user.username!r} exists") from None

    async def get(self, username: str) -> User | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).first()
        if row is None:
            return None
        return User(row.username, row.password_hash, tuple(row.roles.split(",")), row.created_at, row.device_id)

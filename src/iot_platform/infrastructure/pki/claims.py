"""Provisioning claims in the platform database: the token's hash, its uses, who used it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.devices.claims import AlreadyClaimed, Claim, Taken
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import provisioning_claim_uses, provisioning_claims

_c = provisioning_claims.c


def _claim(row: Any) -> Claim:
    return Claim(row.claim_id, row.name, row.device_type, row.max_uses, row.expires_at, row.created_at,
                 row.created_by, row.secret_hash, json.loads(row.tags), row.used, row.revoked_at)


class SqlClaims:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader(engine)

    async def add(self, claim: Claim) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(provisioning_claims).values(
                claim_id=claim.claim_id, name=claim.name, device_type=claim.device_type,
                tags=json.dumps(claim.tags), max_uses=claim.max_uses, used=0, expires_at=claim.expires_at,
                created_at=claim.created_at, created_by=claim.created_by, secret_hash=claim.secret_hash))

    async def get(self, claim_id: str) -> Claim | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(provisioning_claims).where(_c.claim_id == claim_id))).first()
        return _claim(row) if row else None

    async def list(self) -> Sequence[Claim]:
        async with self._reader.connect() as conn:
            return [_claim(r) for r in await conn.execute(select(provisioning_claims).order_by(_c.created_at))]

    async def revoke(self, claim_id: str, at: datetime) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(update(provisioning_claims)
                                        .where(_c.claim_id == claim_id, _c.revoked_at.is_(None)).values(revoked_at=at))
            return bool(result.rowcount)

    async def use(self, claim_id: str, device_id: str, at: datetime) -> Taken | None:
        uses = provisioning_claim_uses.c
        try:
            async with self._engine.begin() as conn:
                taken = await conn.execute(
                    update(provisioning_claims)
                    .where(_c.claim_id == claim_id, _c.used < _c.max_uses, _c.expires_at > at, _c.revoked_at.is_(None))
                    .values(used=_c.used + 1))
                if not taken.rowcount:
                    return None
                bound = (await conn.execute(select(uses.claim_id).where(uses.device_id == device_id))).scalar()
                if bound is None:
                    await conn.execute(insert(provisioning_claim_uses).values(
                        device_id=device_id, claim_id=claim_id, used_at=at))
                    return "new"
                if bound != claim_id:
                    raise _BoundElsewhere
                return "again"
        except (IntegrityError, _BoundElsewhere):  # the whole transaction is undone: the use is not taken
            raise AlreadyClaimed(f"device {device_id!r} was claimed by another claim") from None

    async def give_back(self, claim_id: str, device_id: str, unbind: bool) -> None:
        async with self._engine.begin() as conn:
            if unbind:
                await conn.execute(delete(provisioning_claim_uses).where(
                    provisioning_claim_uses.c.device_id == device_id, provisioning_claim_uses.c.claim_id == claim_id))
            await conn.execute(update(provisioning_claims).where(_c.claim_id == claim_id, _c.used > 0)
                               .values(used=_c.used - 1))

    async def owner(self, device_id: str) -> str | None:
        uses = provisioning_claim_uses.c
        async with self._engine.connect() as conn:  # the primary: a binding made a moment ago counts
            owner = (await conn.execute(select(uses.claim_id).where(uses.device_id == device_id))).scalar()
        return str(owner) if owner is not None else None


class _BoundElsewhere(Exception):
    pass

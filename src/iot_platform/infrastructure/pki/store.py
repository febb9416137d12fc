"""The certificates the CA issued, for revocation and the CRL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import device_certificates


@dataclass(frozen=True)
class StoredCertificate:
    serial: str
    device_id: str
    fingerprint: str
    not_after: dt.datetime
    issued_at: dt.datetime
    pem: str
    superseded_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    reason: str | None = None


def _row(row: Any) -> StoredCertificate:
    return StoredCertificate(row.serial, row.device_id, row.fingerprint, row.not_after, row.issued_at, row.pem,
                             row.superseded_at, row.revoked_at, row.reason)


class SqlCertificates:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader(engine)

    async def add(self, certificate: StoredCertificate) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(device_certificates).values(
                serial=certificate.serial, device_id=certificate.device_id,
                fingerprint=certificate.fingerprint, not_after=certificate.not_after,
                issued_at=certificate.issued_at, pem=certificate.pem))

    async def get(self, serial: str) -> StoredCertificate | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(device_certificates)
                                      .where(device_certificates.c.serial == serial))).first()
        return _row(row) if row else None

    async def for_device(self, device_id: str) -> Sequence[StoredCertificate]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(device_certificates).where(device_certificates.c.device_id == device_id)
                                      .order_by(device_certificates.c.issued_at))
            return [_row(r) for r in rows]

    async def revoke(self, serial: str, reason: str, at: dt.datetime) -> bool:
        c = device_certificates.c
        async with self._engine.begin() as conn:
            result = await conn.execute(update(device_certificates).where(c.serial == serial, c.revoked_at.is_(None))
                                        .values(revoked_at=at, reason=reason))
            return bool(result.rowcount)

    async def supersede(self, device_id: str, keep: str, at: dt.datetime) -> list[str]:
        """Marks the device's other live certificates superseded (revoked after the overlap)."""
        c = device_certificates.c
        async with self._engine.begin() as conn:
            rows = await conn.execute(select(c.serial).where(
                c.device_id == device_id, c.serial != keep, c.revoked_at.is_(None), c.superseded_at.is_(None)))
            serials = [r.serial for r in rows]
            if serials:
                await conn.execute(update(device_certificates).where(c.serial.in_(serials)).values(superseded_at=at))
            return serials

    async def superseded_before(self, moment: dt.datetime) -> Sequence[StoredCertificate]:
        c = device_certificates.c
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(device_certificates).where(
                c.superseded_at.is_not(None), c.superseded_at <= moment, c.revoked_at.is_(None)))
            return [_row(r) for r in rows]

    async def revoked(self) -> Sequence[StoredCertificate]:
        c = device_certificates.c
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(device_certificates).where(c.revoked_at.is_not(None)).order_by(c.revoked_at))
            return [_row(r) for r in rows]

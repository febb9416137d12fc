"""LoRaWAN sessions and gateways in the platform's SQL database; keys sealed at rest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.clock import utcnow
from iot_platform.application.lorawan.ports import (
    DevNonceUsed,
    Gateway,
    LoRaWANSession,
    RootKeys,
    SessionTaken,
)
from iot_platform.domain.lorawan import Activation
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import (
    lorawan_dev_nonces,
    lorawan_devices,
    lorawan_gateways,
)
from iot_platform.infrastructure.secrets import SecretBox

_KEYS = ("app_key", "nwk_s_key", "app_s_key")


class SqlLoRaWANDevices:
    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self._engine = engine
        self._reader = reader(engine)
        self._box = box

    def _seal(self, device_id: str, root: RootKeys) -> str:
        keys = {k: getattr(root, k).hex() for k in _KEYS if getattr(root, k) is not None}
        return self._box.seal(json.dumps(keys).encode(), device_id)

    def _session(self, row: Any) -> LoRaWANSession:
        keys = json.loads(self._box.open(row.sealed_keys, row.device_id))
        return LoRaWANSession(
            device_id=row.device_id,
            dev_eui=row.dev_eui,
            activation=Activation(row.activation),
            codec=row.codec,
            join_eui=row.join_eui,
            dev_addr=row.dev_addr,
            root=RootKeys(**{k: bytes.fromhex(v) for k, v in keys.items()}),
            f_cnt_up=row.f_cnt_up,
            f_cnt_down=row.f_cnt_down,
        )

    async def add(self, session: LoRaWANSession) -> None:
        async with self._engine.begin() as conn:
            taken = await conn.execute(
                select(lorawan_devices.c.device_id, lorawan_devices.c.dev_eui).where(
                    (lorawan_devices.c.device_id == session.device_id)
                    | (lorawan_devices.c.dev_eui == session.dev_eui)
                )
            )
            for row in taken:
                if row.device_id == session.device_id:
                    raise SessionTaken(f"device {session.device_id!r} has LoRaWAN keys already", "device_id")
                raise SessionTaken(f"DevEUI {session.dev_eui} belongs to {row.device_id!r}", "lorawan.dev_eui")
            try:
                await conn.execute(
                    insert(lorawan_devices).values(
                        device_id=session.device_id,
                        dev_eui=session.dev_eui,
                        join_eui=session.join_eui,
                        activation=session.activation.value,
                        codec=session.codec,
                        dev_addr=session.dev_addr,
                        sealed_keys=self._seal(session.device_id, session.root),
                        f_cnt_up=session.f_cnt_up,
                        f_cnt_down=session.f_cnt_down,
                        updated_at=utcnow(),
                    )
                )
            except IntegrityError:  # a concurrent registration won the race
                raise SessionTaken(f"DevEUI {session.dev_eui} is registered already", "lorawan.dev_eui") from None

    async def remove(self, device_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(lorawan_dev_nonces).where(lorawan_dev_nonces.c.device_id == device_id))
            await conn.execute(delete(lorawan_devices).where(lorawan_devices.c.device_id == device_id))

    async def _select(self, condition: Any) -> list[LoRaWANSession]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(lorawan_devices).where(condition))
            return [self._session(row) for row in rows]

    async def by_dev_addr(self, dev_addr: str) -> Sequence[LoRaWANSession]:
        return await self._select(lorawan_devices.c.dev_addr == dev_addr)

    async def by_dev_eui(self, dev_eui: str) -> LoRaWANSession | None:
        found = await self._select(lorawan_devices.c.dev_eui == dev_eui)
        return found[0] if found else None

    async def by_device(self, device_id: str) -> LoRaWANSession | None:
        found = await self._select(lorawan_devices.c.device_id == device_id)
        return found[0] if found else None

    async def accept_uplink(self, device_id: str, f_cnt: int) -> bool:
        # Conditional, so two processes handling the same frame cannot both take it.
        c = lorawan_devices.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(lorawan_devices)
                .where(c.device_id == device_id, (c.f_cnt_up.is_(None)) | (c.f_cnt_up < f_cnt))
                .values(f_cnt_up=f_cnt, updated_at=utcnow())
            )
            return bool(result.rowcount)

    async def next_downlink_counter(self, device_id: str) -> int:
        c = lorawan_devices.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(lorawan_devices).where(c.device_id == device_id)
                .values(f_cnt_down=c.f_cnt_down + 1).returning(c.f_cnt_down)
            )
            return int(result.scalar_one()) - 1

    async def join(
        self, device_id: str, dev_nonce: int, dev_addr: str, nwk_s_key: bytes, app_s_key: bytes
    ) -> None:
        async with self._engine.begin() as conn:
            row = (await conn.execute(
                select(lorawan_devices).where(lorawan_devices.c.device_id == device_id)
            )).one()
            try:
                async with conn.begin_nested():
                    await conn.execute(insert(lorawan_dev_nonces).values(
                        device_id=device_id, dev_nonce=dev_nonce, used_at=utcnow()))
            except IntegrityError:
                raise DevNonceUsed(f"DevNonce {dev_nonce} was used by {device_id!r} before") from None
            current = self._session(row).root
            root = RootKeys(app_key=current.app_key, nwk_s_key=nwk_s_key, app_s_key=app_s_key)
            await conn.execute(
                update(lorawan_devices).where(lorawan_devices.c.device_id == device_id).values(
                    dev_addr=dev_addr, sealed_keys=self._seal(device_id, root),
                    f_cnt_up=None, f_cnt_down=0, updated_at=utcnow(),
                )
            )

    async def dev_addr_in_use(self, dev_addr: str) -> bool:
        async with self._reader.connect() as conn:
            return bool(await conn.scalar(select(exists().where(lorawan_devices.c.dev_addr == dev_addr))))


class SqlGateways:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader(engine)

    async def add(self, gateway: Gateway) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(lorawan_gateways).values(
                    gateway_eui=gateway.gateway_eui, name=gateway.name,
                    registered_at=gateway.registered_at, last_seen=None))
        except IntegrityError:
            raise SessionTaken(f"gateway {gateway.gateway_eui} is registered already", "gateway_eui") from None

    async def remove(self, gateway_eui: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(lorawan_gateways).where(lorawan_gateways.c.gateway_eui == gateway_eui))
            return bool(result.rowcount)

    async def get(self, gateway_eui: str) -> Gateway | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(
                select(lorawan_gateways).where(lorawan_gateways.c.gateway_eui == gateway_eui))).first()
        return Gateway(row.gateway_eui, row.name, row.registered_at, row.last_seen) if row else None

    async def list(self) -> Sequence[Gateway]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(lorawan_gateways).order_by(lorawan_gateways.c.gateway_eui))
            return [Gateway(r.gateway_eui, r.name, r.registered_at, r.last_seen) for r in rows]

    async def seen(self, gateway_eui: str, at: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(update(lorawan_gateways)
                               .where(lorawan_gateways.c.gateway_eui == gateway_eui).values(last_seen=at))

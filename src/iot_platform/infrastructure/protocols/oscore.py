"""OSCORE (RFC 8613) security contexts of CoAP devices, one per device, made at provisioning.

aiocoap's own pairwise context keeps its master secret in a JSON file in the clear; this one
keeps it sealed in the platform database and derives the keys in memory. The replay window
starts uninitialised after every start, so the first request of each device is answered with
aiocoap's Echo challenge (RFC 8613 appendix B.1.2) instead of trusting a lost window. Sender
sequence numbers (used for Observe notifications) are reserved in chunks in the database before
use (appendix B.1.1), so a restart never reuses a nonce.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiocoap import oscore
from aiocoap.credentials import CredentialsMap
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.application.clock import utcnow
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import coap_oscore_contexts
from iot_platform.infrastructure.secrets import SecretBox

log = logging.getLogger(__name__)

SERVER_SENDER_ID = b"\x00"
"""The platform's sender id in every device's context (each context has its own keys)."""
_SEQUENCE_CHUNK = 10_000


@dataclass(frozen=True)
class OscoreMaterial:
    """What a device is given once at provisioning (its side of the context)."""

    device_id: str
    sender_id: bytes
    """The device's sender id: the platform's recipient id for it, unique per device."""
    recipient_id: bytes
    master_secret: bytes
    master_salt: bytes

    def device_side(self) -> dict[str, str]:
        """The device's context settings, as hex (``sender_id_hex``, ``secret_hex``, ...)."""
        return {"sender_id_hex": self.sender_id.hex(), "recipient_id_hex": self.recipient_id.hex(),
                "secret_hex": self.master_secret.hex(), "salt_hex": self.master_salt.hex()}


class DeviceSecurityContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):  # type: ignore[misc]
    def __init__(self, material: OscoreMaterial, sequence_start: int, reserve: Callable[[], None]) -> None:
        self.device_id = material.device_id
        self.authenticated_claims = [material.device_id]
        self.alg_aead = oscore.algorithms[oscore.DEFAULT_ALGORITHM]
        self.hashfun = oscore.hashfunctions[oscore.DEFAULT_HASHFUNCTION]
        # The platform's side: it sends as SERVER_SENDER_ID and receives the device's id.
        self.sender_id = SERVER_SENDER_ID
        self.recipient_id = material.sender_id
        self.id_context = None
        self.derive_keys(material.master_salt, material.master_secret)
        self.recipient_replay_window = oscore.ReplayWindow(oscore.DEFAULT_WINDOWSIZE, lambda: None)
        self.echo_recovery = secrets.token_bytes(8)
        self.sender_sequence_number = sequence_start
        self.reserved_until = sequence_start + _SEQUENCE_CHUNK
        self._reserve = reserve

    def post_seqnoincrease(self) -> None:
        if self.sender_sequence_number >= self.reserved_until:
            raise oscore.ContextUnavailable("no reserved sequence numbers left")
        if self.reserved_until - self.sender_sequence_number < _SEQUENCE_CHUNK // 2:
            self._reserve()


class OscoreContexts:
    """The sealed contexts in the database, and the credentials aiocoap's OSCORE site uses."""

    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self._engine = engine
        self._reader = reader(engine)
        self._box = box
        self.credentials = CredentialsMap()
        self._tasks: set[asyncio.Task[None]] = set()

    async def provision(self, device_id: str) -> OscoreMaterial:
        """A new context for the device (replacing any earlier one), effective at once here."""
        async with self._engine.begin() as conn:
            taken = set((await conn.execute(select(coap_oscore_contexts.c.recipient_id))).scalars())
            sender_id = os.urandom(6)
            while sender_id.hex() in taken:
                sender_id = os.urandom(6)
            material = OscoreMaterial(device_id, sender_id, SERVER_SENDER_ID,
                                      os.urandom(16), os.urandom(8))
            sealed = self._box.seal(json.dumps({"secret": material.master_secret.hex(),
                                                "salt": material.master_salt.hex()}).encode(), device_id)
            await conn.execute(delete(coap_oscore_contexts).where(coap_oscore_contexts.c.device_id == device_id))
            await conn.execute(insert(coap_oscore_contexts).values(
                device_id=device_id, recipient_id=sender_id.hex(), sealed_secret=sealed,
                sequence_floor=_SEQUENCE_CHUNK, created_at=utcnow()))
        self._install(material, 0)
        return material

    async def load(self) -> int:
        """Installs every context not installed yet (or replaced by another process), each
        from the start of a freshly reserved chunk of sequence numbers; drops removed ones.
        Returns how many there are."""
        c = coap_oscore_contexts.c
        async with self._reader.connect() as conn:
            rows = list(await conn.execute(select(c.device_id, c.recipient_id)))
        present = {f":{row.device_id}" for row in rows}
        for row in rows:
            current = self.credentials.get(f":{row.device_id}")
            if current is not None and current.recipient_id.hex() == row.recipient_id:
                continue  # unchanged: keep its replay window and sequence numbers
            async with self._engine.begin() as conn:
                reserved = (await conn.execute(
                    update(coap_oscore_contexts).where(c.device_id == row.device_id)
                    .values(sequence_floor=c.sequence_floor + _SEQUENCE_CHUNK)
                    .returning(c.sequence_floor, c.sealed_secret, c.recipient_id))).first()
            if reserved is None:
                continue  # removed meanwhile
            keys = json.loads(self._box.open(reserved.sealed_secret, row.device_id))
            material = OscoreMaterial(row.device_id, bytes.fromhex(reserved.recipient_id), SERVER_SENDER_ID,
                                      bytes.fromhex(keys["secret"]), bytes.fromhex(keys["salt"]))
            self._install(material, int(reserved.sequence_floor) - _SEQUENCE_CHUNK)
        for gone in set(self.credentials) - present:
            del self.credentials[gone]
        return len(rows)

    async def remove(self, device_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(coap_oscore_contexts).where(coap_oscore_contexts.c.device_id == device_id))
        self.credentials.pop(f":{device_id}", None)

    def _install(self, material: OscoreMaterial, sequence_start: int) -> None:
        context: Any = None

        def reserve() -> None:
            task = asyncio.get_running_loop().create_task(self._reserve_more(material.device_id, context))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        context = DeviceSecurityContext(material, sequence_start, reserve)
        self.credentials[f":{material.device_id}"] = context

    async def _reserve_more(self, device_id: str, context: DeviceSecurityContext) -> None:
        c = coap_oscore_contexts.c
        async with self._engine.begin() as conn:
            result = await conn.execute(update(coap_oscore_contexts).where(c.device_id == device_id)
                                        .values(sequence_floor=c.sequence_floor + _SEQUENCE_CHUNK)
                                        .returning(c.sequence_floor))
            floor = result.scalar_one_or_none()
        if floor is not None:
            context.reserved_until = max(context.reserved_until, int(floor))


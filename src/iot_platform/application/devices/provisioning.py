"""Provisioning a device with credentials: the secret is made and kept by a credential store
(sealed), the Device aggregate records only that it was provisioned and a fingerprint. The
store goes first, so a provisioned device can always authenticate; if the aggregate then
refuses (a suspended device, say), the new credentials are taken out again."""

from __future__ import annotations

import hashlib
from typing import Protocol

from iot_platform.application.devices.commands import CommandResult, ProvisionDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.domain.aggregate import EventContext


class OscoreMaterialLike(Protocol):
    @property
    def master_secret(self) -> bytes: ...

    def device_side(self) -> dict[str, str]:
        """What the device is given: its ids, the master secret and salt, as hex."""


class OscoreStore(Protocol):
    async def provision(self, device_id: str) -> OscoreMaterialLike: ...

    async def remove(self, device_id: str) -> None: ...


def fingerprint(secret: bytes) -> str:
    """Names a secret without revealing it (the first 16 hex digits of its SHA-256)."""
    return hashlib.sha256(secret).hexdigest()[:16]


class OscoreProvisioning:
    def __init__(self, devices: DeviceCommandHandler, store: OscoreStore) -> None:
        self._devices = devices
        self._store = store

    async def provision(self, device_id: str, context: EventContext) -> tuple[OscoreMaterialLike, CommandResult]:
        material = await self._store.provision(device_id)
        try:
            result = await self._devices.provision(ProvisionDevice(
                device_id, "oscore", fingerprint(material.master_secret), context))
        except BaseException:
            await self._store.remove(device_id)
            raise
        return material, result

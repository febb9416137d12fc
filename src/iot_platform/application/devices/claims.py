"""Fleet provisioning by claim, for factories: one enrollment token shared by a batch of devices
is exchanged, once per device id, for that device's own certificate, within a number of uses
and a time window. The token is shown once at creation and kept as a SHA-256 hash.

A device that presents the token is registered (with the claim's device type and tags) if it
is not yet, then provisioned like any other: it sends a CSR, its key never leaves it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from iot_platform.application.devices.certificates import CertificateProvisioning, IssuedCertificate
from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.errors import NotFound
from iot_platform.domain.aggregate import EventContext

_PREFIX = "iotc_"


@dataclass(frozen=True)
class Claim:
    claim_id: str
    name: str
    device_type: str
    max_uses: int
    expires_at: datetime
    created_at: datetime
    created_by: str
    secret_hash: str
    tags: dict[str, str] = field(default_factory=dict)
    used: int = 0
    revoked_at: datetime | None = None


class ClaimRefused(Exception):
    """The token is unknown (``unknown``), or used up, expired or revoked."""

    def __init__(self, message: str, unknown: bool = False) -> None:
        super().__init__(message)
        self.unknown = unknown


class AlreadyClaimed(Exception):
    pass


class Claims(Protocol):
    async def add(self, claim: Claim) -> None: ...

    async def get(self, claim_id: str) -> Claim | None: ...

    async def list(self) -> Sequence[Claim]: ...

    async def revoke(self, claim_id: str, at: datetime) -> bool: ...

    async def use(self, claim_id: str, device_id: str, at: datetime) -> bool:
        """Takes one use for ``device_id`` atomically: False if none is left (or the claim
        expired or was revoked); raises ``AlreadyClaimed`` if that device id claimed before."""

    async def give_back(self, claim_id: str, device_id: str) -> None:
        """Returns a use whose exchange then failed (a bad CSR, say)."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ClaimProvisioning:
    def __init__(self, claims: Claims, devices: DeviceCommandHandler, certificates: CertificateProvisioning,
                 is_registered: Callable[[str], Awaitable[bool]], clock: Callable[[], datetime]) -> None:
        self._claims = claims
        self._devices = devices
        self._certificates = certificates
        self._is_registered = is_registered
        self._clock = clock

    async def create(self, name: str, device_type: str, uses: int, valid_for: timedelta,
                     tags: dict[str, str], created_by: str) -> tuple[Claim, str]:
        """The claim and its token, shown this once."""
        claim_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        now = self._clock()
        claim = Claim(claim_id, name, device_type, uses, now + valid_for, now, created_by, _digest(secret), dict(tags))
        await self._claims.add(claim)
        return claim, f"{_PREFIX}{claim_id}_{secret}"

    async def revoke(self, claim_id: str) -> None:
        if not await self._claims.revoke(claim_id, self._clock()):
            raise NotFound(f"no live claim {claim_id!r}")

    async def exchange(self, token: str, device_id: str, csr_pem: str) -> IssuedCertificate:
        claim = await self._check(token)
        now = self._clock()
        if not await self._claims.use(claim.claim_id, device_id, now):
            raise ClaimRefused(f"claim {claim.claim_id} is used up, expired or revoked")
        context = EventContext(actor=f"claim:{claim.name}")
        try:
            if not await self._is_registered(device_id):
                await self._devices.register(RegisterDevice(device_id, claim.device_type, tags=claim.tags,
                                                            context=context))
            return await self._certificates.provision(device_id, csr_pem, context)
        except BaseException:
            await self._claims.give_back(claim.claim_id, device_id)
            raise

    async def _check(self, token: str) -> Claim:
        body = token[len(_PREFIX):] if token.startswith(_PREFIX) else ""
        claim_id, sep, secret = body.partition("_")
        claim = await self._claims.get(claim_id) if sep and claim_id and secret else None
        if claim is None or not hmac.compare_digest(claim.secret_hash, _digest(secret)):
            raise ClaimRefused("unknown claim token", unknown=True)
        return claim

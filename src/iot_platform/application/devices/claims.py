"""Fleet provisioning by claim, for factories: one enrollment token shared by a batch of devices
is exchanged, once per device id, for that device's own certificate, within a number of uses
and a time window. The token is shown once at creation and kept as a SHA-256 hash.

A device that presents the token is registered (with the claim's device type and tags), then
provisioned like any other: it sends a CSR, its key never leaves it. A claim enrolls only a
device id that no one has registered yet, or that this claim registered itself and has not
enrolled (a retry after a failed exchange): a claim token must never take over an existing
device, supersede its certificate, or enroll a device of another type than the claim's.
The claim's binding of a device id (``Claims.owner``) outlives a failed exchange so the retry
is recognised; the use itself is given back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from iot_platform.application.devices.certificates import CertificateProvisioning, IssuedCertificate
from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.errors import NotFound
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.devices import DeviceStatus

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
    """The device id is taken: registered by someone else, bound to another claim, or already
    enrolled by this one (a 409; nothing is issued)."""


class WrongDeviceType(Exception):
    """The device this claim registered is now of another type than the claim's (a 403)."""


Taken = Literal["new", "again"]
"""How ``Claims.use`` bound the device id: newly, or again (a retry by the claim that bound it)."""


class Claims(Protocol):
    async def add(self, claim: Claim) -> None: ...

    async def get(self, claim_id: str) -> Claim | None: ...

    async def list(self) -> Sequence[Claim]: ...

    async def revoke(self, claim_id: str, at: datetime) -> bool: ...

    async def use(self, claim_id: str, device_id: str, at: datetime) -> Taken | None:
        """Takes one use for ``device_id`` atomically and binds the device id to the claim:
        None if no use is left (or the claim expired or was revoked); raises ``AlreadyClaimed``
        if another claim bound that device id."""

    async def give_back(self, claim_id: str, device_id: str, unbind: bool) -> None:
        """Returns a use whose exchange then failed (a bad CSR, say); ``unbind`` also drops the
        binding (when the exchange registered nothing)."""

    async def owner(self, device_id: str) -> str | None:
        """The id of the claim that bound ``device_id``, if any."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ClaimProvisioning:
    def __init__(self, claims: Claims, devices: DeviceCommandHandler, certificates: CertificateProvisioning,
                 clock: Callable[[], datetime]) -> None:
        self._claims = claims
        self._devices = devices
        self._certificates = certificates
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
        # The event store, not the registry: a device registered a moment ago counts as existing.
        device = await self._devices.current(device_id)
        if device.exists:
            await self._may_retry(claim, device_id, device.device_type, device.status)
        taken = await self._claims.use(claim.claim_id, device_id, self._clock())
        if taken is None:
            raise ClaimRefused(f"claim {claim.claim_id} is used up, expired or revoked")
        context = EventContext(actor=f"claim:{claim.name}")
        registered = False
        try:
            if not device.exists:
                await self._devices.register(RegisterDevice(device_id, claim.device_type, tags=claim.tags,
                                                            context=context))
                registered = True
            return await self._certificates.provision(device_id, csr_pem, context)
        except BaseException:
            await self._claims.give_back(claim.claim_id, device_id,
                                         unbind=taken == "new" and not registered and not device.exists)
            raise

    async def _may_retry(self, claim: Claim, device_id: str, device_type: str, status: DeviceStatus | None) -> None:
        """An existing device is enrolled again only by the claim that registered it, while it
        holds no certificate yet, and while it is still of the claim's type."""
        if await self._claims.owner(device_id) != claim.claim_id:
            raise AlreadyClaimed(f"device {device_id!r} already exists; a claim enrolls only new devices")
        if device_type != claim.device_type:
            raise WrongDeviceType(f"device {device_id!r} is a {device_type!r}; this claim enrolls "
                                  f"{claim.device_type!r} devices")
        if status is not DeviceStatus.REGISTERED:
            raise AlreadyClaimed(f"device {device_id!r} was enrolled by this claim before; "
                                 "an operator renews its certificate")

    async def _check(self, token: str) -> Claim:
        body = token[len(_PREFIX):] if token.startswith(_PREFIX) else ""
        claim_id, sep, secret = body.partition("_")
        claim = await self._claims.get(claim_id) if sep and claim_id and secret else None
        if claim is None or not hmac.compare_digest(claim.secret_hash, _digest(secret)):
            raise ClaimRefused("unknown claim token", unknown=True)
        return claim

"""X.509 device certificates: issued from a CSR (or with a key pair made once for devices that
cannot make one), renewed with an overlap, revoked by hand or with the device.

The CA issues first and keeps what it issued; the Device aggregate then records
``CertificateIssued`` (the first one also provisions the device). If the aggregate refuses,
the new certificate is revoked at once, so no certificate is live that the device's history
does not show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from cryptography import x509

from iot_platform.application.devices.commands import RecordCertificate, RevokeCertificate
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.domain.aggregate import EventContext

_SYSTEM = EventContext(actor="certificate-authority")


class IssuedCertificate(Protocol):
    @property
    def serial(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def not_after(self) -> datetime: ...

    @property
    def certificate_pem(self) -> str: ...

    @property
    def private_key_pem(self) -> str | None:
        """Only when the key pair was made for the device; shown once, never kept."""

    @property
    def pkcs12(self) -> bytes | None: ...

    @property
    def pkcs12_password(self) -> str | None: ...


class KnownCertificate(Protocol):
    @property
    def serial(self) -> str: ...

    @property
    def device_id(self) -> str: ...

    @property
    def revoked_at(self) -> datetime | None: ...


class Authority(Protocol):
    async def issue(self, device_id: str, csr_pem: str | None) -> IssuedCertificate: ...

    async def revoke(self, serial: str, reason: str) -> bool: ...


class IssuedCertificates(Protocol):
    async def get(self, serial: str) -> KnownCertificate | None: ...

    async def for_device(self, device_id: str) -> Sequence[KnownCertificate]: ...

    async def supersede(self, device_id: str, keep: str, at: datetime) -> list[str]: ...

    async def superseded_before(self, moment: datetime) -> Sequence[KnownCertificate]: ...


class UnknownCertificate(LookupError):
    pass


class InvalidCsr(ValueError):
    """The CSR does not parse, its signature does not verify, or it names another device."""


class CertificateProvisioning:
    def __init__(self, devices: DeviceCommandHandler, authority: Authority, issued: IssuedCertificates,
                 overlap: timedelta, clock: Callable[[], datetime]) -> None:
        self._devices = devices
        self._authority = authority
        self._issued = issued
        self._overlap = overlap
        self._clock = clock

    async def provision(self, device_id: str, csr_pem: str | None, context: EventContext) -> IssuedCertificate:
        """A new certificate; the device's earlier ones stay valid for the overlap, then go."""
        await self._devices.may_hold_credentials(device_id)
        issued = await self._authority.issue(device_id, csr_pem)
        try:
            await self._devices.record_certificate(RecordCertificate(
                device_id, issued.serial, issued.fingerprint, issued.not_after, context))
        except BaseException:
            await self._authority.revoke(issued.serial, "cessation_of_operation")
            raise
        await self._issued.supersede(device_id, issued.serial, self._clock())
        return issued

    async def revoke(self, device_id: str, serial: str, reason: str, context: EventContext) -> None:
        known = await self._issued.get(serial)
        if known is None or known.device_id != device_id:
            raise UnknownCertificate(f"device {device_id!r} has no certificate {serial}")
        if known.revoked_at is None:
            await self._devices.revoke_certificate(RevokeCertificate(device_id, serial, reason, context))
        await self._authority.revoke(serial, reason)

    async def decommissioned(self, device_id: str) -> int:
        """After the device was decommissioned (its events revoked every certificate): the CA
        revokes them too, and the CRL says so."""
        revoked = 0
        for known in await self._issued.for_device(device_id):
            if known.revoked_at is None and await self._authority.revoke(known.serial, "decommissioned"):
                revoked += 1
        return revoked

    async def retire_superseded(self) -> int:
        """Revokes certificates replaced by a renewal longer ago than the overlap."""
        retired = 0
        for known in await self._issued.superseded_before(self._clock() - self._overlap):
            await self.revoke(known.device_id, known.serial, "superseded", _SYSTEM)
            retired += 1
        return retired


class CertificateRecord(KnownCertificate, Protocol):
    """One certificate issued to a device, as the API lists it."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def not_after(self) -> datetime: ...

    @property
    def issued_at(self) -> datetime: ...

    @property
    def superseded_at(self) -> datetime | None: ...

    @property
    def reason(self) -> str | None: ...


class CertificateListing(Protocol):
    async def for_device(self, device_id: str) -> Sequence[CertificateRecord]:
        """Every certificate issued to the device, revoked and superseded ones included."""
        ...


class CertificatePublication(Protocol):
    """What the authority publishes to anyone: its chain and its revocation list."""

    def chain(self) -> str:
        """The issuing CA and the root above it, PEM."""
        ...

    async def crl(self) -> x509.CertificateRevocationList: ...

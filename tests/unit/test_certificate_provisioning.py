"""Certificate provisioning over fakes: given a CA that issues, when a device is provisioned,
renewed, revoked or decommissioned, then what its history and the CA say."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from iot_platform.application.devices.certificates import CertificateProvisioning, UnknownCertificate
from iot_platform.application.devices.commands import DecommissionDevice, RegisterDevice, SuspendDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.devices import CertificateIssued, CertificateRevoked, Device, DeviceProvisioned
from iot_platform.domain.errors import InvalidTransition
from tests.unit.fakes import InMemoryEventStore

pytestmark = pytest.mark.asyncio
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Issued:
    serial: str
    fingerprint: str
    not_after: datetime
    certificate_pem: str = "-----BEGIN CERTIFICATE-----"
    private_key_pem: str | None = None
    pkcs12: bytes | None = None
    pkcs12_password: str | None = None


@dataclass(frozen=True)
class Known:
    serial: str
    device_id: str
    superseded_at: datetime | None = None
    revoked_at: datetime | None = None


class Authority:
    """The CA and what it issued, in memory."""

    def __init__(self) -> None:
        self.known: dict[str, Known] = {}
        self.revocations: list[tuple[str, str]] = []

    async def issue(self, device_id: str, csr_pem: str | None) -> Issued:
        serial = f"{len(self.known) + 1:02x}"
        self.known[serial] = Known(serial, device_id)
        return Issued(serial, f"fp-{serial}", NOW + timedelta(days=365))

    async def revoke(self, serial: str, reason: str) -> bool:
        if self.known[serial].revoked_at is not None:
            return False
        self.known[serial] = replace(self.known[serial], revoked_at=NOW)
        self.revocations.append((serial, reason))
        return True

    async def get(self, serial: str) -> Known | None:
        return self.known.get(serial)

    async def for_device(self, device_id: str) -> Sequence[Known]:
        return [k for k in self.known.values() if k.device_id == device_id]

    async def supersede(self, device_id: str, keep: str, at: datetime) -> list[str]:
        serials = [k.serial for k in self.known.values()
                   if k.device_id == device_id and k.serial != keep and k.revoked_at is None and k.superseded_at is None]
        for serial in serials:
            self.known[serial] = replace(self.known[serial], superseded_at=at)
        return serials

    async def superseded_before(self, moment: datetime) -> Sequence[Known]:
        return [k for k in self.known.values() if k.superseded_at and k.superseded_at <= moment and not k.revoked_at]


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


async def world() -> tuple[CertificateProvisioning, DeviceCommandHandler, InMemoryEventStore, Authority, Clock]:
    store, authority, clock = InMemoryEventStore(), Authority(), Clock()
    devices = DeviceCommandHandler(EventSourcedRepository(store, Device, 0))
    await devices.register(RegisterDevice("d-1", "th"))
    return (CertificateProvisioning(devices, authority, authority, timedelta(hours=24), clock),
            devices, store, authority, clock)


def events(store: InMemoryEventStore) -> list[type]:
    return [type(r.event) for r in store.events][1:]


async def test_the_first_certificate_provisions_and_a_renewal_overlaps_then_retires_the_old() -> None:
    provisioning, _, store, authority, clock = await world()
    await provisioning.provision("d-1", "csr", EventContext(actor="alice"))
    assert events(store) == [DeviceProvisioned, CertificateIssued]
    await provisioning.provision("d-1", "csr", EventContext(actor="alice"))
    assert events(store)[-1] is CertificateIssued and authority.revocations == []
    assert await provisioning.retire_superseded() == 0  # still in its overlap
    clock.now += timedelta(hours=25)
    assert await provisioning.retire_superseded() == 1
    assert authority.revocations == [("01", "superseded")] and events(store)[-1] is CertificateRevoked


async def test_a_suspended_device_is_refused_before_anything_is_issued() -> None:
    provisioning, devices, _, authority, _ = await world()
    await devices.suspend(SuspendDevice("d-1"))
    with pytest.raises(InvalidTransition):
        await provisioning.provision("d-1", "csr", EventContext())
    assert authority.known == {}


async def test_only_the_device_s_own_certificate_is_revoked_by_hand() -> None:
    provisioning, devices, store, authority, _ = await world()
    await devices.register(RegisterDevice("d-2", "th"))
    issued = await provisioning.provision("d-1", "csr", EventContext())
    with pytest.raises(UnknownCertificate):
        await provisioning.revoke("d-2", issued.serial, "key_compromise", EventContext())
    await provisioning.revoke("d-1", issued.serial, "key_compromise", EventContext())
    assert authority.revocations == [(issued.serial, "key_compromise")]


async def test_decommissioning_revokes_every_certificate_at_the_ca_too() -> None:
    provisioning, devices, store, authority, _ = await world()
    await provisioning.provision("d-1", "csr", EventContext())
    await provisioning.provision("d-1", "csr", EventContext())
    await devices.decommission(DecommissionDevice("d-1"))
    assert await provisioning.decommissioned("d-1") == 2
    assert sorted(authority.revocations) == [("01", "decommissioned"), ("02", "decommissioned")]

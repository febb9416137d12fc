"""Fleet provisioning by claim, over fakes: a claim token enrolls only devices that do not exist
yet, or that the claim registered itself and could not enroll (a retry), and only of the
claim's device type. Anything else is refused before a certificate is issued, the existing
device's certificates stay as they were, and the claim's use is given back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from iot_platform.application.devices.certificates import CertificateProvisioning, InvalidCsr
from iot_platform.application.devices.claims import (
    AlreadyClaimed,
    Claim,
    ClaimProvisioning,
    ClaimRefused,
    Taken,
    WrongDeviceType,
)
from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.devices import Device, DeviceStatus
from tests.unit.fakes import InMemoryEventStore
from tests.unit.test_certificate_provisioning import Authority, Clock

pytestmark = pytest.mark.asyncio


class InMemoryClaims:
    """The Claims port as SqlClaims keeps it: a use counter per claim, a binding per device id."""

    def __init__(self) -> None:
        self.claims: dict[str, Claim] = {}
        self.bound: dict[str, str] = {}

    async def add(self, claim: Claim) -> None:
        self.claims[claim.claim_id] = claim

    async def get(self, claim_id: str) -> Claim | None:
        return self.claims.get(claim_id)

    async def list(self) -> Sequence[Claim]:
        return list(self.claims.values())

    async def revoke(self, claim_id: str, at: datetime) -> bool:
        self.claims[claim_id] = replace(self.claims[claim_id], revoked_at=at)
        return True

    async def use(self, claim_id: str, device_id: str, at: datetime) -> Taken | None:
        claim = self.claims[claim_id]
        if claim.used >= claim.max_uses or claim.expires_at <= at or claim.revoked_at is not None:
            return None
        owner = self.bound.get(device_id)
        if owner is not None and owner != claim_id:
            raise AlreadyClaimed(f"device {device_id!r} was claimed by another claim")
        self.claims[claim_id] = replace(claim, used=claim.used + 1)
        self.bound[device_id] = claim_id
        return "new" if owner is None else "again"

    async def give_back(self, claim_id: str, device_id: str, unbind: bool) -> None:
        if unbind:
            self.bound.pop(device_id, None)
        self.claims[claim_id] = replace(self.claims[claim_id], used=self.claims[claim_id].used - 1)

    async def owner(self, device_id: str) -> str | None:
        return self.bound.get(device_id)


class CsrCheckingAuthority(Authority):
    """Refuses the CSR "bad", as the real CA refuses one that does not parse."""

    async def issue(self, device_id: str, csr_pem: str | None):  # type: ignore[no-untyped-def]
        if csr_pem == "bad":
            raise InvalidCsr("not a CSR")
        return await super().issue(device_id, csr_pem)


class World:
    def __init__(self) -> None:
        self.store, self.authority, self.clock = InMemoryEventStore(), CsrCheckingAuthority(), Clock()
        self.claims = InMemoryClaims()
        self.devices = DeviceCommandHandler(EventSourcedRepository(self.store, Device, 0))
        self.certificates = CertificateProvisioning(self.devices, self.authority, self.authority,
                                                    timedelta(hours=24), self.clock)
        self.provisioning = ClaimProvisioning(self.claims, self.devices, self.certificates, self.clock)

    async def claim(self, device_type: str = "thermo", uses: int = 5) -> tuple[str, str]:
        claim, token = await self.provisioning.create("batch", device_type, uses, timedelta(hours=1), {}, "alice")
        return claim.claim_id, token

    def used(self, claim_id: str) -> int:
        return self.claims.claims[claim_id].used

    async def status(self, device_id: str) -> DeviceStatus | None:
        return (await self.devices.current(device_id)).status


async def test_a_new_device_is_registered_with_the_claim_s_type_and_enrolled() -> None:
    world = World()
    claim_id, token = await world.claim()
    issued = await world.provisioning.exchange(token, "f-1", "csr")
    device = await world.devices.current("f-1")
    assert (device.device_type, device.status, list(device.certificates)) == ("thermo", DeviceStatus.PROVISIONED,
                                                                             [issued.serial])
    assert world.used(claim_id) == 1


async def test_an_existing_device_is_not_taken_over_and_keeps_its_certificate() -> None:
    """Given a device an operator registered and enrolled, when a claim token names it, then
    409, no certificate is issued, the old one is not superseded, and the use is given back."""
    world = World()
    await world.devices.register(RegisterDevice("d-1", "thermo"))
    legit = await world.certificates.provision("d-1", "csr", EventContext(actor="alice"))
    claim_id, token = await world.claim()
    with pytest.raises(AlreadyClaimed, match="already exists"):
        await world.provisioning.exchange(token, "d-1", "csr")
    assert list(world.authority.known) == [legit.serial]
    assert list((await world.devices.current("d-1")).certificates) == [legit.serial]
    assert world.used(claim_id) == 0 and await world.claims.owner("d-1") is None


async def test_an_existing_device_of_another_type_is_refused_too() -> None:
    world = World()
    await world.devices.register(RegisterDevice("pump-1", "pump"))
    claim_id, token = await world.claim(device_type="thermo")
    with pytest.raises(AlreadyClaimed):
        await world.provisioning.exchange(token, "pump-1", "csr")
    assert world.authority.known == {} and await world.status("pump-1") is DeviceStatus.REGISTERED
    assert world.used(claim_id) == 0


async def test_a_registered_device_without_certificate_is_not_taken_either() -> None:
    """Registered by an operator and never enrolled: still not the claim's to enroll."""
    world = World()
    await world.devices.register(RegisterDevice("d-2", "thermo"))
    _, token = await world.claim()
    with pytest.raises(AlreadyClaimed):
        await world.provisioning.exchange(token, "d-2", "csr")
    assert world.authority.known == {}


async def test_a_retry_by_the_same_claim_after_a_failed_exchange_enrolls_the_device() -> None:
    """Given an exchange that registered the device and then failed on its CSR, when the
    device retries with a good CSR, then it is enrolled and the claim counts one use."""
    world = World()
    claim_id, token = await world.claim()
    with pytest.raises(InvalidCsr):
        await world.provisioning.exchange(token, "f-1", "bad")
    assert await world.status("f-1") is DeviceStatus.REGISTERED and world.used(claim_id) == 0
    await world.provisioning.exchange(token, "f-1", "csr")
    assert await world.status("f-1") is DeviceStatus.PROVISIONED and world.used(claim_id) == 1


async def test_another_claim_cannot_finish_what_one_claim_started() -> None:
    world = World()
    _, first = await world.claim()
    other_id, other = await world.claim()
    with pytest.raises(InvalidCsr):
        await world.provisioning.exchange(first, "f-1", "bad")
    with pytest.raises(AlreadyClaimed):
        await world.provisioning.exchange(other, "f-1", "csr")
    assert world.authority.known == {} and world.used(other_id) == 0


async def test_a_device_is_enrolled_once_per_claim() -> None:
    world = World()
    claim_id, token = await world.claim()
    first = await world.provisioning.exchange(token, "f-1", "csr")
    with pytest.raises(AlreadyClaimed, match="enrolled by this claim before"):
        await world.provisioning.exchange(token, "f-1", "csr")
    assert list(world.authority.known) == [first.serial] and world.used(claim_id) == 1


async def test_a_claim_s_device_whose_type_changed_since_is_refused_with_the_reason() -> None:
    """The claim registered it, the exchange failed, then the device became another type."""
    world = World()
    claim_id, token = await world.claim(device_type="thermo")
    with pytest.raises(InvalidCsr):
        await world.provisioning.exchange(token, "f-1", "bad")
    device = await world.devices.current("f-1")
    device.device_type = "pump"  # no command changes a type today; this stands in for one
    world.devices.current = _returning(device)  # type: ignore[method-assign]
    with pytest.raises(WrongDeviceType, match="'pump'"):
        await world.provisioning.exchange(token, "f-1", "csr")
    assert world.authority.known == {} and world.used(claim_id) == 0


async def test_a_used_up_claim_is_refused_before_anything_is_registered() -> None:
    world = World()
    _, token = await world.claim(uses=1)
    await world.provisioning.exchange(token, "f-1", "csr")
    with pytest.raises(ClaimRefused):
        await world.provisioning.exchange(token, "f-2", "csr")
    assert not (await world.devices.current("f-2")).exists


def _returning(device: Device):  # type: ignore[no-untyped-def]
    async def current(device_id: str) -> Device:
        return device

    return current


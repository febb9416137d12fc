"""The device command handler: load, decide, save, then wait for the registry to catch up.

Waiting for the projection is what lets ``POST /api/devices`` be followed at once by a ``GET``
that finds the device. The wait is bounded; if projections lag further than that, the write
still stands and the read side will show it shortly.

The handler stamps every change with its clock's time (``EventContext.at``): the domain reads no
clock, so the time a device event occurred is the application's to give.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from iot_platform.application.clock import utcnow
from iot_platform.application.devices.commands import (
    ActivateDevice,
    CommandResult,
    DecommissionDevice,
    ProvisionDevice,
    RecordCertificate,
    RecordConnectivity,
    RecordJoin,
    RegisterDevice,
    ResumeDevice,
    RevokeCertificate,
    SuspendDevice,
    UpdateDevice,
)
from iot_platform.application.errors import ConcurrencyError, NotFound
from iot_platform.application.ports import ReadModelSync
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.devices import Device


class DeviceCommandHandler:
    def __init__(
        self,
        repository: EventSourcedRepository[Device],
        read_model: ReadModelSync | None = None,
        read_your_writes_timeout: float = 5.0,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._read_model = read_model
        self._timeout = read_your_writes_timeout
        self._on_change = on_change
        """Told the id of every device this handler changed (e.g. to drop cached lookups)."""

    async def register(self, command: RegisterDevice) -> CommandResult:
        device = await self._repository.load(command.device_id)
        device.register(
            name=command.name,
            device_type=command.device_type,
            protocol=command.protocol,
            tags=command.tags,
            location=command.location,
            metadata=command.metadata,
            lorawan=command.lorawan,
            context=self._now(command.context),
        )
        return await self._save(device, None)

    async def update(self, command: UpdateDevice) -> CommandResult:
        device = await self._existing(command.device_id)
        device.update(
            name=command.name,
            tags=command.tags,
            location=command.location,
            clear_location=command.clear_location,
            metadata=command.metadata,
            context=self._now(command.context),
        )
        return await self._save(device, command.expected_version)

    async def suspend(self, command: SuspendDevice) -> CommandResult:
        device = await self._existing(command.device_id)
        device.suspend(command.reason, self._now(command.context))
        return await self._save(device, command.expected_version)

    async def resume(self, command: ResumeDevice) -> CommandResult:
        device = await self._existing(command.device_id)
        device.resume(self._now(command.context))
        return await self._save(device, command.expected_version)

    async def decommission(self, command: DecommissionDevice) -> CommandResult:
        device = await self._existing(command.device_id)
        device.decommission(command.reason, self._now(command.context))
        return await self._save(device, command.expected_version)

    async def activate(self, command: ActivateDevice) -> CommandResult:
        """Called by ingestion, not a person: nobody waits for the read model, and a race with
        another writer is retried rather than reported."""
        return await self._retrying(command.device_id, lambda d: d.activate(self._now(command.context)))

    async def record_connectivity(self, command: RecordConnectivity) -> CommandResult:
        return await self._retrying(
            command.device_id, lambda d: d.record_connectivity(command.online, self._now(command.context))
        )

    async def provision(self, command: ProvisionDevice) -> CommandResult:
        device = await self._existing(command.device_id)
        device.provision(credential_type=command.credential_type,
                         credential_fingerprint=command.credential_fingerprint,
                         context=self._now(command.context))
        return await self._save(device, None)

    async def record_certificate(self, command: RecordCertificate) -> CommandResult:
        device = await self._existing(command.device_id)
        device.record_certificate(command.serial, command.fingerprint, command.not_after,
                                  self._now(command.context))
        return await self._save(device, None)

    async def revoke_certificate(self, command: RevokeCertificate) -> CommandResult:
        device = await self._existing(command.device_id)
        device.revoke_certificate(command.serial, command.reason, self._now(command.context))
        return await self._save(device, None)

    async def may_hold_credentials(self, device_id: str) -> None:
        """Raises as issuing would: unknown, suspended or decommissioned devices get none."""
        (await self._existing(device_id)).ensure_may_hold_credentials()

    async def join(self, command: RecordJoin) -> CommandResult:
        return await self._retrying(
            command.device_id, lambda d: d.join(command.dev_addr, self._now(command.context))
        )

    def _now(self, context: EventContext) -> EventContext:
        return context.stamped(self._clock())

    async def _retrying(self, device_id: str, decide: Callable[[Device], None]) -> CommandResult:
        for attempt in range(3):
            device = await self._existing(device_id)
            decide(device)
            try:
                return await self._save(device, None, wait=False)
            except ConcurrencyError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def current(self, device_id: str) -> Device:
        """The device as its history stands now (``exists`` is False for an unknown id)."""
        return await self._repository.load(device_id)

    async def _existing(self, device_id: str) -> Device:
        device = await self._repository.load(device_id)
        if not device.exists:
            raise NotFound(f"device {device_id!r} is not registered")
        return device

    async def _save(
        self, device: Device, expected_version: int | None, wait: bool = True
    ) -> CommandResult:
        result = await self._repository.save(device, expected_version)
        if result is None:
            return CommandResult(device.id, device.version, None)
        if self._on_change is not None:
            self._on_change(device.id)
        if wait and self._read_model is not None:
            await self._read_model.wait_for(result.last_position, self._timeout)
        return CommandResult(device.id, result.version, result.last_position)

"""The device command handler: load, decide, save, then wait for the registry to catch up.

Waiting for the projection is what lets ``POST /api/devices`` be followed at once by a ``GET``
that finds the device. The wait is bounded; if projections lag further than that, the write
still stands and the read side will show it shortly.
"""

from __future__ import annotations

from iot_platform.application.devices.commands import (
    CommandResult,
    DecommissionDevice,
    RegisterDevice,
    ResumeDevice,
    SuspendDevice,
    UpdateDevice,
)
from iot_platform.application.errors import NotFound
from iot_platform.application.ports import ReadModelSync
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.domain.devices import Device


class DeviceCommandHandler:
    def __init__(
        self,
        repository: EventSourcedRepository[Device],
        read_model: ReadModelSync | None = None,
        read_your_writes_timeout: float = 5.0,
    ) -> None:
        self._repository = repository
        self._read_model = read_model
        self._timeout = read_your_writes_timeout

    async def register(self, command: RegisterDevice) -> CommandResult:
        device = await self._repository.load(command.device_id)
        device.register(
            name=command.name,
            device_type=command.device_type,
            protocol=command.protocol,
            tags=command.tags,
            location=command.location,
            metadata=command.metadata,
            context=command.context,
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
            context=command.context,
        )
        return await self._save(device, command.expected_version)

    async def suspend(self, command: SuspendDevice) -> CommandResult:
        device = await self._existing(command.device_id)
        device.suspend(command.reason, command.context)
        return await self._save(device, command.expected_version)

    async def resume(self, command: ResumeDevice) -> CommandResult:
        device = await self._existing(command.device_id)
        device.resume(command.context)
        return await self._save(device, command.expected_version)

    async def decommission(self, command: DecommissionDevice) -> CommandResult:
        device = await self._existing(command.device_id)
        device.decommission(command.reason, command.context)
        return await self._save(device, command.expected_version)

    async def _existing(self, device_id: str) -> Device:
        device = await self._repository.load(device_id)
        if not device.exists:
            raise NotFound(f"device {device_id!r} is not registered")
        return device

    async def _save(self, device: Device, expected_version: int | None) -> CommandResult:
        result = await self._repository.save(device, expected_version)
        if result is None:
            return CommandResult(device.id, device.version, None)
        if self._read_model is not None:
            await self._read_model.wait_for(result.last_position, self._timeout)
        return CommandResult(device.id, result.version, result.last_position)

"""Device command routes: issue and follow commands; HTTP devices poll for them and answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from iot_platform.application.commands.commands import AcknowledgeCommand, IssueCommand
from iot_platform.application.errors import NotFound
from iot_platform.config import Settings
from iot_platform.domain.commands import CommandStatus
from iot_platform.presentation.rest.deps import CommandsDep, DevicesDep, SettingsDep, event_context
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.schemas.commands import (
    CommandAckIn,
    CommandCreate,
    CommandForDevice,
    CommandList,
    CommandPublic,
    PendingCommands,
)
from iot_platform.presentation.rest.security import Principal, confine, require

router = APIRouter(prefix="/api/devices/{device_id}/commands", tags=["commands"])

Reader = Annotated[Principal, Depends(require("commands:read"))]
Writer = Annotated[Principal, Depends(require("commands:write"))]
Receiver = Annotated[Principal, Depends(require("commands:receive"))]
"""What a device does with its commands (take, acknowledge); a device credential only its own."""
Wait = Annotated[float, Query(ge=0, allow_inf_nan=False, description="seconds")]


def _bounded_wait(settings: Settings, wait: float) -> float:
    limit = settings.commands.max_wait_seconds
    if wait > limit:
        raise FieldError("wait", f"must be at most {limit:g} seconds")
    return wait


async def _known_device(devices: DevicesDep, device_id: str) -> None:
    if await devices.registry.get(device_id) is None:
        raise NotFound(f"device {device_id!r} is not registered")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CommandPublic)
async def issue_command(
    device_id: str,
    body: CommandCreate,
    request: Request,
    response: Response,
    commands: CommandsDep,
    who: Writer,
) -> CommandPublic | JSONResponse:
    """Issues a command; an MQTT device that is online (or not known offline) gets it at once,
    others when they come online or poll."""
    issued = await commands.delivery.issue(
        IssueCommand(
            device_id=device_id,
            command=body.command,
            parameters=body.parameters,
            ttl_seconds=body.ttl_seconds,
            context=event_context(request, who),
        )
    )
    location = f"/api/devices/{device_id}/commands/{issued.command_id}"
    response.headers["Location"] = location
    view = await commands.views.get(issued.command_id)
    if view is None:  # the read model lags beyond the configured wait; the command stands
        return JSONResponse(
            status_code=status.HTTP_202_ACCEPTED,
            content={"command_id": issued.command_id, "device_id": device_id},
            headers={"Location": location},
        )
    return CommandPublic.of(view)


@router.get("", response_model=CommandList)
async def list_commands(
    device_id: str,
    commands: CommandsDep,
    devices: DevicesDep,
    settings: SettingsDep,
    _: Reader,
    status_: Annotated[CommandStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> CommandList:
    """The device's commands, newest first."""
    if limit > settings.api.max_page_size:
        raise FieldError("limit", f"must be at most {settings.api.max_page_size}")
    await _known_device(devices, device_id)
    views = await commands.views.for_device(device_id, status_, limit)
    return CommandList(items=[CommandPublic.of(v) for v in views])


@router.get("/pending", response_model=PendingCommands)
async def poll_pending_commands(
    device_id: str,
    commands: CommandsDep,
    devices: DevicesDep,
    settings: SettingsDep,
    who: Receiver,
    wait: Wait = 0.0,
) -> PendingCommands:
    """For HTTP devices: the pending, unexpired commands, oldest first, now marked sent.

    With ``wait`` it is a long poll: it answers as soon as there is one, or empty after
    ``wait`` seconds. It changes state (commands become sent), hence ``commands:receive``.
    """
    confine(who, device_id)
    wait = _bounded_wait(settings, wait)
    await _known_device(devices, device_id)
    messages = await commands.delivery.poll(device_id, wait)
    return PendingCommands(items=[CommandForDevice.of(m) for m in messages])


@router.get("/{command_id}", response_model=CommandPublic)
async def get_command(
    device_id: str,
    command_id: str,
    commands: CommandsDep,
    settings: SettingsDep,
    _: Reader,
    wait: Wait = 0.0,
) -> CommandPublic:
    """Its status and result; with ``wait``, answers once it is final or ``wait`` has passed."""
    view = await commands.status.get(device_id, command_id, _bounded_wait(settings, wait))
    return CommandPublic.of(view)


@router.post("/{command_id}/ack", response_model=CommandPublic)
async def acknowledge_command(
    device_id: str,
    command_id: str,
    body: CommandAckIn,
    request: Request,
    commands: CommandsDep,
    who: Receiver,
) -> CommandPublic:
    """An HTTP device's answer, as on MQTT ``devices/{id}/commands/ack``."""
    confine(who, device_id)
    await commands.handler.acknowledge(
        AcknowledgeCommand(
            device_id,
            command_id,
            CommandStatus(body.status),
            body.result,
            context=event_context(request, who),
        )
    )
    return CommandPublic.of(await commands.status.get(device_id, command_id))

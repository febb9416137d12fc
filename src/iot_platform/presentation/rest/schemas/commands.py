"""Request and response bodies of the device-command routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from iot_platform.application.commands.commands import CommandMessage
from iot_platform.application.commands.ports import CommandView
from iot_platform.domain.commands import CommandStatus


class CommandCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "command": "set_sampling_rate",
                "parameters": {"interval_seconds": 30},
                "ttl_seconds": 3600,
            }
        },
    )

    command: str = Field(min_length=1, max_length=100)
    parameters: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="default: commands.default_ttl_seconds"
    )


class CommandAckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["delivered", "succeeded", "failed"]
    result: Any = None


class CommandPublic(BaseModel):
    command_id: str
    device_id: str
    command: str
    parameters: dict[str, Any]
    status: CommandStatus
    result: Any
    issued_by: str
    issued_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    completed_at: datetime | None
    version: int

    @classmethod
    def of(cls, view: CommandView) -> CommandPublic:
        return cls(**view.__dict__)


class CommandList(BaseModel):
    items: list[CommandPublic]


class CommandForDevice(BaseModel):
    """What a device receives: the same fields as the MQTT message."""

    command_id: str
    command: str
    parameters: dict[str, Any]
    issued_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, message: CommandMessage) -> CommandForDevice:
        return cls(
            command_id=message.command_id,
            command=message.command,
            parameters=message.parameters,
            issued_at=message.issued_at,
            expires_at=message.expires_at,
        )


class PendingCommands(BaseModel):
    items: list[CommandForDevice]

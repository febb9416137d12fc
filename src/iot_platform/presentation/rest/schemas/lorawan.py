"""Bodies of the LoRaWAN routes (gateways, a device's network session)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class GatewayCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"gateway_eui": "aa555a0000000000", "name": "roof-north"}},
    )

    gateway_eui: str = Field(pattern=r"^[0-9a-fA-F]{16}$")
    name: str | None = Field(None, min_length=1, max_length=200)


class GatewayPublic(BaseModel):
    gateway_eui: str
    name: str
    registered_at: datetime
    last_seen: datetime | None


class GatewayList(BaseModel):
    items: list[GatewayPublic]


class LoRaWANSessionPublic(BaseModel):
    """What the network server holds for a device, without its keys."""

    device_id: str
    dev_eui: str
    join_eui: str | None
    activation: str
    codec: str
    dev_addr: str | None
    joined: bool
    f_cnt_up: int | None
    f_cnt_down: int

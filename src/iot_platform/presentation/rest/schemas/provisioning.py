"""Bodies of the fleet provisioning (claim) routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ClaimCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "example": {"name": "factory batch 7", "device_type": "thermo", "uses": 500, "valid_hours": 72}})

    name: str = Field(min_length=1, max_length=200)
    device_type: str = Field(min_length=1, max_length=100)
    uses: int = Field(ge=1, le=1_000_000)
    valid_hours: float = Field(gt=0, le=24 * 366)
    tags: dict[str, str] = Field(default_factory=dict)


class ClaimPublic(BaseModel):
    claim_id: str
    name: str
    device_type: str
    tags: dict[str, str]
    uses: int
    used: int
    expires_at: datetime
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class ClaimCreated(ClaimPublic):
    token: str = Field(description="the enrollment token, shown this once: devices send it as a bearer")


class ClaimList(BaseModel):
    items: list[ClaimPublic]


class ClaimExchange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(min_length=1, max_length=128)
    csr: str = Field(min_length=1, max_length=16_384)

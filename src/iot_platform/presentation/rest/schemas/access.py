"""Bodies of the access routes: tokens, API keys, users."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from iot_platform.application.access.model import ROLES


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "example": {"name": "grafana", "roles": ["viewer"], "expires_in_days": 90}})

    name: str = Field(min_length=1, max_length=200)
    roles: list[str] = Field(min_length=1, description=f"of {', '.join(ROLES)}")
    device_id: str | None = Field(None, min_length=1, max_length=128,
                                  description="required with the device role: the only device it acts for")
    expires_in_days: float | None = Field(None, gt=0, le=3650)


class ApiKeyPublic(BaseModel):
    key_id: str
    name: str
    roles: list[str]
    device_id: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    api_key: str = Field(description="shown this once; only its hash is kept")


class ApiKeyList(BaseModel):
    items: list[ApiKeyPublic]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$")
    password: str = Field(min_length=12, max_length=200, repr=False)
    roles: list[str] = Field(min_length=1, description=f"of {', '.join(ROLES)}; device stands alone")
    device_id: str | None = Field(None, min_length=1, max_length=128,
                                  description="required with the device role: the only device the user acts for")


class UserPublic(BaseModel):
    username: str
    roles: list[str]
    created_at: datetime
    device_id: str | None = None


class Me(BaseModel):
    subject: str
    roles: list[str]
    device_id: str | None

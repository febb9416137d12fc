"""Access routes: bearer tokens for users (OAuth2 password grant), API keys, users."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from iot_platform.application.access.model import ApiKey, DeviceBinding, UnknownRole
from iot_platform.application.access.ports import CredentialTaken
from iot_platform.application.errors import NotFound
from iot_platform.application.limits import Throttled
from iot_platform.domain.errors import AlreadyExists
from iot_platform.presentation.rest.deps import AccessDep
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.schemas.access import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyList,
    ApiKeyPublic,
    Me,
    TokenOut,
    UserCreate,
    UserPublic,
)
from iot_platform.presentation.rest.security import Principal, client_address, require, too_many

router = APIRouter(prefix="/api/auth", tags=["access"])

Admin = Annotated[Principal, Depends(require("access:write"))]
AccessReader = Annotated[Principal, Depends(require("access:read"))]
Anyone = Annotated[Principal, Depends(require("self:read"))]


def _public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(key_id=key.key_id, name=key.name, roles=list(key.roles), device_id=key.device_id,
                        created_at=key.created_at, created_by=key.created_by,
                        expires_at=key.expires_at, revoked_at=key.revoked_at)


@router.post("/token", response_model=TokenOut)
async def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], access: AccessDep, request: Request
) -> TokenOut:
    """OAuth2 password grant: ``username`` and ``password`` as a form; a JWT bearer token back.
    After too many failures for a username or from a client address: 429 with Retry-After."""
    try:
        issued = await access.service.token_for(form.username, form.password, client_address(request.scope))
    except Throttled as refused:
        raise too_many(refused) from None
    if issued is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown user or wrong password",
                            {"WWW-Authenticate": "Bearer"})
    return TokenOut(access_token=issued[0], expires_in=issued[1])


@router.get("/me", response_model=Me)
async def me(who: Anyone) -> Me:
    return Me(subject=who.subject, roles=sorted(who.roles), device_id=who.device_id)


@router.post("/apikeys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
async def create_api_key(body: ApiKeyCreate, access: AccessDep, who: Admin) -> ApiKeyCreated:
    try:
        key, plaintext = await access.service.create_key(
            body.name, tuple(body.roles), who.subject, body.device_id,
            timedelta(days=body.expires_in_days) if body.expires_in_days else None)
    except UnknownRole as exc:
        raise FieldError("roles", str(exc)) from None
    except DeviceBinding as exc:
        raise FieldError(exc.field, str(exc)) from None
    return ApiKeyCreated(**_public(key).model_dump(), api_key=plaintext)


@router.get("/apikeys", response_model=ApiKeyList)
async def list_api_keys(access: AccessDep, _: AccessReader) -> ApiKeyList:
    return ApiKeyList(items=[_public(k) for k in await access.keys.list()])


@router.delete("/apikeys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(key_id: str, access: AccessDep, _: Admin) -> None:
    if not await access.service.revoke_key(key_id):
        raise NotFound(f"no live API key {key_id!r}")


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
async def create_user(body: UserCreate, access: AccessDep, _: Admin) -> UserPublic:
    try:
        user = await access.service.create_user(body.username, body.password, tuple(body.roles), body.device_id)
    except UnknownRole as exc:
        raise FieldError("roles", str(exc)) from None
    except DeviceBinding as exc:
        raise FieldError(exc.field, str(exc)) from None
    except CredentialTaken as exc:
        raise AlreadyExists(str(exc), field="username") from None
    return UserPublic(username=user.username, roles=list(user.roles), created_at=user.created_at,
                      device_id=user.device_id)

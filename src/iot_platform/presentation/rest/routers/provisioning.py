"""Fleet provisioning by claim: operators make claims; devices exchange a claim's token for
their own certificate (``POST /api/provisioning/claim`` with ``Authorization: Bearer iotc_...``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from iot_platform.application.devices.certificates import InvalidCsr
from iot_platform.application.devices.claims import AlreadyClaimed, Claim, ClaimRefused, WrongDeviceType
from iot_platform.domain.errors import AlreadyExists
from iot_platform.presentation.rest.deps import DevicesDep, PkiDep, ProvisioningDep, SettingsDep, event_context
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.routers.devices import x509_answer
from iot_platform.presentation.rest.schemas.devices import Provisioned
from iot_platform.presentation.rest.schemas.provisioning import (
    ClaimCreate,
    ClaimCreated,
    ClaimExchange,
    ClaimList,
    ClaimPublic,
)
from iot_platform.presentation.rest.security import Principal, require

router = APIRouter(prefix="/api/provisioning", tags=["provisioning"])

Reader = Annotated[Principal, Depends(require("devices:read"))]
Writer = Annotated[Principal, Depends(require("devices:write"))]
_claim_token = HTTPBearer(auto_error=False, scheme_name="ClaimToken",
                          description="A claim's enrollment token (iotc_...), shared by a batch of devices")


async def claim_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_claim_token)],
) -> str:
    """Checked before the body, like any credential: no claim token, no answer but 401."""
    if credentials is None or not credentials.credentials.startswith("iotc_"):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a claim token is required: Authorization: Bearer iotc_...",
                            {"WWW-Authenticate": "Bearer"})
    return credentials.credentials


def _public(claim: Claim) -> ClaimPublic:
    return ClaimPublic(claim_id=claim.claim_id, name=claim.name, device_type=claim.device_type, tags=claim.tags,
                       uses=claim.max_uses, used=claim.used, expires_at=claim.expires_at,
                       created_at=claim.created_at, created_by=claim.created_by, revoked_at=claim.revoked_at)


@router.post("/claims", status_code=status.HTTP_201_CREATED, response_model=ClaimCreated)
async def create_claim(
    body: ClaimCreate, request: Request, provisioning: ProvisioningDep, who: Writer
) -> ClaimCreated:
    claim, token = await provisioning.claims.create(body.name, body.device_type, body.uses,
                                                    timedelta(hours=body.valid_hours), body.tags,
                                                    event_context(request, who).actor)
    return ClaimCreated(**_public(claim).model_dump(), token=token)


@router.get("/claims", response_model=ClaimList)
async def list_claims(provisioning: ProvisioningDep, _: Reader) -> ClaimList:
    return ClaimList(items=[_public(c) for c in await provisioning.claim_records.list()])


@router.delete("/claims/{claim_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_claim(claim_id: str, provisioning: ProvisioningDep, _: Writer) -> Response:
    await provisioning.claims.revoke(claim_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/claim", response_model=Provisioned)
async def claim(
    body: ClaimExchange,
    provisioning: ProvisioningDep,
    devices: DevicesDep,
    pki: PkiDep,
    settings: SettingsDep,
    token: Annotated[str, Depends(claim_token)],
) -> Provisioned:
    """A device's first call: its claim token for its own certificate, once per device id.

    Only for a device id nobody has registered (or that this claim registered and could not
    enroll yet: a retry): an existing device is 409 and keeps its certificate."""
    try:
        issued = await provisioning.claims.exchange(token, body.device_id, body.csr)
    except ClaimRefused as refused:
        code = status.HTTP_401_UNAUTHORIZED if refused.unknown else status.HTTP_403_FORBIDDEN
        raise HTTPException(code, str(refused), {"WWW-Authenticate": "Bearer"} if refused.unknown else None) from None
    except AlreadyClaimed as exc:
        raise AlreadyExists(str(exc), field="device_id") from None
    except WrongDeviceType as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except InvalidCsr as exc:
        raise FieldError("csr", str(exc)) from None
    return await x509_answer(devices, pki, settings, body.device_id, issued)

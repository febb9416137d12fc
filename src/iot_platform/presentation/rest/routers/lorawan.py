"""LoRaWAN routes: gateways the network server listens to, and a device's session state.
LoRaWAN devices themselves are registered on ``POST /api/devices`` with a ``lorawan`` block."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from iot_platform.application.errors import NotFound
from iot_platform.application.lorawan.ports import Gateway, RootKeys
from iot_platform.domain.lorawan import LoRaWANProfile, validate_eui
from iot_platform.presentation.rest.deps import LoRaWANDep
from iot_platform.presentation.rest.schemas.devices import LoRaWANIn
from iot_platform.presentation.rest.schemas.lorawan import (
    GatewayCreate,
    GatewayList,
    GatewayPublic,
    LoRaWANSessionPublic,
)
from iot_platform.presentation.rest.security import Principal, require

router = APIRouter(prefix="/api/lorawan", tags=["lorawan"])

Reader = Annotated[Principal, Depends(require("devices:read"))]
Writer = Annotated[Principal, Depends(require("devices:write"))]


def lorawan_profile(body: LoRaWANIn | None) -> LoRaWANProfile | None:
    if body is None:
        return None
    return LoRaWANProfile(
        dev_eui=body.dev_eui.lower(), activation=body.activation, codec=body.codec,
        join_eui=body.join_eui.lower() if body.join_eui else None,
        dev_addr=body.dev_addr.lower() if body.dev_addr else None,
    )


def root_keys(body: LoRaWANIn) -> RootKeys:
    def key(value: str | None) -> bytes | None:
        return bytes.fromhex(value) if value else None

    return RootKeys(app_key=key(body.app_key), nwk_s_key=key(body.nwk_s_key),
                    app_s_key=key(body.app_s_key))


def _public(gateway: Gateway) -> GatewayPublic:
    return GatewayPublic(gateway_eui=gateway.gateway_eui, name=gateway.name,
                         registered_at=gateway.registered_at, last_seen=gateway.last_seen)


@router.post("/gateways", status_code=status.HTTP_201_CREATED, response_model=GatewayPublic)
async def register_gateway(
    body: GatewayCreate, response: Response, lorawan: LoRaWANDep, _: Writer
) -> GatewayPublic:
    gateway = await lorawan.registrar.add_gateway(body.gateway_eui, body.name)
    lorawan.forget_gateway(gateway.gateway_eui)
    response.headers["Location"] = f"/api/lorawan/gateways/{gateway.gateway_eui}"
    return _public(gateway)


@router.get("/gateways", response_model=GatewayList)
async def list_gateways(lorawan: LoRaWANDep, _: Reader) -> GatewayList:
    return GatewayList(items=[_public(g) for g in await lorawan.gateways.list()])


@router.get("/gateways/{gateway_eui}", response_model=GatewayPublic)
async def get_gateway(gateway_eui: str, lorawan: LoRaWANDep, _: Reader) -> GatewayPublic:
    gateway = await lorawan.gateways.get(validate_eui(gateway_eui, "gateway_eui"))
    if gateway is None:
        raise NotFound(f"gateway {gateway_eui} is not registered")
    return _public(gateway)


@router.delete("/gateways/{gateway_eui}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_gateway(gateway_eui: str, lorawan: LoRaWANDep, _: Writer) -> Response:
    eui = validate_eui(gateway_eui, "gateway_eui")
    if not await lorawan.gateways.remove(eui):
        raise NotFound(f"gateway {gateway_eui} is not registered")
    lorawan.forget_gateway(eui)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/devices/{device_id}", response_model=LoRaWANSessionPublic)
async def get_session(device_id: str, lorawan: LoRaWANDep, _: Reader) -> LoRaWANSessionPublic:
    session = await lorawan.sessions.by_device(device_id)
    if session is None:
        raise NotFound(f"device {device_id!r} has no LoRaWAN session")
    return LoRaWANSessionPublic(
        device_id=session.device_id, dev_eui=session.dev_eui, join_eui=session.join_eui,
        activation=session.activation.value, codec=session.codec, dev_addr=session.dev_addr,
        joined=session.dev_addr is not None, f_cnt_up=session.f_cnt_up,
        f_cnt_down=session.f_cnt_down,
    )

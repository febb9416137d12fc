"""Device management routes. Each parses, calls one use case or query, and shapes the answer."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from iot_platform.application.devices.certificates import (
    CertificatePublication,
    InvalidCsr,
    IssuedCertificate,
    UnknownCertificate,
)
from iot_platform.application.devices.commands import (
    CommandResult,
    DecommissionDevice,
    RegisterDevice,
    ResumeDevice,
    SuspendDevice,
    UpdateDevice,
)
from iot_platform.application.devices.provisioning import fingerprint
from iot_platform.application.devices.queries import DeviceSearch, Near, device_history
from iot_platform.application.errors import NotFound
from iot_platform.application.ports import UnreadableEvent
from iot_platform.application.services import DeviceServices
from iot_platform.config import Settings
from iot_platform.domain.devices import DeviceMetadata, DeviceStatus, Location, Protocol
from iot_platform.presentation.rest.deps import (
    DevicesDep,
    IfMatchDep,
    LoRaWANDep,
    PkiDep,
    ProvisioningDep,
    SettingsDep,
    event_context,
)
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.routers.lorawan import lorawan_profile, root_keys
from iot_platform.presentation.rest.schemas.devices import (
    CertificateList,
    CertificateOut,
    CertificatePublic,
    DeviceCreate,
    DeviceHistory,
    DeviceList,
    DevicePublic,
    DeviceUpdate,
    GeneratedKey,
    HistoryEvent,
    LocationIn,
    MqttSettingsOut,
    OscoreCredential,
    Provisioned,
    ProvisionIn,
    RevokeIn,
    StateChange,
)
from iot_platform.presentation.rest.security import Principal, require

router = APIRouter(prefix="/api/devices", tags=["devices"])

Reader = Annotated[Principal, Depends(require("devices:read"))]
Writer = Annotated[Principal, Depends(require("devices:write"))]

_BASE_EVENT_FIELDS = {"aggregate_id", "occurred_at", "actor", "correlation_id"}


def _location(body: LocationIn | None) -> Location | None:
    return Location(**body.model_dump()) if body is not None else None


def _expected(header: int | None, body: int | None) -> int | None:
    if header is not None and body is not None and header != body:
        raise FieldError("expected_version", "differs from the If-Match header")
    return header if header is not None else body


async def _answer(devices: DeviceServices, result: CommandResult, response: Response) -> DevicePublic:
    view = await devices.registry.get(result.device_id)
    if view is None:
        raise NotFound(f"device {result.device_id!r} is not registered")
    response.headers["ETag"] = f'"{view.version}"'
    return DevicePublic.of(view)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DevicePublic)
async def register_device(
    body: DeviceCreate,
    request: Request,
    response: Response,
    devices: DevicesDep,
    lorawan: LoRaWANDep,
    who: Writer,
) -> DevicePublic | JSONResponse:
    command = RegisterDevice(
        device_id=body.device_id,
        device_type=body.device_type,
        name=body.name,
        protocol=body.protocol,
        tags=body.tags,
        location=_location(body.location),
        metadata=DeviceMetadata.from_dict(body.metadata),
        lorawan=lorawan_profile(body.lorawan),
        context=event_context(request, who),
    )
    if body.lorawan is not None and body.protocol is Protocol.LORAWAN:
        result = await lorawan.registrar.register(command, root_keys(body.lorawan))
    else:
        result = await devices.commands.register(command)
    response.headers["Location"] = f"/api/devices/{result.device_id}"
    view = await devices.registry.get(result.device_id)
    if view is None:  # the read model lags beyond the configured wait; the write stands
        return JSONResponse(
            status_code=status.HTTP_202_ACCEPTED,
            content={"device_id": result.device_id, "version": result.version},
            headers={"Location": response.headers["Location"]},
        )
    response.headers["ETag"] = f'"{view.version}"'
    return DevicePublic.of(view)


def _near(near: str | None, radius_km: float | None) -> Near | None:
    if near is None:
        if radius_km is not None:
            raise FieldError("radius_km", "needs near=lat,lon")
        return None
    try:
        lat_text, lon_text = near.split(",")
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        raise FieldError("near", "must be 'latitude,longitude', e.g. near=37.77,-122.42") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise FieldError("near", "latitude must be within ±90 and longitude within ±180")
    if radius_km is None:
        raise FieldError("radius_km", "is required with near")
    return Near(lat, lon, radius_km)


def _tags(tag: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in tag:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise FieldError("tag", f"{item!r} must be key:value")
        tags[key] = value
    return tags


@router.get("", response_model=DeviceList)
async def search_devices(
    devices: DevicesDep,
    settings: SettingsDep,
    _: Reader,
    device_type: str | None = None,
    status_: Annotated[DeviceStatus | None, Query(alias="status")] = None,
    tag: Annotated[list[str], Query(description="key:value; repeat for several")] = [],  # noqa: B006
    near: Annotated[str | None, Query(description="lat,lon")] = None,
    radius_km: Annotated[float | None, Query(gt=0, le=20_038)] = None,
    active_within: Annotated[float | None, Query(gt=0, le=52_560_000, allow_inf_nan=False,
                                                 description="minutes (at most 100 years)")] = None,
    include_decommissioned: bool = False,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: str | None = None,
) -> DeviceList:
    if limit > settings.api.max_page_size:
        raise FieldError("limit", f"must be at most {settings.api.max_page_size}")
    page = await devices.registry.search(
        DeviceSearch(
            device_type=device_type,
            status=status_,
            tags=_tags(tag),
            near=_near(near, radius_km),
            active_within_minutes=active_within,
            include_decommissioned=include_decommissioned,
            limit=limit,
            cursor=cursor,
        )
    )
    return DeviceList(items=[DevicePublic.of(v) for v in page.items], next_cursor=page.next_cursor)


@router.get("/{device_id}", response_model=DevicePublic)
async def get_device(
    device_id: str, response: Response, devices: DevicesDep, _: Reader
) -> DevicePublic:
    view = await devices.registry.get(device_id)
    if view is None:
        raise NotFound(f"device {device_id!r} is not registered")
    response.headers["ETag"] = f'"{view.version}"'
    return DevicePublic.of(view)


@router.patch("/{device_id}", response_model=DevicePublic)
async def update_device(
    device_id: str,
    body: DeviceUpdate,
    request: Request,
    response: Response,
    devices: DevicesDep,
    who: Writer,
    if_match: IfMatchDep,
) -> DevicePublic:
    given = body.model_fields_set
    result = await devices.commands.update(
        UpdateDevice(
            device_id=device_id,
            name=body.name,
            tags=body.tags,
            location=_location(body.location),
            clear_location="location" in given and body.location is None,
            metadata=DeviceMetadata.from_dict(body.metadata) if body.metadata is not None else None,
            expected_version=_expected(if_match, body.expected_version),
            context=event_context(request, who),
        )
    )
    return await _answer(devices, result, response)


@router.post("/{device_id}/suspend", response_model=DevicePublic)
async def suspend_device(
    device_id: str,
    request: Request,
    response: Response,
    devices: DevicesDep,
    who: Writer,
    if_match: IfMatchDep,
    body: StateChange | None = None,
) -> DevicePublic:
    body = body or StateChange()
    result = await devices.commands.suspend(
        SuspendDevice(
            device_id,
            reason=body.reason,
            expected_version=_expected(if_match, body.expected_version),
            context=event_context(request, who),
        )
    )
    return await _answer(devices, result, response)


@router.post("/{device_id}/resume", response_model=DevicePublic)
async def resume_device(
    device_id: str,
    request: Request,
    response: Response,
    devices: DevicesDep,
    who: Writer,
    if_match: IfMatchDep,
    body: StateChange | None = None,
) -> DevicePublic:
    body = body or StateChange()
    result = await devices.commands.resume(
        ResumeDevice(
            device_id,
            expected_version=_expected(if_match, body.expected_version),
            context=event_context(request, who),
        )
    )
    return await _answer(devices, result, response)


@router.delete("/{device_id}", response_model=DevicePublic)
async def decommission_device(
    device_id: str,
    request: Request,
    response: Response,
    devices: DevicesDep,
    provisioning: ProvisioningDep,
    who: Writer,
    if_match: IfMatchDep,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> DevicePublic:
    """Decommissions the device. Its history and registry entry stay; it accepts nothing more."""
    result = await devices.commands.decommission(
        DecommissionDevice(
            device_id, reason=reason, expected_version=if_match, context=event_context(request, who)
        )
    )
    await provisioning.certificates.decommissioned(device_id)
    return await _answer(devices, result, response)


def _mqtt_settings(settings: Settings, device_id: str) -> MqttSettingsOut:
    mqtt = settings.mqtt
    topics = {"telemetry": f"devices/{device_id}/telemetry", "sensors": f"sensors/{device_id}/{{sensor}}",
              "status": f"devices/{device_id}/status", "commands": f"devices/{device_id}/commands",
              "command_ack": f"devices/{device_id}/commands/ack"}
    return MqttSettingsOut(broker_url=mqtt.broker_url, host=mqtt.host, port=mqtt.port, topics=topics)


@router.put("/{device_id}/provision", response_model=Provisioned)
async def provision_device(
    device_id: str,
    body: ProvisionIn,
    request: Request,
    devices: DevicesDep,
    provisioning: ProvisioningDep,
    pki: PkiDep,
    settings: SettingsDep,
    who: Writer,
) -> Provisioned:
    """Issues the device's credentials, with what it needs to connect, and shows secrets once.
    Provisioning again renews: a new certificate (the old one stays valid for
    ``security.renewal_overlap_hours``), or a new OSCORE context in place of the old."""
    view = await devices.registry.get(device_id)
    if view is None:
        raise NotFound(f"device {device_id!r} is not registered")
    credential = body.credential or ("oscore" if view.protocol == Protocol.COAP.value else "x509")
    if credential == "oscore":
        if view.protocol != Protocol.COAP.value:
            raise FieldError("credential", f"oscore is for CoAP devices; {device_id!r} speaks {view.protocol}")
        if body.csr is not None:
            raise FieldError("csr", "a CSR goes with credential x509")
        material, _ = await provisioning.oscore.provision(device_id, event_context(request, who))
        coap = settings.coap
        return Provisioned(device_id=device_id, status=await _status(devices, device_id), credential_type="oscore",
                           reporting_interval_seconds=settings.telemetry.reporting_interval_seconds,
                           mqtt=_mqtt_settings(settings, device_id),
                           credential_fingerprint=fingerprint(material.master_secret),
                           coap_uri=f"coap://{coap.host}:{coap.port}",
                           oscore=OscoreCredential(**material.device_side()))
    try:
        issued = await provisioning.certificates.provision(device_id, body.csr, event_context(request, who))
    except InvalidCsr as exc:
        raise FieldError("csr", str(exc)) from None
    return await x509_answer(devices, pki, settings, device_id, issued)


async def _status(devices: DeviceServices, device_id: str) -> DeviceStatus:
    """The device's status now: provisioned after a first credential, as it was after a renewal."""
    view = await devices.registry.get(device_id)
    return view.status if view is not None else DeviceStatus.PROVISIONED


async def x509_answer(
    devices: DeviceServices,
    pki: CertificatePublication,
    settings: Settings,
    device_id: str,
    issued: IssuedCertificate,
) -> Provisioned:
    """What a device provisioned with a certificate is told (the key only if made here)."""
    generated = None
    if issued.private_key_pem is not None and issued.pkcs12 is not None and issued.pkcs12_password is not None:
        generated = GeneratedKey(private_key_pem=issued.private_key_pem,
                                 pkcs12_base64=base64.b64encode(issued.pkcs12).decode(),
                                 pkcs12_password=issued.pkcs12_password)
    return Provisioned(device_id=device_id, status=await _status(devices, device_id), credential_type="x509",
                       reporting_interval_seconds=settings.telemetry.reporting_interval_seconds,
                       mqtt=_mqtt_settings(settings, device_id), credential_fingerprint=issued.fingerprint,
                       certificate=CertificateOut(serial=issued.serial, fingerprint=issued.fingerprint,
                                                  not_after=issued.not_after, pem=issued.certificate_pem),
                       ca_chain=pki.chain(), generated_key=generated)


@router.get("/{device_id}/certificates", response_model=CertificateList)
async def list_certificates(device_id: str, provisioning: ProvisioningDep, _: Reader) -> CertificateList:
    return CertificateList(items=[
        CertificatePublic(serial=c.serial, fingerprint=c.fingerprint, not_after=c.not_after, issued_at=c.issued_at,
                          superseded_at=c.superseded_at, revoked_at=c.revoked_at, reason=c.reason)
        for c in await provisioning.issued.for_device(device_id)])


@router.post("/{device_id}/certificates/{serial}/revoke", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_certificate(
    device_id: str, serial: str, body: RevokeIn, request: Request, provisioning: ProvisioningDep, who: Writer
) -> Response:
    """Revokes one certificate; the CRL is regenerated at once."""
    try:
        await provisioning.certificates.revoke(device_id, serial.lower(), body.reason, event_context(request, who))
    except UnknownCertificate as exc:
        raise NotFound(str(exc)) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{device_id}/history", response_model=DeviceHistory)
async def get_device_history(device_id: str, devices: DevicesDep, _: Reader) -> DeviceHistory:
    history = await device_history(devices.events, device_id)
    return DeviceHistory(
        device_id=device_id,
        events=[
            HistoryEvent(
                position=r.position,
                version=r.version,
                # An event this release cannot read is shown as stored, with why (in data).
                event_type=r.event.stored_type if isinstance(r.event, UnreadableEvent) else r.event.event_type(),
                schema_version=(r.event.stored_schema_version if isinstance(r.event, UnreadableEvent)
                                else r.event.schema_version),
                occurred_at=r.event.occurred_at,
                recorded_at=r.recorded_at,
                actor=r.event.actor,
                correlation_id=r.event.correlation_id,
                data={
                    k: v
                    for k, v in devices.encoder.to_jsonable(r.event).items()
                    if k not in _BASE_EVENT_FIELDS
                },
            )
            for r in history
        ],
    )

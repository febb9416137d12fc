"""FastAPI dependencies: one per concern, each a group of the application's ``Services``.

A router names what it needs (``DevicesDep``, ``TelemetryDep``...) and gets use cases and
ports, never an adapter; the app factory puts the ``Services`` and ``Settings`` on
``app.state``, so a test may build the app over fakes.
"""

from __future__ import annotations

from typing import Annotated
from uuid import uuid4

from fastapi import Depends, Header, Request

from iot_platform.application.analytics.queries import FleetAnalytics
from iot_platform.application.devices.certificates import CertificatePublication
from iot_platform.application.realtime import LiveFeed
from iot_platform.application.services import (
    AccessServices,
    AlertServices,
    CommandServices,
    DeviceServices,
    LoRaWANServices,
    ProvisioningServices,
    Readiness,
    Services,
    TelemetryServices,
)
from iot_platform.config import Settings
from iot_platform.domain.aggregate import EventContext
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.security import Principal
from iot_platform.presentation.rest.state import services_of, settings_of


def get_services(request: Request) -> Services:
    return services_of(request.app.state)


def get_settings(request: Request) -> Settings:
    return settings_of(request.app.state)


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_devices(request: Request) -> DeviceServices:
    return services_of(request.app.state).devices


def get_provisioning(request: Request) -> ProvisioningServices:
    return services_of(request.app.state).provisioning


def get_telemetry(request: Request) -> TelemetryServices:
    return services_of(request.app.state).telemetry


def get_alerts(request: Request) -> AlertServices:
    return services_of(request.app.state).alerts


def get_commands(request: Request) -> CommandServices:
    return services_of(request.app.state).commands


def get_access(request: Request) -> AccessServices:
    return services_of(request.app.state).access


def get_pki(request: Request) -> CertificatePublication:
    return services_of(request.app.state).pki


def get_lorawan(request: Request) -> LoRaWANServices:
    return services_of(request.app.state).lorawan


def get_analytics(request: Request) -> FleetAnalytics:
    return services_of(request.app.state).analytics


def get_feed(request: Request) -> LiveFeed:
    return services_of(request.app.state).feed


def get_readiness(request: Request) -> Readiness:
    return services_of(request.app.state).readiness


DevicesDep = Annotated[DeviceServices, Depends(get_devices)]
ProvisioningDep = Annotated[ProvisioningServices, Depends(get_provisioning)]
TelemetryDep = Annotated[TelemetryServices, Depends(get_telemetry)]
AlertsDep = Annotated[AlertServices, Depends(get_alerts)]
CommandsDep = Annotated[CommandServices, Depends(get_commands)]
AccessDep = Annotated[AccessServices, Depends(get_access)]
PkiDep = Annotated[CertificatePublication, Depends(get_pki)]
LoRaWANDep = Annotated[LoRaWANServices, Depends(get_lorawan)]
AnalyticsDep = Annotated[FleetAnalytics, Depends(get_analytics)]
FeedDep = Annotated[LiveFeed, Depends(get_feed)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]


def event_context(request: Request, principal: Principal) -> EventContext:
    correlation = getattr(request.state, "correlation_id", None) or uuid4().hex
    return EventContext(actor=principal.subject, correlation_id=correlation)


def parse_if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    """``If-Match: "3"`` (the ETag of a GET) -> expected version 3."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise FieldError("If-Match", "must be an ETag returned by this API, like \"3\"")
    return int(tag)


IfMatchDep = Annotated[int | None, Depends(parse_if_match)]

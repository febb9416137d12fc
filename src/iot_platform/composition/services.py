"""What presentation may reach of a built platform: use cases and ports, never adapters.

The REST app and any later front end (the console, GraphQL) take this object, so they can be
given the same use cases over other adapters without knowing how they were built.
"""

from __future__ import annotations

from prometheus_client import make_asgi_app

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
from iot_platform.composition.platform import Platform


def services_from(platform: Platform) -> Services:
    telemetry, alerting, commands, lorawan = (
        platform.telemetry, platform.alerting, platform.commands, platform.lorawan
    )
    return Services(
        devices=DeviceServices(commands=platform.devices, registry=platform.registry,
                               events=platform.store, encoder=platform.serializer),
        provisioning=ProvisioningServices(oscore=platform.oscore, certificates=platform.certificates,
                                          issued=platform.pki_store, claims=platform.claims,
                                          claim_records=platform.claim_store),
        telemetry=TelemetryServices(ingest=telemetry.ingest, queries=telemetry.queries,
                                    latest=telemetry.state),
        alerts=AlertServices(rules=alerting.rules, alerts=alerting.alerts, views=alerting.read_model),
        commands=CommandServices(handler=commands.handler, delivery=commands.delivery,
                                 status=commands.status, views=commands.queries),
        access=AccessServices(service=platform.access, keys=platform.access_keys),
        pki=platform.pki,
        lorawan=LoRaWANServices(registrar=lorawan.registrar, sessions=lorawan.sessions,
                                gateways=lorawan.gateways, forget_gateway=lorawan.forget_gateway),
        analytics=platform.analytics,
        feed=platform.feed,
        readiness=Readiness(probes={"eventstore": platform.store.check, "timeseries": telemetry.store.check},
                            projections=platform.projections, mqtt=telemetry.mqtt),
        metrics=platform.metrics,
        metrics_endpoint=make_asgi_app(platform.metrics.registry),
    )

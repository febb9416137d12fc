"""The FastAPI application: routers under /api, one error shape, correlation ids, metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from uuid import uuid4

from fastapi import FastAPI, Request, Response

from iot_platform.composition import Platform, build_platform, services_from
from iot_platform.config import WORKER_ROLES, Settings
from iot_platform.presentation.rest.errors import install_error_handlers
from iot_platform.presentation.rest.routers import (
    access,
    alerts,
    analytics,
    commands,
    devices,
    lorawan,
    ops,
    pki,
    provisioning,
    realtime,
    telemetry,
)
from iot_platform.presentation.rest.security import ProtectedMetrics


def create_app(
    settings: Settings, platform: Platform | None = None, roles: Collection[str] = WORKER_ROLES
) -> FastAPI:
    """``platform`` may be passed by tests that built their own; otherwise built here.
    ``roles``: which workers this process also runs (``serve --workers``).

    The routers see only ``app.state.services`` (use cases and ports) and ``app.state.settings``;
    the platform itself stays here, for its start and stop."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await built.start(roles=roles)
        try:
            yield
        finally:
            await built.stop()

    built = platform or build_platform(settings)

    app = FastAPI(
        title="iot-platform",
        version="0.1.0",
        summary="Device registry, telemetry, rules, commands and OTA firmware for IoT fleets.",
        lifespan=lifespan,
    )
    app.state.platform = built  # for whoever starts and stops it by hand (tests); no router reads it
    services = services_from(built)
    app.state.services = services
    app.state.settings = built.settings
    install_error_handlers(app)
    for prefix in ("/api", ""):
        app.include_router(ops.router, prefix=prefix, include_in_schema=prefix == "/api")
    app.include_router(devices.router)
    app.include_router(telemetry.router)
    app.include_router(alerts.rules)
    app.include_router(alerts.alerts)
    app.include_router(realtime.router)
    app.include_router(analytics.router)
    app.include_router(commands.router)
    app.include_router(lorawan.router)
    app.include_router(access.router)
    app.include_router(pki.router)
    app.include_router(provisioning.router)

    metrics = services.metrics
    app.mount("/metrics", ProtectedMetrics(services.metrics_endpoint, app.state))
    app.mount("/api/metrics", ProtectedMetrics(services.metrics_endpoint, app.state))

    @app.middleware("http")
    async def correlate_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.correlation_id = request.headers.get("X-Correlation-ID") or uuid4().hex
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.http_requests.labels(request.method, path, str(response.status_code)).inc()
        metrics.http_latency.labels(request.method, path).observe(time.perf_counter() - started)
        response.headers["X-Correlation-ID"] = request.state.correlation_id
        return response

    return app

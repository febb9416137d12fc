"""Liveness and readiness. Unauthenticated on purpose: orchestrators probe them."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from iot_platform.presentation.rest.dependencies import PlatformDep

router = APIRouter(tags=["ops"])
log = logging.getLogger(__name__)


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(platform: PlatformDep) -> JSONResponse:
    """Ready to take traffic: the event store answers."""
    checks: dict[str, str] = {}
    try:
        await platform.store.check()
        checks["eventstore"] = "ok"
    except Exception as exc:  # the probe reports any failure rather than raising it
        log.warning("readiness: event store unreachable: %s", type(exc).__name__)
        checks["eventstore"] = f"unavailable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=200 if ok else 503,
        content={"status": "ready" if ok else "not_ready", "checks": checks},
    )

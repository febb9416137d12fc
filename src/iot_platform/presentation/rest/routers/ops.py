"""Liveness and readiness. Unauthenticated on purpose: orchestrators probe them."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from iot_platform.presentation.rest.deps import ReadinessDep

router = APIRouter(tags=["ops"])
log = logging.getLogger(__name__)


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(readiness: ReadinessDep) -> JSONResponse:
    """Ready to take traffic: the event store and the time-series store answer, no projection
    is stalled on an event it cannot apply (``projection:NAME`` names it and why), and MQTT
    ingestion (when enabled) is subscribed and not stalled (messages waiting, none handled for
    ``mqtt.stall_seconds``)."""
    checks: dict[str, str] = {}
    for name, probe in readiness.probes.items():
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:  # the probe reports any failure rather than raising it
            log.warning("readiness: %s unreachable: %s", name, type(exc).__name__)
            checks[name] = f"unavailable: {type(exc).__name__}"
    try:
        for stall in await readiness.projections.stalled():
            checks[f"projection:{stall.projection}"] = (
                f"stalled at position {stall.position} ({stall.event_type}): {stall.error[:200]}"
            )
    except Exception as exc:  # the event store check above already reports an unreachable database
        log.warning("readiness: projection failures unreadable: %s", type(exc).__name__)
    if readiness.mqtt is not None:
        checks["mqtt"] = readiness.mqtt.health()
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=200 if ok else 503,
        content={"status": "ready" if ok else "not_ready", "checks": checks},
    )

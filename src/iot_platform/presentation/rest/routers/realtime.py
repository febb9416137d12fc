"""Live readings of one device over SSE, and one WebSocket carrying readings and alerts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, WebSocket, WebSocketDisconnect, status
from sse_starlette import EventSourceResponse

from iot_platform.application.errors import NotFound
from iot_platform.application.realtime import AlertFilter, Subscription
from iot_platform.domain.alerts import Severity
from iot_platform.presentation.rest.deps import DevicesDep, FeedDep
from iot_platform.presentation.rest.routers.alerts import sse
from iot_platform.presentation.rest.security import Principal, require, websocket_principal
from iot_platform.presentation.rest.state import services_of

router = APIRouter(tags=["real time"])

Reader = Annotated[Principal, Depends(require("telemetry:read"))]


@router.get(
    "/api/devices/{device_id}/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "readings"}},
)
async def stream_device(
    device_id: str,
    request: Request,
    devices: DevicesDep,
    feed: FeedDep,
    _: Reader,
    metric: Annotated[list[str], Query(description="only these metrics; repeat for several")] = [],  # noqa: B006
) -> EventSourceResponse:
    """This device's readings from now on, as `event: reading` messages (metrics, timestamp_ns).

    A client that falls behind by more than `analytics.stream_buffer` readings is dropped.
    """
    if await devices.registry.get(device_id) is None:
        raise NotFound(f"device {device_id!r} is not registered")
    subscription = feed.subscribe(devices=[device_id], metrics=metric)
    return EventSourceResponse(sse(feed, subscription, request), ping=15)


def _csv(values: list[str]) -> list[str]:
    return [v for item in values for v in item.split(",") if v]


@router.websocket("/api/ws")
async def live_socket(
    websocket: WebSocket,
    alerts: bool = False,
    severity: Annotated[list[Severity], Query()] = [],  # noqa: B006
    rule_id: str | None = None,
    alert_device_id: str | None = None,
    device: Annotated[list[str], Query(description="device ids; repeat or comma-separate")] = [],  # noqa: B006
    metric: Annotated[list[str], Query()] = [],  # noqa: B006
) -> None:
    """Messages `{"type": "reading"|"alert", "data": {...}}`.

    `?alerts=true` (filters: severity, rule_id, alert_device_id) and/or `?device=a,b` (readings
    of those devices; `metric=` narrows them). A client that falls behind is sent
    `{"type": "dropped"}` and closed with code 1013 (try again later).
    """
    principal = await websocket_principal(websocket)
    if principal is None:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="credentials required")
        return
    wanted_alerts = alerts and principal.may("alerts:read")
    devices = _csv(device) if principal.may("telemetry:read") else []
    if (alerts and not wanted_alerts) or (device and not devices):
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
        return
    await websocket.accept()
    feed = services_of(websocket.app.state).feed
    subscription = feed.subscribe(
        alerts=AlertFilter(frozenset(s.value for s in severity), alert_device_id, rule_id)
        if wanted_alerts else None,
        devices=devices,
        metrics=_csv(metric),
    )
    listener = asyncio.create_task(_until_closed(websocket))
    try:
        await _forward(websocket, subscription, listener)
    finally:
        feed.unsubscribe(subscription)
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await listener


async def _forward(websocket: WebSocket, subscription: Subscription, listener: asyncio.Task[None]) -> None:
    while True:
        getter = asyncio.ensure_future(subscription.next())
        done, _ = await asyncio.wait({getter, listener}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            return  # the client left
        message = getter.result()
        if message is None:
            await websocket.send_text(json.dumps({"type": "dropped"}))
            await websocket.close(code=status.WS_1013_TRY_AGAIN_LATER)
            return
        kind, payload = message
        await websocket.send_text(json.dumps({"type": kind, "data": payload}))


async def _until_closed(websocket: WebSocket) -> None:
    """Reads (and ignores) client messages; returns when the client disconnects."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await websocket.receive_text()

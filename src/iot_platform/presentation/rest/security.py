"""Who is calling, and may they? Every route declares the permission it needs (``require``);
``ROUTE_PUBLIC`` lists the few that need none.

Credentials travel as ``Authorization: Bearer <API key or token>``: an API key
(``iotk_...``) or a JWT from ``POST /api/auth/token``. No credentials: 401. Credentials without
the permission: 403. A device credential is confined to its own device (``confine``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from iot_platform.application.access.model import ROLE_PERMISSIONS, Principal
from iot_platform.application.limits import Throttled
from iot_platform.presentation.rest.errors import error_body
from iot_platform.presentation.rest.state import services_of

__all__ = ["ROLE_PERMISSIONS", "Principal", "confine", "current_principal", "require"]

ROUTE_PUBLIC = frozenset({"/health", "/ready", "/api/health", "/api/ready", "/api/auth/token",
                          "/api/pki/ca", "/api/pki/crl", "/api/provisioning/claim"})
"""Probed by orchestrators, how a person gets a token in the first place, or the CA's public
chain and CRL (fetched by devices and brokers that hold no API credential), and a claim's
exchange (authenticated by the claim's own token, not an API credential)."""

_bearer = HTTPBearer(auto_error=False, description="An API key (iotk_...) or a token from /api/auth/token")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _bearer_credential(header: str) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header (for callers outside FastAPI's
    dependencies: the WebSocket handshake and the mounted /metrics app)."""
    return (header[7:].strip() or None) if header.lower().startswith("bearer ") else None


def too_many(refused: Throttled) -> HTTPException:
    """429 with the whole seconds until the caller may try again."""
    return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(refused),
                         {"Retry-After": str(max(1, math.ceil(refused.retry_after)))})


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _authenticate(app_state: Any, credential: str | None, client: str) -> Principal:
    if not credential:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                            "credentials required: Authorization: Bearer <API key or token>", _CHALLENGE)
    try:
        access = services_of(app_state).access.service
        principal: Principal | None = await access.authenticate(credential, client)
    except Throttled as refused:
        raise too_many(refused) from None
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid, expired or revoked credentials",
                            _CHALLENGE)
    return principal


async def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    return await _authenticate(request.app.state, credentials.credentials if credentials else None,
                               client_address(request.scope))


async def websocket_principal(websocket: WebSocket) -> Principal | None:
    """The WebSocket handshake's caller, from its Authorization header (never from the query
    string, which access logs record). None: refuse the socket."""
    credential = _bearer_credential(websocket.headers.get("authorization", ""))
    try:
        return await _authenticate(websocket.app.state, credential, client_address(websocket.scope))
    except HTTPException:
        return None


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(permission: str) -> Callable[[Principal, Request], Awaitable[Principal]]:
    """The route's permission; and a device's credential, on a route of one device
    (``{device_id}`` in its path), must be that device's (before the body is even read, so
    another device's route answers 403 whatever is sent to it)."""

    async def check(principal: PrincipalDep, request: Request) -> Principal:
        if not principal.may(permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{permission} is not granted")
        device_id = request.path_params.get("device_id")
        if isinstance(device_id, str):
            confine(principal, device_id)
        return principal

    check.permission = permission  # type: ignore[attr-defined]  # read by the route-role matrix
    return check


def confine(principal: Principal, device_id: str) -> None:
    """A device's own credential acts for that device only."""
    if not principal.may_act_for(device_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"this credential is for device {principal.device_id!r}, not {device_id!r}")


class ProtectedMetrics:
    """/metrics behind a bearer credential with ``metrics:read`` (Prometheus sends one with
    ``authorization: {credentials: <API key>}``)."""

    def __init__(self, inner: ASGIApp, app_state: Any) -> None:
        self._inner = inner
        self._state = app_state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            credential = _bearer_credential(dict(scope["headers"]).get(b"authorization", b"").decode())
            try:
                principal = await _authenticate(self._state, credential, client_address(scope))
                if not principal.may("metrics:read"):
                    raise HTTPException(status.HTTP_403_FORBIDDEN, "metrics:read is not granted")
            except HTTPException as refused:
                await _refuse(send, refused)
                return
        await self._inner(scope, receive, send)


async def _refuse(send: Send, refused: HTTPException) -> None:
    code = {401: "unauthorized", 429: "too_many_requests"}.get(refused.status_code, "forbidden")
    body = json.dumps(error_body(code, refused.detail)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (refused.headers or {}).items()]
    await send({"type": "http.response.start", "status": refused.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})

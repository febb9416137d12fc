"""Who is calling, and may they? Every route declares the permission it needs.

Until API keys and tokens arrive (the security issue), every caller is the local operator: the
API listens on loopback by default. Replacing ``current_principal`` is the whole change needed
to authenticate; the routes already ask ``require(...)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket, status

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"*"}),
    "fleet_manager": frozenset(
        {"devices:read", "devices:write", "telemetry:read", "telemetry:write",
         "alerts:read", "alerts:write", "analytics:read", "commands:read", "commands:write"}
    ),
    "viewer": frozenset(
        {"devices:read", "telemetry:read", "alerts:read", "analytics:read", "commands:read"}
    ),
}


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]

    def may(self, permission: str) -> bool:
        granted = set().union(*(ROLE_PERMISSIONS.get(r, frozenset()) for r in self.roles))
        return "*" in granted or permission in granted


async def current_principal(request: Request) -> Principal:
    return Principal(subject="local-operator", roles=frozenset({"admin"}))


async def websocket_principal(websocket: WebSocket) -> Principal:
    """The WebSocket handshake's caller (the same rules as ``current_principal``)."""
    return Principal(subject="local-operator", roles=frozenset({"admin"}))


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(permission: str) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if not principal.may(permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{permission} is not granted")
        return principal

    return check

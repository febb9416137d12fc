"""Every REST route against every kind of credential, in process (ASGI, no sockets).

The expected permission of each route is the table of ``tests/api/test_access.py`` (which
drives the API-key roles); this matrix extends it to every credential the
platform knows: none, an API key and a user's bearer token for each role, a device's own
credentials bound to ``d1`` (its API key, and the token a device-role user bound to ``d1``
carries), and a claim's enrollment token. Routes are enumerated from ``app.routes``, so a
route added without an entry in the table fails here.

Expected, per cell: no credential on a protected route, or a credential that is not an API
credential (a claim token), 401; a credential whose roles lack the permission, 403; a device
credential on another device's route, 403; otherwise anything but 401, 403 and 5xx.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import Mount, WebSocketRoute

from iot_platform.application.access.model import ROLE_PERMISSIONS, Principal
from iot_platform.composition import Platform
from tests.api.conftest import app_in, status_of
from tests.api.test_access import CLAIM_TOKEN, GRANTS, ROUTES, allowed
from tests.e2e.platform_process import ADMIN_KEY

EXTRA_ROUTES: dict[tuple[str, str], str | None] = {
    ("GET", "/health"): None,
    ("GET", "/ready"): None,
    ("GET", "/metrics/"): "metrics:read",
    ("GET", "/api/metrics/"): "metrics:read",
}
"""Served but not in the OpenAPI document: the probes at the root, and the metrics mounts."""
MATRIX = {**ROUTES, **EXTRA_ROUTES}
DEVICE_SCOPED = {"telemetry:write", "commands:receive"}
"""What a device credential may do, and only on its own device's routes."""


@pytest_asyncio.fixture
async def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FastAPI]:
    """The app on embedded defaults in a temp dir, started on this test's loop. The budget of
    refused credentials per client is lifted: every request here comes from one address, and
    this test is about who may do what, not how often."""
    built = app_in(tmp_path, monkeypatch, rate_limits={
        "credential_failures_per_client": {"burst": 1_000_000, "per_second": 1000}})
    platform: Platform = built.state.platform
    await platform.start()
    try:
        yield built
    finally:
        await platform.stop()


def concrete(path: str, device: str) -> str:
    path = path.replace("{device_id}", device).replace("{gateway_eui}", "aa555a0000000000")
    return re.sub(r"\{[a-z_]+\}", "x", path)


def enumerated(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves (FastAPI's own /openapi.json and docs
    aside), included routers flattened; a mount counts as its GET."""
    routes: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path:
            routes |= {(method, context.path) for method in (context.methods or set()) - {"HEAD"}}
        elif isinstance(route, Mount):
            routes.add(("GET", f"{route.path}/"))
        elif isinstance(route, WebSocketRoute):
            routes.add(("WEBSOCKET", route.path))
    return routes


async def credentials(app: FastAPI) -> dict[str, tuple[str, frozenset[str], str | None]]:
    """Credential kind -> (bearer credential, its roles, the device it is bound to)."""
    made: dict[str, tuple[str, frozenset[str], str | None]] = {}
    transport = httpx.ASGITransport(app=app)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver/api", headers=admin) as api:
        for device in ("d1", "d2"):
            assert (await api.post("/devices", json={"device_id": device, "device_type": "th"})).status_code == 201
        for role in GRANTS:
            body: dict[str, Any] = {"name": f"{role}-key", "roles": [role]}
            if role == "device":
                body["device_id"] = "d1"
            key = await api.post("/auth/apikeys", json=body)
            assert key.status_code == 201, key.text
            made[f"api key: {role}"] = (key.json()["api_key"], frozenset({role}), body.get("device_id"))
            if role == "device":
                continue
            password = f"{role} password 123"
            assert (await api.post("/auth/users", json={"username": role, "password": password,
                                                        "roles": [role]})).status_code == 201
            token = await api.post("/auth/token", data={"username": role, "password": password})
            assert token.status_code == 200, token.text
            made[f"user token: {role}"] = (token.json()["access_token"], frozenset({role}), None)
        claim = await api.post("/provisioning/claims", json={"name": "batch", "device_type": "th", "uses": 5,
                                                              "valid_hours": 1})
        assert claim.status_code == 201, claim.text
        made["claim token"] = (claim.json()["token"], frozenset(), None)
    # What a device-role user bound to d1 is given at login: a token naming its device.
    platform: Platform = app.state.platform
    device_principal = Principal("user:sensor-d1", frozenset({"device"}), "d1")
    made["device token: d1"] = (platform.access._signer.issue(device_principal, 600), frozenset({"device"}), "d1")
    return made


def expected(kind: str, roles: frozenset[str], bound: str | None, permission: str | None, device: str,
             path: str) -> str:
    """401, 403, or 'ok' (anything but 401, 403 and 5xx)."""
    if kind == "claim token":
        return "ok" if permission in (None, CLAIM_TOKEN) else "401"
    if permission is None:
        return "ok"
    if permission == CLAIM_TOKEN:
        return "401"  # an API credential is not a claim's token
    if not all(role in ROLE_PERMISSIONS for role in roles):
        return "403"
    role = next(iter(roles))
    if permission == "metrics:read":  # not in the e2e table: every role that reads the fleet has it
        return "ok" if role != "device" else "403"
    if not allowed(role, permission):
        return "403"
    if bound is not None and "{device_id}" in path and device != bound:
        return "403"
    return "ok"


def verdict(status: int) -> str:
    return "5xx" if status >= 500 else str(status) if status in (401, 403) else "ok"


@pytest.mark.asyncio
async def test_the_matrix_covers_every_route_the_app_serves(app: FastAPI) -> None:
    served = enumerated(app) - {("WEBSOCKET", "/api/ws")}  # not a REST route
    assert served == set(MATRIX), (f"routes without a row: {served - set(MATRIX)}; "
                                   f"rows without a route: {set(MATRIX) - served}")


@pytest.mark.asyncio
async def test_every_route_answers_every_credential_as_the_matrix_says(app: FastAPI) -> None:
    made = await credentials(app)
    wrong: list[str] = []
    for (method, path), permission in sorted(MATRIX.items()):
        # Given no credential
        anonymous = verdict(await status_of(app, method, concrete(path, "d1"), None))
        if anonymous != ("ok" if permission is None else "401"):
            wrong.append(f"{method} {path} without credentials: {anonymous}")
        # Given each credential, on d1's routes and (for device credentials) d2's
        for kind, (credential, roles, bound) in made.items():
            for device in (("d1", "d2") if bound and "{device_id}" in path else ("d1",)):
                got = verdict(await status_of(app, method, concrete(path, device), credential))
                want = expected(kind, roles, bound, permission, device, path)
                if got != want:
                    wrong.append(f"{method} {concrete(path, device)} with {kind}: {got}, expected {want}")
    assert not wrong, "\n".join(wrong)


def test_the_device_role_may_do_only_device_scoped_things() -> None:
    """The matrix's device rows rest on this: a device credential holds only permissions that
    are confined to its own device (or that every caller has)."""
    assert ROLE_PERMISSIONS["device"] - {"self:read"} == DEVICE_SCOPED
    assert set(GRANTS["device"] or ()) == DEVICE_SCOPED | {"self:read"}

"""REST authentication and roles, in process: API keys, bearer tokens, revocation, expiry,
device-scoped keys, and a role matrix over every route of the OpenAPI document.

The tables below are the specification: a route the API grows without an entry here fails
the matrix, and so does a route that answers without credentials.
"""

from __future__ import annotations

import re
import time

import httpx

from tests.api.conftest import InProcessPlatform
from tests.api.conftest import status_of as answer_status
from tests.e2e.test_telemetry import register

READ = {"devices:read", "telemetry:read", "alerts:read", "analytics:read", "commands:read", "self:read"}
GRANTS: dict[str, set[str] | None] = {
    "admin": None,  # everything
    "fleet_manager": READ | {"devices:write", "telemetry:write", "alerts:write", "commands:write", "commands:receive"},
    "firmware_engineer": READ | {"firmware:write"},
    "viewer": READ,
    "device": {"telemetry:write", "commands:receive", "self:read"},
}
PUBLIC = None
ROUTES: dict[tuple[str, str], str | None] = {
    ("GET", "/api/health"): PUBLIC,
    ("GET", "/api/ready"): PUBLIC,
    ("POST", "/api/auth/token"): PUBLIC,
    ("GET", "/api/auth/me"): "self:read",
    ("GET", "/api/auth/apikeys"): "access:read",
    ("POST", "/api/auth/apikeys"): "access:write",
    ("DELETE", "/api/auth/apikeys/{key_id}"): "access:write",
    ("POST", "/api/auth/users"): "access:write",
    ("GET", "/api/devices"): "devices:read",
    ("POST", "/api/devices"): "devices:write",
    ("GET", "/api/devices/{device_id}"): "devices:read",
    ("PATCH", "/api/devices/{device_id}"): "devices:write",
    ("DELETE", "/api/devices/{device_id}"): "devices:write",
    ("POST", "/api/devices/{device_id}/suspend"): "devices:write",
    ("POST", "/api/devices/{device_id}/resume"): "devices:write",
    ("GET", "/api/devices/{device_id}/history"): "devices:read",
    ("PUT", "/api/devices/{device_id}/provision"): "devices:write",
    ("GET", "/api/devices/{device_id}/stream"): "telemetry:read",
    ("GET", "/api/devices/{device_id}/data"): "telemetry:read",
    ("GET", "/api/devices/{device_id}/data/latest"): "telemetry:read",
    ("POST", "/api/telemetry"): "telemetry:write",
    ("POST", "/api/telemetry/batch"): "telemetry:write",
    ("GET", "/api/telemetry/search"): "telemetry:read",
    ("GET", "/api/analytics/aggregated"): "telemetry:read",
    ("GET", "/api/analytics/anomalies"): "analytics:read",
    ("GET", "/api/analytics/devices/{device_id}/anomalies"): "analytics:read",
    ("GET", "/api/analytics/fleet"): "analytics:read",
    ("GET", "/api/fleet/overview"): "analytics:read",
    ("GET", "/api/analytics/rules"): "alerts:read",
    ("POST", "/api/analytics/rules"): "alerts:write",
    ("GET", "/api/analytics/rules/{rule_id}"): "alerts:read",
    ("PATCH", "/api/analytics/rules/{rule_id}"): "alerts:write",
    ("DELETE", "/api/analytics/rules/{rule_id}"): "alerts:write",
    ("GET", "/api/alerts"): "alerts:read",
    ("GET", "/api/alerts/stream"): "alerts:read",
    ("GET", "/api/alerts/{alert_id}"): "alerts:read",
    ("POST", "/api/alerts/{alert_id}/acknowledge"): "alerts:write",
    ("POST", "/api/alerts/{alert_id}/resolve"): "alerts:write",
    ("GET", "/api/devices/{device_id}/commands"): "commands:read",
    ("POST", "/api/devices/{device_id}/commands"): "commands:write",
    ("GET", "/api/devices/{device_id}/commands/pending"): "commands:receive",
    ("GET", "/api/devices/{device_id}/commands/{command_id}"): "commands:read",
    ("POST", "/api/devices/{device_id}/commands/{command_id}/ack"): "commands:receive",
    ("GET", "/api/lorawan/gateways"): "devices:read",
    ("POST", "/api/lorawan/gateways"): "devices:write",
    ("GET", "/api/lorawan/gateways/{gateway_eui}"): "devices:read",
    ("DELETE", "/api/lorawan/gateways/{gateway_eui}"): "devices:write",
    ("GET", "/api/lorawan/devices/{device_id}"): "devices:read",
    ("GET", "/api/devices/{device_id}/certificates"): "devices:read",
    ("POST", "/api/devices/{device_id}/certificates/{serial}/revoke"): "devices:write",
    ("GET", "/api/pki/ca"): PUBLIC,
    ("GET", "/api/pki/crl"): PUBLIC,
    ("GET", "/api/provisioning/claims"): "devices:read",
    ("POST", "/api/provisioning/claims"): "devices:write",
    ("DELETE", "/api/provisioning/claims/{claim_id}"): "devices:write",
    ("POST", "/api/provisioning/claim"): "claim-token",
}
ROLE_OF = {"device token": "device"}
"""Credentials of the matrix that are not API keys, and the role whose rights they have."""
CLAIM_TOKEN = "claim-token"
"""Authenticated by a claim's enrollment token, which no API credential is: 401 for all."""


def allowed(role: str, permission: str | None) -> bool:
    grants = GRANTS[role]
    return permission is None or grants is None or permission in grants


def new_key(api: httpx.Client, role: str, **extra: object) -> str:
    created = api.post("/auth/apikeys", json={"name": f"{role}-key", "roles": [role], **extra})
    assert created.status_code == 201, created.text
    return str(created.json()["api_key"])


def client(platform: InProcessPlatform, credential: str) -> httpx.Client:
    return platform.client({"Authorization": f"Bearer {credential}"}, "/api")


def status_of(platform: InProcessPlatform, method: str, path: str, key: str | None) -> int:
    """The status a route answers; streams are left as soon as their status is known."""
    path = path.replace("{device_id}", "dev-1").replace("{gateway_eui}", "aa555a0000000000")
    return platform.portal.call(answer_status, platform.app, method, re.sub(r"\{[a-z_]+\}", "x", path), key)


def token_of(platform: InProcessPlatform, username: str, password: str) -> str:
    with platform.client() as web:
        answer = web.post("/api/auth/token", data={"username": username, "password": password})
    return str(answer.json()["access_token"])


def test_every_route_answers_each_role_exactly_as_the_matrix_says(platform: InProcessPlatform, api: httpx.Client) -> None:
    with platform.client() as web:
        documented = web.get("/openapi.json").json()["paths"]
    found = {(method.upper(), path) for path, item in documented.items() for method in item}
    assert found == set(ROUTES), f"routes without a role in the matrix: {found - set(ROUTES)}; gone: {set(ROUTES) - found}"
    register(api, "dev-1")
    keys = {role: new_key(api, role, **({"device_id": "dev-1"} if role == "device" else {})) for role in GRANTS}
    # A device user's token has exactly the device key's rights; a claim token opens only its
    # own route (where {} is then a 422).
    api.post("/auth/users", json={"username": "dev-1", "password": "correct horse battery", "roles": ["device"],
                                  "device_id": "dev-1"}).raise_for_status()
    keys["device token"] = token_of(platform, "dev-1", "correct horse battery")
    claim = api.post("/provisioning/claims", json={"name": "m", "device_type": "t", "uses": 1, "valid_hours": 1})
    wrong: list[str] = []
    for (method, path), permission in sorted(ROUTES.items()):
        anonymous = status_of(platform, method, path, None)
        if (anonymous == 401) == (permission is None):
            wrong.append(f"{method} {path} without credentials: {anonymous}")
        by_claim = status_of(platform, method, path, claim.json()["token"])
        if (by_claim in (401, 403)) != (permission not in (None, CLAIM_TOKEN)):
            wrong.append(f"{method} {path} with a claim token: {by_claim}")
        for name, key in keys.items():
            role = ROLE_OF.get(name, name)
            got = status_of(platform, method, path, key)
            if permission == CLAIM_TOKEN:
                if got != 401:
                    wrong.append(f"{method} {path} as {name}: {got}, not 401")
            elif allowed(role, permission) == (got in (401, 403)):
                wrong.append(f"{method} {path} as {name}: {got}")
    assert not wrong, "\n".join(wrong)


def test_metrics_need_a_key_with_metrics_read(web: httpx.Client, api: httpx.Client) -> None:
    assert web.get("/metrics/").status_code == 401
    assert web.get("/metrics/", headers={"Authorization": f"Bearer {new_key(api, 'device', device_id='d')}"}).status_code == 403
    assert web.get("/metrics/", headers={"Authorization": f"Bearer {new_key(api, 'viewer')}"}).status_code == 200


def test_keys_are_shown_once_revocable_and_expire(
    platform: InProcessPlatform, api: httpx.Client, web: httpx.Client
) -> None:
    missing = web.get("/api/devices")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert web.get("/api/devices", headers={"Authorization": "Bearer iotk_nope_nope"}).status_code == 401
    created = api.post("/auth/apikeys", json={"name": "grafana", "roles": ["viewer"]}).json()
    with client(platform, created["api_key"]) as viewer:
        assert viewer.get("/devices").status_code == 200
        forbidden = viewer.post("/devices", json={"device_id": "x", "device_type": "t"})
        assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
        listed = api.get("/auth/apikeys").json()["items"]
        assert created["key_id"] in {k["key_id"] for k in listed}
        assert not any(created["api_key"] in str(k) for k in listed)  # never shown again
        assert api.delete(f"/auth/apikeys/{created['key_id']}").status_code == 204
        assert viewer.get("/devices").status_code == 401
    brief = new_key(api, "viewer", expires_in_days=1 / 86400)  # one second
    time.sleep(1.5)
    assert web.get("/api/devices", headers={"Authorization": f"Bearer {brief}"}).status_code == 401
    assert api.post("/auth/apikeys", json={"name": "d", "roles": ["device"]}).status_code == 422
    assert api.post("/auth/apikeys", json={"name": "d", "roles": ["wizard"]}).status_code == 422


def test_a_device_key_writes_only_its_own_telemetry_and_takes_only_its_own_commands(
    platform: InProcessPlatform, api: httpx.Client
) -> None:
    register(api, "dev-1")
    register(api, "dev-2")
    reading = {"timestamp": "2026-01-01T00:00:00Z", "metrics": {"t": 1.0}}
    with client(platform, new_key(api, "device", device_id="dev-1")) as device:
        assert device.post("/telemetry", json={"device_id": "dev-1", **reading}).status_code == 201
        assert device.post("/telemetry", json={"device_id": "dev-2", **reading}).status_code == 403
        batch = device.post("/telemetry/batch", json=[{"device_id": "dev-2", "message_id": "m", **reading}]).json()
        assert batch[0]["status"] == "rejected" and batch[0]["reason"] == "identity_mismatch"
        assert device.get("/devices/dev-1/commands/pending").status_code == 200
        assert device.get("/devices/dev-2/commands/pending").status_code == 403
        assert device.get("/devices/dev-1").status_code == 403  # a device reads nothing of the fleet

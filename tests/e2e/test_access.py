"""REST authentication end to end, where a process or a real client is the point: bearer tokens
fetched with curl, device users made with the CLI, the admin key printed at first start.

The role matrix and the key answers are in tests/api/test_access.py, in process.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform_process import BIN, RunningPlatform, platform_env, running_platform
from tests.e2e.test_telemetry import register

pytestmark = pytest.mark.e2e


def client(platform: RunningPlatform, credential: str) -> httpx.Client:
    return httpx.Client(base_url=f"{platform.base_url}/api", headers={"Authorization": f"Bearer {credential}"})


def test_a_user_gets_a_bearer_token_with_curl_and_the_events_name_them(platform: RunningPlatform, api: httpx.Client) -> None:
    assert api.post("/auth/users", json={"username": "alice", "password": "correct horse battery", "roles": ["fleet_manager"]}).status_code == 201
    assert api.post("/auth/users", json={"username": "alice", "password": "correct horse battery", "roles": ["viewer"]}).status_code == 409
    done = subprocess.run(["curl", "-s", "-d", "username=alice", "-d", "password=correct horse battery",
                           f"{platform.base_url}/api/auth/token"], capture_output=True, text=True, check=True, timeout=30)
    token = httpx.Response(200, content=done.stdout).json()["access_token"]
    with client(platform, token) as alice:
        assert alice.get("/auth/me").json() == {"subject": "user:alice", "roles": ["fleet_manager"], "device_id": None}
        assert alice.post("/devices", json={"device_id": "by-alice", "device_type": "t"}).status_code == 201
        assert api.get("/devices/by-alice/history").json()["events"][0]["actor"] == "user:alice"
        assert alice.post("/auth/apikeys", json={"name": "x", "roles": ["admin"]}).status_code == 403
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        assert alice.get("/auth/me", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    wrong = httpx.post(f"{platform.base_url}/api/auth/token", data={"username": "alice", "password": "nope"})
    assert wrong.status_code == 401


def token_with_curl(platform: RunningPlatform, username: str, password: str) -> str:
    done = subprocess.run(["curl", "-s", "-d", f"username={username}", "-d", f"password={password}",
                           f"{platform.base_url}/api/auth/token"], capture_output=True, text=True, check=True, timeout=30)
    return str(httpx.Response(200, content=done.stdout).json()["access_token"])


def test_a_device_user_is_bound_to_one_device_whether_made_over_rest_or_the_cli(
    platform: RunningPlatform, api: httpx.Client, platform_database_url: str
) -> None:
    """Given devices d1 and d2 and a command waiting for d2, a user with the device role must
    name its one device (REST 422 naming the field, CLI usage error naming --device), and the
    token of a device user bound to d1, made either way, can neither store telemetry for d2,
    nor take d2's commands, nor acknowledge d2's command: 403 each, and the command is untouched."""
    register(api, "d1")
    register(api, "d2")
    command = api.post("/devices/d2/commands", json={"command": "reboot"}).json()["command_id"]
    password = "correct horse battery"
    unbound = api.post("/auth/users", json={"username": "dev", "password": password, "roles": ["device"]})
    assert unbound.status_code == 422 and "device_id" in unbound.json()["error"]["message"]
    mixed = api.post("/auth/users", json={"username": "dev", "password": password, "roles": ["device", "admin"],
                                          "device_id": "d1"})
    assert mixed.status_code == 422 and "roles" in mixed.json()["error"]["message"]
    made = api.post("/auth/users", json={"username": "rest-d1", "password": password, "roles": ["device"],
                                         "device_id": "d1"})
    assert made.status_code == 201 and made.json()["device_id"] == "d1", made.text

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "iot-platform"), "users", "create", *args, "--password-stdin"],
                              input=password + "\n", cwd=platform.workdir, env=platform_env(platform_database_url),
                              capture_output=True, text=True, timeout=60)

    refused = cli("cli-dev", "--role", "device")
    assert refused.returncode == 2 and "--device" in refused.stderr, refused.stderr
    created = cli("cli-d1", "--role", "device", "--device", "d1")
    assert created.returncode == 0, created.stderr

    for second, username in enumerate(("rest-d1", "cli-d1")):
        reading = {"timestamp": f"2026-01-01T00:00:0{second}Z", "metrics": {"t": 1.0}}
        with client(platform, token_with_curl(platform, username, password)) as device:
            assert device.get("/auth/me").json()["device_id"] == "d1"
            assert device.post("/telemetry", json={"device_id": "d2", **reading}).status_code == 403
            assert device.get("/devices/d2/commands/pending").status_code == 403
            assert device.post(f"/devices/d2/commands/{command}/ack", json={"status": "failed"}).status_code == 403
            assert device.post("/telemetry", json={"device_id": "d1", **reading}).status_code == 201
            assert device.get("/devices/d1/commands/pending").status_code == 200
    assert api.get(f"/devices/d2/commands/{command}").json()["status"] in ("pending", "sent")  # not failed


def test_the_first_start_prints_an_admin_key_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'iot.db'}"
    with running_platform(tmp_path, url, IOT_SECURITY__ADMIN_API_KEY="") as platform:
        printed = re.findall(r"Admin API key: (iotk_\S+)", (tmp_path / "platform.log").read_text())
        assert len(printed) == 1
        assert httpx.get(f"{platform.base_url}/api/auth/me", headers={"Authorization": f"Bearer {printed[0]}"}).json()["roles"] == ["admin"]
    with running_platform(tmp_path, url, IOT_SECURITY__ADMIN_API_KEY=""):
        assert len(re.findall(r"Admin API key:", (tmp_path / "platform.log").read_text())) == 1
    created = subprocess.run([str(BIN / "iot-platform"), "apikey", "create", "--name", "ci", "--role", "viewer"],
                             cwd=tmp_path, env=platform_env(url), capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    key_id, key = created.stdout.split()
    listed = subprocess.run([str(BIN / "iot-platform"), "apikey", "list"], cwd=tmp_path, env=platform_env(url),
                            capture_output=True, text=True, timeout=60).stdout
    assert key_id in listed and key not in listed

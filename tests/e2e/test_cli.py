"""The ``iot-platform`` command line, run as a user runs it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from iot_platform.infrastructure.persistence import migrate
from tests.e2e.platform_process import BIN, platform_env, running_platform


def cli(workdir: Path, database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "iot-platform"), *args],
        cwd=workdir, env=platform_env(database_url, **env),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )


def test_a_bad_config_value_stops_start_up_with_one_line_naming_the_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'iot.db'}"
    done = cli(tmp_path, url, "serve", IOT_API__PORT="eighty")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("iot-platform: bad config value api.port:")
    (tmp_path / "config.yaml").write_text("eventstore:\n  snapshot_evry: 5\n")
    done = cli(tmp_path, url, "db", "upgrade")
    assert done.returncode == 2
    assert done.stderr.strip() == "iot-platform: bad config value eventstore.snapshot_evry: is not a known setting"


def test_db_upgrade_creates_the_schema(tmp_path: Path, platform_database_url: str) -> None:
    done = cli(tmp_path, platform_database_url, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    head = migrate.head_revision()
    assert done.stdout.strip() == f"database at revision {head}"
    current = cli(tmp_path, platform_database_url, "db", "current")
    assert current.stdout.strip() == f"{head} (head is {head})"
    older = cli(tmp_path, platform_database_url, "db", "upgrade", "--revision", "0001")
    assert older.returncode == 0  # already past it: nothing to do


def test_devices_survive_a_restart_and_a_rebuild_reproduces_the_registry(
    tmp_path: Path, platform_database_url: str
) -> None:
    with running_platform(tmp_path, platform_database_url) as platform:
        with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers) as api:
            for n in range(12):
                api.post("/devices", json={"device_id": f"d{n}", "device_type": "th", "tags": {"n": str(n)},
                                          "location": {"latitude": n, "longitude": n}})
            api.post("/devices/d3/suspend")
            api.delete("/devices/d4")
            api.patch("/devices/d5", json={"name": "renamed", "location": None})  # two events
            before = api.get("/devices", params={"include_decommissioned": True, "limit": 100}).json()
    rebuilt = cli(tmp_path, platform_database_url, "projections", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.strip() == "rebuilt from 16 events"
    status = cli(tmp_path, platform_database_url, "projections", "status")
    assert "device_registry: 16 (0 behind)" in status.stdout
    with running_platform(tmp_path, platform_database_url) as platform:
        after = httpx.get(
            f"{platform.base_url}/api/devices", params={"include_decommissioned": True, "limit": 100},
            headers=platform.headers,
        ).json()
    assert after == before
    assert len(after["items"]) == 12


def test_a_service_certificate_needs_a_ca_and_a_choice_about_its_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'iot.db'}"
    undecided = cli(tmp_path, url, "ca", "service-cert", "mosquitto", "--host", "127.0.0.1")
    assert undecided.returncode == 2 and "--key-password-stdin" in undecided.stderr
    no_ca = cli(tmp_path, url, "ca", "service-cert", "mosquitto", "--host", "127.0.0.1", "--unencrypted-key")
    assert no_ca.returncode == 1 and "no device CA" in no_ca.stderr and "ca init" in no_ca.stderr
    assert not (tmp_path / "mosquitto.key").exists()

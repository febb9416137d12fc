"""Runs ``iot-platform serve`` as a real process on a free loopback port, as a user would."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
ADMIN_KEY = "iotk_e2e0admin0key0_e2e-test-admin-secret-not-for-production"
"""Given to every test platform as security.admin_api_key."""


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PORT_BAND = (12000, 19999)
"""Where tests take their ports: under the kernel's ephemeral range (32768 and up by default)
and away from the harness's services (2xxxx). A port that ``bind(0)`` found free is itself an
ephemeral port, so any outgoing connection can take it before the platform binds it; that race
once failed CI with ``address already in use``."""
_handed_out: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody holds now, never handed out twice in this test session."""
    low = int(_EPHEMERAL_RANGE.read_text().split()[0]) if _EPHEMERAL_RANGE.exists() else 32768
    first, last = _worker_slice(_PORT_BAND[0], min(_PORT_BAND[1], low - 1))
    for _ in range(200):
        port = random.randint(first, last)
        if port not in _handed_out and _bindable(port, kind):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {first}-{last}")


def _worker_slice(first: int, last: int) -> tuple[int, int]:
    """Under pytest-xdist each worker picks from its own slice of the band: ``_handed_out`` is
    per process, and two workers drawing the same port between the check and the platform's
    bind would collide."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return first, last
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    size = (last - first + 1) // count
    start = first + int(worker[2:]) * size
    return start, start + size - 1


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class RunningPlatform:
    base_url: str
    process: subprocess.Popen[str]
    workdir: Path
    mqtt_port: int
    """The MQTT broker the platform subscribes to (its embedded one unless told otherwise)."""
    coap_port: int = 0
    lorawan_port: int = 0
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {ADMIN_KEY}"})
    """What an admin sends: the configured admin API key."""


def platform_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_") or k.startswith("IOT_TEST_")}
    env.update({"IOT_EVENTSTORE__URL": database_url, "IOT_API__LOG_LEVEL": "warning", **extra})
    return env


def external_mqtt_env(mqtt_url: str, name: str) -> dict[str, str]:
    """The platform on an external broker, in a shared-subscription group and with a client id
    of its own (``name``), so concurrent tests never take each other's messages."""
    return {
        "IOT_MQTT__EMBEDDED_BROKER": "false",
        "IOT_MQTT__BROKER_URL": mqtt_url,
        "IOT_MQTT__CLIENT_ID": name,
        "IOT_MQTT__SHARED_SUBSCRIPTION_GROUP": name,
        "IOT_MQTT__SESSION_EXPIRY_SECONDS": "30",
    }


@contextmanager
def running_platform(
    workdir: Path, database_url: str, deadline: float = 60.0, serve_args: tuple[str, ...] = (),
    wait_ready: bool = True, **env: str
) -> Iterator[RunningPlatform]:
    """``env`` adds settings (IOT_...); by default the embedded broker gets a free port.
    ``serve_args`` go to ``iot-platform serve`` (``--workers ...``). With ``wait_ready=False``
    it is handed over once it serves (``/health``), for a test of a platform that is not ready."""
    port = free_port()
    if "IOT_MQTT__BROKER_URL" not in env:
        env["IOT_MQTT__BROKER_URL"] = f"mqtt://127.0.0.1:{free_port()}"
    env.setdefault("IOT_COAP__PORT", str(free_udp_port()))
    env.setdefault("IOT_LORAWAN__PORT", str(free_udp_port()))
    env.setdefault("IOT_SECURITY__ADMIN_API_KEY", ADMIN_KEY)
    mqtt_port = int(env["IOT_MQTT__BROKER_URL"].rsplit(":", 1)[1])
    log = (workdir / "platform.log").open("a")
    process = subprocess.Popen(
        [str(BIN / "iot-platform"), "serve", "--port", str(port), *serve_args],
        cwd=workdir,
        env=platform_env(database_url, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(base_url, process, deadline, workdir, "/ready" if wait_ready else "/health")
        yield RunningPlatform(base_url, process, workdir, mqtt_port, int(env["IOT_COAP__PORT"]),
                              int(env["IOT_LORAWAN__PORT"]))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_ready(
    base_url: str, process: subprocess.Popen[str], deadline: float, workdir: Path, probe: str = "/ready"
) -> None:
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"platform exited: {(workdir / 'platform.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}{probe}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"platform not ready in {deadline}s: {(workdir / 'platform.log').read_text()[-2000:]}")


def start_worker(workdir: Path, database_url: str, roles: list[str], log_name: str, **env: str) -> subprocess.Popen[str]:
    """``iot-platform worker --role ...`` in the background; its log is ``workdir/log_name``."""
    args = [str(BIN / "iot-platform"), "worker"]
    for role in roles:
        args += ["--role", role]
    with (workdir / log_name).open("a") as log:
        return subprocess.Popen(args, cwd=workdir, env=platform_env(database_url, **env),
                                stdout=log, stderr=subprocess.STDOUT, text=True)

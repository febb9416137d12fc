"""Running the platform as a user would, for the end-to-end tests and the benchmarks alike.

One place for what both need: loopback ports that nobody else is about to take, ``iot-platform
serve`` and ``iot-platform worker`` as background processes with their output in a log file,
waiting for them to be ready, reading their Prometheus figures, and the statistics and tables
the benchmarks print. The tests import it through ``tests.e2e.platform_process``; the tools run as
``python -m tools.<name>`` from the repository root so that ``tools`` is a package.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
"""Where ``iot-platform`` is installed: beside the interpreter running this (the venv)."""
ROOT = Path(__file__).resolve().parent.parent
"""The repository (``tools/services.sh`` lives under it)."""
ADMIN_KEY = "iotk_e2e0admin0key0_e2e-test-admin-secret-not-for-production"
"""Given to every test platform as security.admin_api_key."""
LOG_NAME = "platform.log"


# -- ports ----------------------------------------------------------------------------------------

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PORT_BAND = (12000, 19999)
"""Where ports are taken: under the kernel's ephemeral range (32768 and up by default) and away
from the harness's services (2xxxx). A port that ``bind(0)`` found free is itself an ephemeral
port, so any outgoing connection can take it before the platform binds it; that race once
failed CI with ``address already in use``."""
_handed_out: set[int] = set()


def port_band() -> tuple[int, int]:
    """The ports this process may take. Under pytest-xdist each worker gets a slice of its own:
    the workers are separate processes, so none of them knows what the others handed out."""
    low = int(_EPHEMERAL_RANGE.read_text().split()[0]) if _EPHEMERAL_RANGE.exists() else 32768
    first, last = _PORT_BAND[0], min(_PORT_BAND[1], low - 1)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 1:
        size = (last - first + 1) // count
        first += int(worker[2:]) % count * size
        last = first + size - 1
    return first, last


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nobody holds now, never handed out twice by this process."""
    first, last = port_band()
    for _ in range(200):
        port = random.randint(first, last)
        if port not in _handed_out and _bindable(port, kind):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {first}-{last}")


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# -- the platform's processes ---------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This process's environment without its ``IOT_`` settings (but with the ``IOT_TEST_``
    addresses of the services), so that a platform gets only the settings it is given."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IOT_") or k.startswith("IOT_TEST_")}


def platform_env(database_url: str, **extra: str) -> dict[str, str]:
    env = clean_env()
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


def new_api_key() -> str:
    """A fresh admin key for one run's platform (``iotk_<hex id>_<secret>``)."""
    return f"iotk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


def _background(command: Sequence[str], workdir: Path, env: Mapping[str, str], log_name: str
                ) -> subprocess.Popen[str]:
    with (workdir / log_name).open("a") as log_file:  # the child keeps its own descriptor
        return subprocess.Popen(list(command), cwd=workdir, env=dict(env), stdout=log_file,
                                stderr=subprocess.STDOUT, text=True)


def serve(workdir: Path, port: int, env: Mapping[str, str], serve_args: Sequence[str] = (),
          prefix: Sequence[str] = (), log_name: str = LOG_NAME) -> subprocess.Popen[str]:
    """``iot-platform serve`` on ``port`` in the background, in ``workdir``, its output appended
    to ``workdir/log_name``. ``prefix`` runs it under something (``python -m cProfile ...``)."""
    command = [*prefix, str(BIN / "iot-platform"), "serve", "--port", str(port), *serve_args]
    return _background(command, workdir, env, log_name)


def start_worker(workdir: Path, database_url: str, roles: list[str], log_name: str, **env: str) -> subprocess.Popen[str]:
    """``iot-platform worker --role ...`` in the background; its log is ``workdir/log_name``."""
    return worker(workdir, roles, platform_env(database_url, **env), log_name)


def worker(workdir: Path, roles: Sequence[str], env: Mapping[str, str], log_name: str,
           worker_args: Sequence[str] = ()) -> subprocess.Popen[str]:
    """``iot-platform worker --role ...`` in the background, with exactly ``env``."""
    args = [str(BIN / "iot-platform"), "worker"]
    for role in roles:
        args += ["--role", role]
    return _background([*args, *worker_args], workdir, env, log_name)


def stop(*processes: subprocess.Popen[str], timeout: float = 30) -> None:
    """SIGTERM to all of them at once (a clean shutdown), then SIGKILL to any still running after
    ``timeout`` seconds."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"


def wait_until_ready(base_url: str, process: subprocess.Popen[str], deadline: float, log_path: Path,
                     probe: str = "/ready", headers: Mapping[str, str] | None = None) -> None:
    """Until ``probe`` answers 200; fails with the log's tail if the process exits first or it
    takes over ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"platform exited: {log_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}{probe}", timeout=1, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"platform not ready in {deadline}s: {log_tail(log_path)}")


async def wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[str], log_path: Path,
                     deadline: float = 90.0) -> None:
    """The same from a benchmark's event loop, on its client (base URL and headers set)."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"platform exited:\n{log_tail(log_path, 3000)}")
        try:
            if (await client.get("/ready", timeout=2)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"platform not ready in {deadline:.0f}s:\n{log_tail(log_path, 3000)}")


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
    process = serve(workdir, port, platform_env(database_url, **env), serve_args)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base_url, process, deadline, workdir / LOG_NAME, "/ready" if wait_ready else "/health")
        yield RunningPlatform(base_url, process, workdir, mqtt_port, int(env["IOT_COAP__PORT"]),
                              int(env["IOT_LORAWAN__PORT"]))
    finally:
        stop(process)


# -- measuring ------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus' text format as {series with its labels: value}."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                values[key] = float(value)
            except ValueError:
                pass
    return values


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The platform's /metrics as {series: value}."""
    response = await client.get("/metrics/", timeout=10)
    response.raise_for_status()  # a 401/403 would otherwise read as "nothing happened"
    return parse_metrics(response.text)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (``q`` from 0 to 1); NaN without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def nearest_rank(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` from 0 to 100): always a measured value, so with 30
    samples p99 is the maximum."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# -- reporting ------------------------------------------------------------------------------------


def log(text: str) -> None:
    """Progress, on stderr, so that stdout holds only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def fmt(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators; ``-`` for one that could not be measured."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A boxed table: the first column left-aligned (labels), the others right-aligned (figures)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |", line]
    for r in rows:
        out.append("| " + " | ".join(c.rjust(w) if i else c.ljust(w)
                                     for i, (c, w) in enumerate(zip(r, widths))) + " |")
    out.append(line)
    return "\n".join(out)

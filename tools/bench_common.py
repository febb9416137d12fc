"""What the CoAP and LoRaWAN benchmarks share: logging, ports, percentiles, the platform's API
key and its Prometheus figures. Imported by the scripts beside it (``tools/`` is their path)."""

from __future__ import annotations

import asyncio
import math
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def new_api_key() -> str:
    """A fresh admin key for one run's platform (``iotk_<hex id>_<secret>``)."""
    return f"iotk_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    """The platform's /metrics as {series: value}."""
    response = await client.get("/metrics/")
    response.raise_for_status()  # a 401/403 would otherwise read as "nothing happened"
    values: dict[str, float] = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                values[key] = float(value)
            except ValueError:
                pass
    return values


async def wait_ready(api: httpx.AsyncClient, platform: subprocess.Popen[bytes], workdir: Path,
                     deadline: float = 90.0) -> None:
    """Until the platform's /ready answers 200; fails if it exits or takes over ``deadline``."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            if (await api.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > give_up or platform.poll() is not None:
            raise RuntimeError(f"the platform did not start (see {workdir}/platform.log)")
        await asyncio.sleep(0.1)

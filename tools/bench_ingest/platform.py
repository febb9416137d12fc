"""The platform under test: its settings for a run, starting it through the harness, and its
Prometheus figures (with those of any storage workers)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import harness
from tools.harness import ROOT, clean_env, free_port, new_api_key, parse_metrics, serve


def harness_env() -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if k.startswith("IOT_TEST_")}
    if "IOT_TEST_MQTT_URL" in found and "IOT_TEST_INFLUX_URL" in found:
        return found
    try:
        out = subprocess.run(["bash", str(ROOT / "tools/services.sh"), "env"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return found
    for line in out.splitlines():
        m = re.match(r"(?:export\s+)?(IOT_TEST_\w+)=['\"]?(.*?)['\"]?$", line.strip())
        if m:
            found.setdefault(m.group(1), m.group(2))
    return found


def broker_pid(port: int) -> int | None:
    """Mosquitto's pid from the harness, if the broker is the harness one."""
    try:
        out = subprocess.run(["bash", str(ROOT / "tools/services.sh"), "status"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(rf"mosquitto\s+running\s+\S+:{port}\s+pid\s+(\d+)", out)
    return int(m.group(1)) if m else None


@dataclass
class Platform:
    process: subprocess.Popen[str]
    base_url: str
    workdir: Path
    log_path: Path
    api_key: str
    """The admin API key the platform was started with."""

    @property
    def headers(self) -> dict[str, str]:
        """What an admin sends on every REST, /metrics and SSE request."""
        return {"Authorization": f"Bearer {self.api_key}"}


def platform_environment(args: argparse.Namespace, run: str, workdir: Path, harness: dict[str, str],
                         extra: dict[str, str] | None = None) -> dict[str, str]:
    env = clean_env()
    for name in ("DEVICE_DB_URL", "TIMESERIES_DB_URL", "MQTT_BROKER_URL", "KAFKA_BROKERS"):
        env.pop(name, None)
    env.update({
        "IOT_EVENTSTORE__URL": f"sqlite:///{workdir}/iot.db",
        "IOT_MQTT__EMBEDDED_BROKER": "false",
        "IOT_MQTT__BROKER_URL": args.broker,
        "IOT_MQTT__CLIENT_ID": f"bench-{run}",
        "IOT_MQTT__SHARED_SUBSCRIPTION_GROUP": f"bench-{run}",
        # The session must not outlive the run by an hour, collecting everyone's QoS 1 messages.
        "IOT_MQTT__SESSION_EXPIRY_SECONDS": "120",
        "IOT_COAP__ENABLED": "false",
        "IOT_LORAWAN__ENABLED": "false",
        "IOT_API__LOG_LEVEL": "warning",
    })
    if args.store == "influxdb":
        env.update({
            "IOT_TIMESERIES__BACKEND": "influxdb",
            "IOT_TIMESERIES__URL": harness["IOT_TEST_INFLUX_URL"],
            "IOT_TIMESERIES__BUCKET": harness.get("IOT_TEST_INFLUX_BUCKET", "iot_test/autogen"),
            "IOT_TIMESERIES__TOKEN": harness.get("IOT_TEST_INFLUX_TOKEN", ""),
            "IOT_TIMESERIES__ORG": harness.get("IOT_TEST_INFLUX_ORG", "-"),
        })
    else:
        env["IOT_TIMESERIES__URL"] = f"sqlite:///{workdir}/ts.db"
    env.update(extra or {})
    for item in args.platform_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def start_platform(args: argparse.Namespace, run: str, workdir: Path, harness: dict[str, str],
                   extra: dict[str, str] | None = None, serve_args: tuple[str, ...] = ()) -> Platform:
    port = free_port()
    env = platform_environment(args, run, workdir, harness,
                               {"IOT_SECURITY__ADMIN_API_KEY": new_api_key(), **(extra or {})})
    profile = (sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve())) if args.profile else ()
    process = serve(workdir, port, env, serve_args, prefix=profile)
    return Platform(process, f"http://127.0.0.1:{port}", workdir, workdir / "platform.log",
                    env["IOT_SECURITY__ADMIN_API_KEY"])


async def wait_ready(client: Any, platform: Platform, deadline: float = 90.0) -> None:
    await harness.wait_ready(client, platform.process, platform.log_path, deadline)


WORKER_METRICS: list[str] = []
"""Metrics URLs of ``iot-platform worker`` processes (``--stream kafka``): ``scrape`` adds their
counters to the platform's, so that "stored" counts what every storage worker stored."""


async def scrape(client: Any) -> dict[str, float]:
    responses = [await client.get("/metrics/", timeout=10)]
    for url in WORKER_METRICS:  # Prometheus' own server on --metrics-port: no authentication, no credential
        request = client.build_request("GET", url, timeout=10)
        request.headers.pop("Authorization", None)
        responses.append(await client.send(request))
    values: dict[str, float] = {}
    for response in responses:
        response.raise_for_status()
        for key, value in parse_metrics(response.text).items():
            values[key] = values.get(key, 0.0) + value
    return values


def sink_usage(before: dict[str, float], after: dict[str, float], elapsed: float) -> dict[str, str]:
    """Per telemetry sink: batches, readings per batch, time per batch, share of the phase busy."""
    out = {}
    for sink in ("storage", "latest_state"):
        key = f'iot_sink_batch_seconds_{{}}{{{{sink="{sink}"}}}}'
        n = after.get(key.format("count"), 0.0) - before.get(key.format("count"), 0.0)
        busy = after.get(key.format("sum"), 0.0) - before.get(key.format("sum"), 0.0)
        rkey = f'iot_sink_readings_total{{sink="{sink}"}}'
        readings = after.get(rkey, 0.0) - before.get(rkey, 0.0)
        if n:
            out[sink] = (f"{n:.0f} batches of {readings / n:,.0f} readings, {busy / n * 1000:,.0f} ms each, "
                         f"busy {busy / max(elapsed, 1e-9):.0%} of the phase")
    return out


def delta(after: dict[str, float], before: dict[str, float], prefix: str) -> dict[str, float]:
    return {
        k: after[k] - before.get(k, 0.0)
        for k in after
        if k.startswith(prefix) and after[k] - before.get(k, 0.0) and not k.endswith("_created")
    }

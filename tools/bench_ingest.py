#!/usr/bin/env python3
"""MQTT ingestion benchmark: readings a second that become queryable, against a bare client.

Everything runs in one invocation, on one broker (the harness Mosquitto by default), on loopback:

1. **Bare baseline.** For each QoS, a bare aiomqtt subscriber process only counts messages
   while the publishers publish ``--messages`` readings as fast as they can. It speaks the
   platform's MQTT version (5 unless ``--platform-env IOT_MQTT__PROTOCOL=3.1.1``; see
   ``--bare-protocol``), on MQTT 5 in its own ``$share`` group as the platform does, subscribed
   at the phase's QoS. Rate = messages / (last one received - first publish). The platform is
   not running yet, so nothing else consumes these messages (platform and bare never overlap).
2. **Platform.** ``iot-platform serve`` runs as a separate process in a fresh temp dir: SQLite
   event store, embedded time-series store (or ``--store influxdb``: the harness InfluxDB),
   the broker above, a client id, shared-subscription group and session (expiring 120 s after
   the run) of its own, ``api.log_level=warning`` (no access log), and a fresh admin API key
   (``security.admin_api_key``, unless ``--platform-env IOT_SECURITY__ADMIN_API_KEY=...`` gives
   one) that every REST, /metrics and SSE request carries as ``Authorization: Bearer``.
   ``--devices`` devices plus ``--probes`` probe devices are registered with
   ``POST /api/devices``, concurrently; that is timed and printed on its own and is not part
   of the ingest figures.
3. **Activation.** Every device publishes one reading. The first reading of a device appends
   ``DeviceActivated`` to the event store; timed and printed on its own, so that the phases
   below measure ingestion by active devices.
4. **Saturated phases** (``--qos``, default 1 then 0): the same publishers publish the same
   number of readings as fast as they can. Stored readings come from the platform's counter
   ``iot_sink_readings_total{sink="storage"}`` (a reading counts once the time-series store has
   committed it, i.e. it is queryable), scraped from ``/metrics`` every 100 ms. Rate = stored
   readings / (the scrape that saw them all - first publish); points = readings x 5 metrics.
   After the run the embedded store's ``points`` table is counted to check that every point
   is really there.
5. **Latency.** ``--probes`` probe devices publish a reading every 100 ms in the same stream as
   the load (same broker and subscription, their own connection) while the phase lasts. For
   each probe device, ``GET /api/devices/{id}/data?from=<oldest probe not yet seen>&to=<now>``
   every 50 ms finds the probes that have become queryable. Latency = arrival of the answer
   that contains the probe - the moment just before it was published; an upper bound, by up to
   one poll interval. When saturated, the broker holds a backlog of the publishers' readings,
   so that latency is mostly the time to drain it; ``--paced`` (default 0.5) adds per QoS a
   phase of ``--paced-seconds`` in which the publishers publish at that fraction of the
   measured platform rate: the latency at a sustainable rate.
6. **Memory and CPU.** The platform's VmRSS is sampled from /proc every 50 ms: the peak of each
   phase, RSS against readings stored so far at each step, and VmHWM at the end. CPU per phase
   (from /proc and os.times): platform, broker, publishers, this process and everything else
   on the machine (other people's tests disturb a shared box: check "other processes").

7. **Rules** (``--rules``, default 1,000; 0 skips): three more phases of ``--messages`` readings
   at ``--rules-qos`` (default 1): without rules, with ``--rules`` rules (created over REST),
   and with the same rules disabled (PATCH). Each ends when storage *and* the rule engine have
   handled every reading (``iot_sink_readings_total{sink="storage"|"rules"}``). The rules never
   trip on the load (see ``rule_set``): five fleet-wide (glob, device type, tag) and the rest on
   slices of ten devices, so a reading meets about 6 of them. Cost = 1 - rate with rules / mean
   rate of the two phases without. With ``--paced``, a fourth phase runs the rules paced at that
   fraction of the rules-on rate, in which ``--alert-probes`` devices raise and clear alerts
   over and over; an SSE client on ``/api/alerts/stream`` times each reading that raised one to
   its ``raised`` notice (reading-to-alert latency; see ``AlertProber``).

``--stream kafka`` runs instead a comparison of streams (see ``stream_comparison``): the same
QoS 1 load, saturated then paced, through the in-process stream and through Kafka with one and
with two ``iot-platform worker --role storage`` processes, each setup a fresh platform on
InfluxDB with its own devices (1,000 unless ``--devices``); the workers' counters are scraped
from their ``--metrics-port`` (Prometheus' own server, not behind the API's authentication).

QoS 0: the publishers publish at QoS 0. The platform keeps its configured QoS 1 subscription,
so the broker delivers at min(0, 1) = 0: no PUBACK to the broker, no redelivery; a reading is
lost if the broker's queue limit is hit or the platform dies. The bare subscriber subscribes at 0.

Publishers: ``--publishers`` processes x ``--connections`` MQTT 3.1.1 connections on plain
sockets, PUBLISH packets encoded by hand so that the load generator costs little CPU (it sends
well above 50,000 msgs/s). Device i is published by connection i mod connections, round-robin
over its devices. Topic ``devices/{id}/telemetry``, payload
``{"message_id", "timestamp": epoch microseconds (strictly increasing per connection), "metrics":
{temperature, humidity, pressure, battery_level, co2}}``. At QoS 1 each connection keeps at most
``--window`` publishes unacknowledged.

Targets (from the issues): platform >= 50 % of the bare rate; >= 10,000 msgs/s end to end on the
embedded store; peak RSS < 300 MB with 10,000 devices, not growing with readings; 1,000 rules
cost under 30 % of the ingest rate.

Run from the repository root, with the services up (``tools/services.sh start``)::

    .venv/bin/python tools/bench_ingest.py                  # 10,000 devices, QoS 1 then 0
    .venv/bin/python tools/bench_ingest.py --devices 1000 --messages 50000 --qos 1 --paced 0
    .venv/bin/python tools/bench_ingest.py --store influxdb --devices 1000
    .venv/bin/python tools/bench_ingest.py --platform-env IOT_MQTT__PROTOCOL=3.1.1
    .venv/bin/python tools/bench_ingest.py --devices 100 --qos 1 --profile /tmp/platform.prof
    .venv/bin/python tools/bench_ingest.py --qos '' --paced 0     # only the rules comparison
    .venv/bin/python tools/bench_ingest.py --stream kafka         # in-process vs Kafka, 1 and 2 workers

Broker and InfluxDB come from ``IOT_TEST_MQTT_URL`` / ``IOT_TEST_INFLUX_*`` (else from
``tools/services.sh env``); ``--broker`` overrides the broker. ``--keep`` keeps the temp dir
(platform log, databases). Progress goes to stderr, the tables to stdout. A default run takes
about 5 minutes here, 2 to 2.5 of them registering 10,000 devices. Exit status 1 if the
platform could not be run or a step failed; missed targets are reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import re
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_common import free_port, new_api_key

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
METRICS_PER_READING = 5
STORED = 'iot_sink_readings_total{sink="storage"}'
RECEIVED = 'iot_mqtt_messages_total{kind="telemetry"}'
TARGET_RATIO = 0.5
TARGET_RATE = 10_000
TARGET_RSS_MB = 300
TARGET_RULES_COST = 0.30
CHUNK = 64  # messages encoded and written per socket write
POLL_METRICS = 0.1
PROBE_INTERVAL = 0.1  # seconds between probes of one probe device
PROBE_POLL = 0.05  # seconds between GETs of one probe device
PROBE_GIVE_UP = 120.0
ALERT_INTERVAL = 0.2  # seconds from one alert probe device's clearing reading to its next alert
ALERT_GIVE_UP = 30.0  # seconds after the phase for the last raised notices to arrive
IDLE_GIVE_UP = 30.0  # seconds without progress (after publishing ended) before a phase gives up


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- MQTT 3.1.1 on a plain socket (publishers) ---------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def _connect_packet(client_id: str, keepalive: int = 120) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02" + struct.pack("!H", keepalive) + struct.pack("!H", len(cid)) + cid
    return b"\x10" + _varint(len(body)) + body


PAYLOAD = (
    b'{"message_id":"%s%d","timestamp":%d,"metrics":{"temperature":%.2f,"humidity":%.1f,'
    b'"pressure":%.2f,"battery_level":%.1f,"co2":%d}}'
)


def _payload(tag: bytes, seq: int, ts_us: int) -> bytes:
    k = seq % 97
    return PAYLOAD % (tag, seq, ts_us, 20 + k / 10, 40 + k / 5, 1010 + k / 20, 100 - k / 10, 400 + k)


@dataclass
class _ConnStats:
    sent: int = 0
    acked: int = 0
    t_first: float = 0.0
    t_sent: float = 0.0
    t_acked: float = 0.0
    error: str = ""


async def _publish_connection(
    host: str, port: int, client_id: str, device_ids: list[str], count: int, qos: int,
    window: int, tag: bytes, rate: float, go: asyncio.Event, connected: asyncio.Event,
    stats: _ConnStats,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(_connect_packet(client_id))
    await writer.drain()
    connack = await reader.readexactly(4)
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"CONNACK refused: {connack!r}")
    topics = [
        (lambda t: struct.pack("!H", len(t)) + t)(f"devices/{d}/telemetry".encode()) for d in device_ids
    ]
    header = bytes([0x30 | (qos << 1)])
    window_open = asyncio.Event()
    connected.set()
    await go.wait()

    async def read_acks() -> None:
        buf = b""
        while stats.acked < count:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the broker closed the connection")
            buf += data
            i, n = 0, len(buf)
            while n - i >= 2:
                j, length, mult = i + 1, 0, 1
                while j < n:
                    byte = buf[j]
                    length += (byte & 127) * mult
                    mult *= 128
                    j += 1
                    if not byte & 128:
                        break
                else:
                    break
                if j + length > n:
                    break
                if buf[i] >> 4 == 4:  # PUBACK
                    stats.acked += 1
                i = j + length
            buf = buf[i:]
            stats.t_acked = time.monotonic()
            window_open.set()

    acks = asyncio.create_task(read_acks()) if qos else None
    ndev = len(topics)
    last_us = 0
    chunk = CHUNK if not rate else max(1, min(CHUNK, int(rate * 0.01)))
    stats.t_first = start = time.monotonic()
    sent = 0
    try:
        while sent < count:
            n = min(chunk, count - sent)
            if qos:
                while sent - stats.acked >= window:
                    if acks is not None and acks.done():
                        acks.result()
                    window_open.clear()
                    await window_open.wait()
                n = min(n, window - (sent - stats.acked))
            if rate:
                delay = start + sent / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            parts: list[bytes] = []
            for _ in range(n):
                ts = time.time_ns() // 1000
                if ts <= last_us:
                    ts = last_us + 1
                last_us = ts
                topic = topics[sent % ndev]
                payload = _payload(tag, sent, ts)
                if qos:
                    pid = struct.pack("!H", sent % 65535 + 1)
                    parts += (header, _varint(len(topic) + 2 + len(payload)), topic, pid, payload)
                else:
                    parts += (header, _varint(len(topic) + len(payload)), topic, payload)
                sent += 1
            writer.write(b"".join(parts))
            await writer.drain()
            stats.sent = sent
        stats.t_sent = time.monotonic()
        if acks is not None:
            await asyncio.wait_for(acks, 120)
        else:
            stats.t_acked = stats.t_sent
        writer.write(b"\xe0\x00")  # DISCONNECT
        await writer.drain()
    except Exception as exc:  # reported, and the phase is marked disturbed
        stats.error = f"{type(exc).__name__}: {exc}"
        if acks is not None:
            acks.cancel()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _publisher(conf: dict[str, Any], ready: Any, start: Any, results: Any) -> None:
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    conns = conf["connections"]
    stats = [_ConnStats() for _ in conns]
    connected = [asyncio.Event() for _ in conns]
    tasks = [
        asyncio.create_task(
            _publish_connection(
                conf["host"], conf["port"], c["client_id"], c["devices"], c["count"], conf["qos"],
                conf["window"], conf["tag"].encode(), c["rate"], go, connected[i], stats[i],
            )
        )
        for i, c in enumerate(conns)
    ]
    give_up = time.monotonic() + 30
    while not all(e.is_set() for e in connected) and time.monotonic() < give_up:
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    failed = [t for t in tasks if t.done() and t.exception() is not None]
    if failed or not all(e.is_set() for e in connected):
        ready.put(("failed", repr(failed[0].exception()) if failed else "connect timed out"))
        return
    ready.put(("ready", ""))
    await loop.run_in_executor(None, start.wait)
    cpu0 = sum(os.times()[:2])
    go.set()
    outcome = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [s.error for s in stats if s.error] + [repr(o) for o in outcome if isinstance(o, BaseException)]
    results.put({
        "sent": sum(s.sent for s in stats),
        "acked": sum(s.acked for s in stats),
        "t_first": min(s.t_first for s in stats if s.t_first) if any(s.t_first for s in stats) else 0.0,
        "t_sent": max(s.t_sent for s in stats),
        "t_acked": max(s.t_acked for s in stats),
        "cpu": sum(os.times()[:2]) - cpu0,
        "errors": errors,
    })


def publisher_process(conf: dict[str, Any], ready: Any, start: Any, results: Any) -> None:
    try:
        asyncio.run(_publisher(conf, ready, start, results))
    except Exception as exc:  # the parent waits on these queues
        ready.put(("failed", repr(exc)))
        results.put({"errors": [repr(exc)], "sent": 0, "acked": 0, "t_first": 0.0,
                     "t_sent": 0.0, "t_acked": 0.0, "cpu": 0.0})


# -- the bare subscriber -------------------------------------------------------------------------


async def _bare(conf: dict[str, Any], ready: Any, results: Any) -> None:
    import aiomqtt

    if conf["mqtt5"]:
        client = aiomqtt.Client(conf["host"], conf["port"], identifier=conf["client_id"],
                                protocol=aiomqtt.ProtocolVersion.V5, clean_start=True)
        topic = f"$share/{conf['group']}/devices/+/telemetry"
    else:
        client = aiomqtt.Client(conf["host"], conf["port"], identifier=conf["client_id"],
                                protocol=aiomqtt.ProtocolVersion.V311, clean_session=True)
        topic = "devices/+/telemetry"
    prefix = conf["topic_prefix"]
    expected = conf["expected"]
    state: dict[str, float] = {"count": 0, "t_first": 0.0, "t_last": 0.0}
    async with client:
        await client.subscribe(topic, qos=conf["qos"])
        cpu0 = sum(os.times()[:2])
        ready.put(("ready", ""))

        async def count() -> None:
            n = 0
            async for message in client.messages:
                if message.topic.value.startswith(prefix):
                    n += 1
                    state["t_last"] = time.monotonic()
                    if n == 1:
                        state["t_first"] = state["t_last"]
                    state["count"] = n
                    if n >= expected:
                        return

        async def watchdog() -> None:
            seen, since = 0.0, time.monotonic()
            while True:
                await asyncio.sleep(0.25)
                if state["count"] != seen:
                    seen, since = state["count"], time.monotonic()
                elif time.monotonic() - since > (5.0 if seen else 60.0):
                    return

        counting, dog = asyncio.create_task(count()), asyncio.create_task(watchdog())
        await asyncio.wait((counting, dog), return_when=asyncio.FIRST_COMPLETED)
        cpu = sum(os.times()[:2]) - cpu0
        for t in (counting, dog):
            t.cancel()
    results.put({**state, "cpu": cpu})


def bare_process(conf: dict[str, Any], ready: Any, results: Any) -> None:
    try:
        asyncio.run(_bare(conf, ready, results))
    except Exception as exc:
        ready.put(("failed", repr(exc)))
        results.put({"count": 0, "t_first": 0.0, "t_last": 0.0, "cpu": 0.0, "error": repr(exc)})


# -- /proc: memory and CPU -----------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int:
    """VmRSS / VmHWM of a process, in kB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def system_cpu() -> tuple[float, float]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.label = "start"
        self.peaks: dict[str, int] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            rss = proc_status(self.pid, "VmRSS")
            if rss:
                self.peaks[self.label] = max(self.peaks.get(self.label, 0), rss)
            time.sleep(0.05)

    def now(self) -> int:
        return proc_status(self.pid, "VmRSS")


@dataclass
class CpuWindow:
    """CPU seconds of the platform and the broker, and the machine's busy share, over a phase."""

    platform_pid: int | None
    broker_pid: int | None
    t0: float = 0.0
    p0: float = 0.0
    b0: float = 0.0
    me0: float = 0.0
    s0: tuple[float, float] = (0.0, 0.0)

    def start(self) -> None:
        self.t0, self.p0, self.b0 = time.monotonic(), proc_cpu(self.platform_pid), proc_cpu(self.broker_pid)
        self.me0 = sum(os.times()[:2])
        self.s0 = system_cpu()

    def stop(self) -> dict[str, float]:
        """Shares of one core, except ``machine`` (share of all cores busy)."""
        wall = time.monotonic() - self.t0
        busy, total = system_cpu()
        return {
            "wall": wall,
            "platform": (proc_cpu(self.platform_pid) - self.p0) / wall if self.platform_pid else 0.0,
            "broker": (proc_cpu(self.broker_pid) - self.b0) / wall if self.broker_pid else 0.0,
            "bench": (sum(os.times()[:2]) - self.me0) / wall,
            "machine": (busy - self.s0[0]) / max(1.0, total - self.s0[1]),
        }


def others(usage: dict[str, float], *known: float) -> float:
    """Cores used by processes outside this benchmark (other people's tests, ...)."""
    cores = os.cpu_count() or 1
    return max(0.0, usage["machine"] * cores - usage["platform"] - usage["broker"] - usage["bench"] - sum(known))


# -- the platform process ------------------------------------------------------------------------


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
    process: subprocess.Popen[bytes]
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
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOT_") or k.startswith("IOT_TEST_")}
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
    log_path = workdir / "platform.log"
    command = [str(BIN / "iot-platform"), "serve", "--port", str(port), *serve_args]
    if args.profile:
        command = [sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve()), *command]
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    return Platform(process, f"http://127.0.0.1:{port}", workdir, log_path, env["IOT_SECURITY__ADMIN_API_KEY"])


async def wait_ready(client: Any, platform: Platform, deadline: float = 90.0) -> None:
    import httpx

    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        if platform.process.poll() is not None:
            raise RuntimeError(f"platform exited:\n{platform.log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/ready", timeout=2)).status_code == 200:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"platform not ready in {deadline:.0f}s:\n{platform.log_path.read_text()[-3000:]}")


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
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[key] = values.get(key, 0.0) + float(value)
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


# -- phases --------------------------------------------------------------------------------------


@dataclass
class Fleet:
    run: str
    devices: list[str]
    probes: list[str]
    host: str
    port: int
    alert_probes: list[str] = field(default_factory=list)

    @property
    def topic_prefix(self) -> str:
        return f"devices/b{self.run}-"


class Publishers:
    """``--publishers`` processes, connected and waiting; ``go()`` starts them all at once."""

    def __init__(self, args: argparse.Namespace, fleet: Fleet, messages: int, qos: int, tag: str,
                 rate: float = 0.0) -> None:
        self.ctx = mp.get_context("spawn")
        self.ready, self.results = self.ctx.Queue(), self.ctx.Queue()
        self.start_event = self.ctx.Event()
        total = args.publishers * args.connections
        conns = []
        for j in range(total):
            conns.append({
                "client_id": f"bench-{fleet.run}-pub-{tag}-{j}",
                "devices": fleet.devices[j::total],
                "count": messages // total + (1 if j < messages % total else 0),
                "rate": rate / total,
            })
        self.procs = []
        for p in range(args.publishers):
            conf = {"host": fleet.host, "port": fleet.port, "qos": qos, "window": args.window,
                    "tag": tag, "connections": conns[p::args.publishers]}
            self.procs.append(self.ctx.Process(
                target=publisher_process, args=(conf, self.ready, self.start_event, self.results),
                daemon=True))
        self.messages = messages

    def start(self) -> None:
        for proc in self.procs:
            proc.start()
        for _ in self.procs:
            status, detail = self.ready.get(timeout=60)
            if status != "ready":
                self.kill()
                raise RuntimeError(f"publisher could not start: {detail}")

    def go(self) -> float:
        t = time.monotonic()
        self.start_event.set()
        return t

    async def results_async(self, timeout: float = 600) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        out = []
        for _ in self.procs:
            out.append(await loop.run_in_executor(None, self.results.get, True, timeout))
        for proc in self.procs:
            await loop.run_in_executor(None, proc.join, 10)
        return out

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    firsts = [r["t_first"] for r in results if r["t_first"]]
    return {
        "sent": sum(r["sent"] for r in results),
        "acked": sum(r["acked"] for r in results),
        "t_first": min(firsts) if firsts else 0.0,
        "t_sent": max(r["t_sent"] for r in results),
        "t_acked": max(r["t_acked"] for r in results),
        "cpu": sum(r["cpu"] for r in results),
        "errors": [e for r in results for e in r["errors"]],
    }


async def bare_phase(args: argparse.Namespace, fleet: Fleet, qos: int, bpid: int | None) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    conf = {"host": fleet.host, "port": fleet.port, "client_id": f"bench-{fleet.run}-bare-{qos}",
            "group": f"bench-{fleet.run}-bare", "qos": qos, "topic_prefix": fleet.topic_prefix,
            "expected": args.messages, "mqtt5": args.bare_mqtt5}
    sub = ctx.Process(target=bare_process, args=(conf, ready, results), daemon=True)
    sub.start()
    status, detail = ready.get(timeout=60)
    if status != "ready":
        raise RuntimeError(f"bare subscriber could not start: {detail}")
    pubs = Publishers(args, fleet, args.messages, qos, f"bare{qos}-")
    pubs.start()
    cpu = CpuWindow(None, bpid)
    cpu.start()
    pubs.go()
    loop = asyncio.get_running_loop()
    published = merge(await pubs.results_async())
    counted = await loop.run_in_executor(None, results.get, True, 600)
    usage = cpu.stop()
    await loop.run_in_executor(None, sub.join, 10)
    elapsed = counted["t_last"] - published["t_first"]
    rate = counted["count"] / elapsed if elapsed > 0 else 0.0
    return {"qos": qos, "received": counted["count"], "rate": rate, "elapsed": elapsed,
            "published": published, "sub_cpu": counted["cpu"] / max(elapsed, 1e-9), "usage": usage,
            "error": counted.get("error", "")}


@dataclass
class Probe:
    published: float
    found: float | None = None


class Prober:
    """Probe devices publish a reading every ``PROBE_INTERVAL`` in the same stream as the load;
    for each device one ``GET /api/devices/{id}/data?from=<oldest unseen probe>&to=<now>`` every
    ``PROBE_POLL`` finds the probes that have become queryable. Latency = the answer's arrival
    - the probe's publish (an upper bound, by up to one poll interval plus the GET itself)."""

    def __init__(self, client: Any, fleet: Fleet, qos: int, tag: str) -> None:
        self.client = client
        self.fleet = fleet
        self.qos = qos
        self.tag = tag
        self.samples: list[Probe] = []
        self.publishing = True
        self.sent = 0
        self.requests = 0
        self.lost = 0

    async def run(self) -> None:
        import aiomqtt

        async with aiomqtt.Client(self.fleet.host, self.fleet.port,
                                  identifier=f"bench-{self.fleet.run}-probe-{self.tag}") as mqtt:
            await asyncio.gather(*(self._device(mqtt, d) for d in self.fleet.probes))

    async def _device(self, mqtt: Any, device: str) -> None:
        outstanding: dict[int, Probe] = {}  # by timestamp in ns

        async def publish() -> None:
            seq = 0
            while self.publishing:
                ts_us = time.time_ns() // 1000
                probe = Probe(time.monotonic())
                await mqtt.publish(f"devices/{device}/telemetry",
                                   _payload(f"{self.tag}probe-".encode(), seq, ts_us), qos=self.qos)
                seq += 1
                self.sent += 1
                self.samples.append(probe)
                outstanding[ts_us * 1000] = probe
                await asyncio.sleep(PROBE_INTERVAL)

        publishing = asyncio.create_task(publish())
        url = f"/api/devices/{device}/data"
        while not publishing.done() or outstanding:
            await asyncio.sleep(PROBE_POLL)
            if not outstanding:
                continue
            oldest = min(outstanding)
            params = {"from": str(oldest // 1000), "to": str(time.time_ns() // 1000 + 1), "limit": "10000"}
            self.requests += 1
            response = await self.client.get(url, params=params, timeout=30)
            answered = time.monotonic()
            if response.status_code == 200:
                for reading in response.json()["readings"]:
                    probe = outstanding.pop(int(reading["timestamp_ns"]), None)
                    if probe is not None:
                        probe.found = answered
            for ts, probe in list(outstanding.items()):
                if answered - probe.published > PROBE_GIVE_UP:
                    del outstanding[ts]
                    self.lost += 1
        await publishing

    def latencies_ms(self) -> list[float]:
        return sorted((p.found - p.published) * 1000 for p in self.samples if p.found is not None)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# -- rules ---------------------------------------------------------------------------------------


ALERT_THRESHOLD = 500.0  # the alert probes' rule: temperature > this; the load never comes near


class AlertProber:
    """Reading-to-alert latency on the SSE stream, while the load runs.

    An SSE client follows ``GET /api/alerts/stream?rule_id=<the probe rule>``. Each alert probe
    device publishes a reading over the rule's threshold whose value (1000 + its sequence number)
    names it; once its ``raised`` notice has arrived (or after ``ALERT_GIVE_UP``), one under the
    threshold that resolves the alert; then, ``ALERT_INTERVAL`` later, the next. Waiting for the
    notice keeps a device's raising and clearing readings apart, so that no batch can reorder
    them. Latency = arrival of the ``raised`` notice carrying the value - the moment just before
    the reading was published. The probe readings go over the same broker, in the same stream as
    the load.
    """

    def __init__(self, client: Any, fleet: Fleet, rule_id: str, qos: int, tag: str) -> None:
        self.client = client
        self.fleet = fleet
        self.rule_id = rule_id
        self.qos = qos
        self.tag = tag
        self.publishing = True
        self.sent = 0  # readings published (raising and clearing)
        self.published: dict[tuple[str, float], float] = {}  # (device, value) -> publish time
        self.raised: dict[tuple[str, float], float] = {}  # (device, value) -> notice arrival
        self._arrived: dict[tuple[str, float], asyncio.Event] = {}
        self.resolved = 0
        self.error = ""

    async def run(self) -> None:
        import aiomqtt
        import httpx

        ready = asyncio.Event()

        async def follow() -> None:
            timeout = httpx.Timeout(10.0, read=None)
            async with self.client.stream("GET", "/api/alerts/stream", params={"rule_id": self.rule_id},
                                          timeout=timeout) as response:
                kind = ""
                async for line in response.aiter_lines():
                    arrived = time.monotonic()
                    if line.startswith("event:"):
                        kind = line.partition(":")[2].strip()
                        if kind == "ready":
                            ready.set()
                        elif kind == "dropped":
                            self.error = "the SSE client was dropped"
                            return
                    elif line.startswith("data:") and kind == "alert":
                        notice = json.loads(line.partition(":")[2])
                        if notice["kind"] == "raised":
                            key = (notice["device_id"], float(notice["value"]))
                            self.raised[key] = arrived
                            self._arrived.setdefault(key, asyncio.Event()).set()
                        elif notice["kind"] == "resolved":
                            self.resolved += 1

        following = asyncio.create_task(follow())
        try:
            await asyncio.wait_for(ready.wait(), 30)
            async with aiomqtt.Client(self.fleet.host, self.fleet.port,
                                      identifier=f"bench-{self.fleet.run}-alerts-{self.tag}") as mqtt:
                await asyncio.gather(*(self._device(mqtt, d) for d in self.fleet.alert_probes))
            give_up = time.monotonic() + ALERT_GIVE_UP
            while len(self.raised) < len(self.published) and time.monotonic() < give_up:
                if following.done():
                    break
                await asyncio.sleep(0.05)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            following.cancel()
            with contextlib.suppress(BaseException):
                await following

    async def _device(self, mqtt: Any, device: str) -> None:
        seq = 0
        topic = f"devices/{device}/telemetry"

        async def publish(value: float) -> None:
            body = json.dumps({"message_id": f"{self.tag}alert-{seq}-{value:g}",
                               "timestamp": time.time_ns() // 1000, "metrics": {"temperature": value}})
            await mqtt.publish(topic, body, qos=self.qos)
            self.sent += 1

        while self.publishing:
            key = (device, 1000.0 + seq)
            arrived = self._arrived.setdefault(key, asyncio.Event())
            self.published[key] = time.monotonic()
            await publish(key[1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), ALERT_GIVE_UP)
            await publish(0.0)
            await asyncio.sleep(ALERT_INTERVAL)
            seq += 1

    def latencies_ms(self) -> list[float]:
        return sorted((self.raised[k] - t) * 1000 for k, t in self.published.items() if k in self.raised)


def rule_set(fleet: Fleet, count: int) -> list[dict[str, Any]]:
    """``count`` rules over the fleet that the load never trips (so that what is measured is
    judging readings, not raising alerts), plus the alert probes' rule.

    Five fleet-wide rules, one per metric, select by glob (``b<run>-*``, three of them), by device
    type and by tag, so every selector path of the index is used. The rest each watch a slice of
    ten devices (``b<run>-0042?``) on one metric, cycling through the operators ``>``, ``outside``,
    ``rate_of_change``, ``<`` and ``zscore``. A reading (5 metrics) thus meets about 6 rules.
    """
    prefix = f"b{fleet.run}-"
    wide: list[dict[str, Any]] = [
        {"device_pattern": f"{prefix}*", "metric": "temperature", "op": ">", "threshold": 1e6},
        {"device_pattern": f"{prefix}*", "metric": "humidity", "op": "outside", "min": -1, "max": 1000},
        {"device_pattern": f"{prefix}*", "metric": "pressure", "op": "rate_of_change", "threshold": 1e9},
        {"device_type": "bench_sensor", "metric": "battery_level", "op": "zscore", "threshold": 50},
        {"tags": {"bench": fleet.run}, "metric": "co2", "op": "<", "threshold": -1},
    ]
    conditions: list[dict[str, Any]] = [
        {"metric": "temperature", "op": ">", "threshold": 1e6},
        {"metric": "humidity", "op": "outside", "min": -1, "max": 1000},
        {"metric": "pressure", "op": "rate_of_change", "threshold": 1e9},
        {"metric": "battery_level", "op": "<", "threshold": -1},
        {"metric": "co2", "op": "zscore", "threshold": 50},
    ]
    slices = max(1, len(fleet.devices) // 10)
    rules = [{"name": "bench alert probe", "device_pattern": f"{prefix}alert*", "metric": "temperature",
              "op": ">", "threshold": ALERT_THRESHOLD, "severity": "critical",
              "notification_channels": ["sse"]}]
    rules += [{"name": f"bench fleet {i}", "severity": "info", **r} for i, r in enumerate(wide[:count - 1])]
    for k in range(count - len(rules)):
        rules.append({"name": f"bench slice {k}", "device_pattern": f"{prefix}{k % slices:04d}?",
                      "severity": "warning", **conditions[k % len(conditions)]})
    return rules


async def each(client: Any, requests: list[tuple[str, str, dict[str, Any]]], ok: int,
               concurrency: int = 16) -> tuple[list[dict[str, Any]], float]:
    """Sends (method, url, body) requests, ``concurrency`` at a time; all must answer ``ok``."""
    answers: list[dict[str, Any]] = [{} for _ in requests]
    pending = iter(enumerate(requests))

    async def worker() -> None:
        for i, (method, url, body) in pending:
            response = await client.request(method, url, json=body, timeout=60)
            if response.status_code != ok:
                raise RuntimeError(f"{method} {url}: {response.status_code} {response.text[:300]}")
            answers[i] = response.json()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers, time.monotonic() - t0


async def platform_phase(
    args: argparse.Namespace, fleet: Fleet, client: Any, platform: Platform, rss: RssSampler,
    bpid: int | None, name: str, qos: int, messages: int, rate: float = 0.0, probes: bool = True,
    idle_give_up: float = IDLE_GIVE_UP, alert_rule: str | None = None, sinks: tuple[str, ...] = ("storage",),
) -> dict[str, Any]:
    """One phase; it is over when every sink in ``sinks`` has handled every reading published."""
    rss.label = name
    before = await scrape(client)
    base = before.get(STORED, 0.0)
    pubs = Publishers(args, fleet, messages, qos, f"{name}-", rate)
    pubs.start()
    prober = Prober(client, fleet, qos, name)
    alerter = AlertProber(client, fleet, alert_rule, qos, name) if alert_rule else None
    counters = [f'iot_sink_readings_total{{sink="{sink}"}}' for sink in sinks]
    bases = {key: before.get(key, 0.0) for key in counters}
    cpu = CpuWindow(platform.process.pid, bpid)
    cpu.start()
    go = pubs.go()
    probing = asyncio.create_task(prober.run()) if probes and fleet.probes else None
    alerting = asyncio.create_task(alerter.run()) if alerter else None
    results_task = asyncio.create_task(pubs.results_async())
    published: dict[str, Any] | None = None
    stored, t_done, last_progress = 0.0, 0.0, time.monotonic()
    last_stored: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    max_depth: dict[str, float] = {}
    backlog = 0.0  # messages the platform received but has not stored yet
    outcome = "complete"
    while True:
        await asyncio.sleep(POLL_METRICS)
        now = time.monotonic()
        scraped = await scrape(client)
        stored = scraped.get(STORED, 0.0) - base
        handled = min(scraped.get(key, 0.0) - bases[key] for key in counters)
        received = scraped.get(RECEIVED, 0.0)
        backlog = max(backlog, received - scraped.get(STORED, 0.0))
        for key, value in scraped.items():
            if key.startswith("iot_stream_queue_depth"):
                sink = key.partition('sink="')[2].rstrip('"}')
                max_depth[sink] = max(max_depth.get(sink, 0.0), value)
        if published is None and results_task.done():
            published = merge(results_task.result())
        if (stored, received, handled) != last_stored:
            last_stored, last_progress = (stored, received, handled), now
        if stored >= messages:
            prober.publishing = False  # the publishers' readings are in; let the probes finish
            if alerter is not None:
                alerter.publishing = False
        expected = messages + prober.sent + (alerter.sent if alerter else 0)
        probes_done = (probing is None or probing.done()) and (alerting is None or alerting.done())
        if published is not None and handled >= expected and probes_done:
            t_done = now
            break
        if published is not None and now - last_progress > idle_give_up:
            outcome = f"STALLED: {expected - handled:.0f} of {expected} readings not handled"
            t_done = last_progress
            break
        if now - go > args.time_cap:
            outcome = f"TIME CAP {args.time_cap:.0f}s: {expected - handled:.0f} of {expected} not handled"
            t_done = now
            break
    usage = cpu.stop()
    prober.publishing = False
    if alerter is not None:
        alerter.publishing = False
    for task in (probing, alerting):
        if task is not None:
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if published is None:
        published = merge(await results_task)
    after = await scrape(client)
    t0 = published["t_first"] or go
    elapsed = t_done - t0
    lat = prober.latencies_ms()
    alert_lat = alerter.latencies_ms() if alerter else []
    evaluations = 'iot_rule_evaluations_total{engine="rules"}'
    return {
        "alert_sent": alerter.sent if alerter else 0,
        "alerts": None if alerter is None else {
            "published": len(alerter.published), "raised": len(alerter.raised), "resolved": alerter.resolved,
            "p50": percentile(alert_lat, 0.5), "p99": percentile(alert_lat, 0.99),
            "max": alert_lat[-1] if alert_lat else math.nan, "error": alerter.error,
        },
        "evaluations": after.get(evaluations, 0.0) - before.get(evaluations, 0.0),
        "name": name, "qos": qos, "messages": messages, "offered_rate": rate, "stored": stored,
        "rate": stored / elapsed if elapsed > 0 else 0.0, "elapsed": elapsed,
        "publish_rate": published["sent"] / max(1e-9, published["t_sent"] - t0),
        "published": published, "outcome": outcome, "usage": usage,
        "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "lat_n": len(lat),
        "lat_max": lat[-1] if lat else math.nan, "probe_sent": prober.sent,
        "probe_requests": prober.requests, "probe_lost": prober.lost, "peak_rss_kb": rss.peaks.get(name, 0),
        "end_rss_kb": rss.now(),
        "counters": {
            **delta(after, before, "iot_readings_"), **delta(after, before, "iot_mqtt_"),
            **delta(after, before, "iot_sink_errors"), **delta(after, before, "iot_sink_retries"),
        },
        "max_depth": max_depth, "backlog": backlog, "sinks": sink_usage(before, after, elapsed),
        "publisher_cpu": published["cpu"] / max(elapsed, 1e-9),
    }


async def rules_comparison(
    args: argparse.Namespace, fleet: Fleet, client: Any, platform: Platform, rss: RssSampler,
    bpid: int | None, notes: list[str],
) -> list[dict[str, Any]]:
    """Rules off, then ``--rules`` rules on, then the same rules disabled: three phases of the same
    load, each over when storage and the rule engine have both handled every reading."""
    import aiomqtt

    qos, sinks = args.rules_qos, ("storage", "rules")
    async with aiomqtt.Client(fleet.host, fleet.port, identifier=f"bench-{fleet.run}-alerts-warm") as mqtt:
        for device in fleet.alert_probes:  # their DeviceActivated, outside any measured phase
            await mqtt.publish(f"devices/{device}/telemetry", json.dumps({"temperature": 0.0}), qos=1)
    await asyncio.sleep(1.0)
    phases = []
    log(f"rules off: QoS {qos}, {args.messages:,} readings ...")
    phases.append(await platform_phase(args, fleet, client, platform, rss, bpid, "rules-off", qos,
                                       args.messages, sinks=sinks))
    phases[-1]["rules"] = 0
    bodies = rule_set(fleet, args.rules)
    created, took = await each(client, [("POST", "/api/analytics/rules", b) for b in bodies], 201)
    notes.append(f"rules: {len(created):,} created in {took:.1f}s = {len(created) / took:,.0f}/s "
                 "(POST /api/analytics/rules, 16 concurrent)")
    log(notes[-1])
    # Alerts are timed at a sustainable rate when there is a paced phase: at saturation the
    # latency is that of draining the broker's backlog, and raising 10 alerts a second would
    # add event-store appends to what is meant to measure judging readings.
    probe_rule = created[0]["id"]
    log(f"rules on: {len(created):,} rules, QoS {qos}, {args.messages:,} readings ...")
    phases.append(await platform_phase(args, fleet, client, platform, rss, bpid, "rules-on", qos,
                                       args.messages, sinks=sinks,
                                       alert_rule=None if args.paced > 0 else probe_rule))
    phases[-1]["rules"] = len(created)
    if args.paced > 0 and phases[-1]["rate"] > 0:
        rate = phases[-1]["rate"] * args.paced
        log(f"rules on, paced at {rate:,.0f} msgs/s for {args.paced_seconds:g}s ...")
        phases.append(await platform_phase(args, fleet, client, platform, rss, bpid, "rules-on-paced", qos,
                                           int(rate * args.paced_seconds), rate=rate, sinks=sinks,
                                           alert_rule=probe_rule))
        phases[-1]["rules"] = len(created)
    _, took = await each(client, [("PATCH", f"/api/analytics/rules/{r['id']}", {"enabled": False})
                                  for r in created], 200)
    notes.append(f"rules: {len(created):,} disabled in {took:.1f}s (PATCH, 16 concurrent)")
    log(notes[-1])
    log(f"rules disabled: QoS {qos}, {args.messages:,} readings ...")
    phases.append(await platform_phase(args, fleet, client, platform, rss, bpid, "rules-off-again", qos,
                                       args.messages, sinks=sinks))
    phases[-1]["rules"] = 0
    for ph in phases:
        log(f"  {ph['name']}: {ph['rate']:,.0f} msgs/s, {ph['evaluations']:,.0f} rule evaluations; "
            f"{ph['outcome']}")
    return phases


STREAM_SETUPS = (("in-process", 0), ("Kafka, 1 storage worker", 1), ("Kafka, 2 storage workers", 2))


async def stream_comparison(args: argparse.Namespace) -> int:
    """``--stream kafka``: the same load through the in-process stream, then through Kafka with
    one and with two ``iot-platform worker --role storage`` processes. Each setup is a fresh
    platform on InfluxDB with its own devices (registered and activated outside the figures),
    a saturated QoS 1 phase and a paced one; on Kafka, ``serve --workers
    state,rules,projections,relay`` ingests and the workers store, each setup on topics and
    consumer groups of its own."""
    import httpx

    brokers = args.harness.get("IOT_TEST_KAFKA_BROKERS")
    if not brokers:
        log("--stream kafka needs IOT_TEST_KAFKA_BROKERS (tools/services.sh env)")
        return 1
    results: list[dict[str, Any]] = []
    exit_code = 0
    for label, storage_workers in STREAM_SETUPS:
        run = uuid.uuid4().hex[:5]
        fleet = Fleet(run, [f"b{run}-{i:05d}" for i in range(args.devices)],
                      [f"b{run}-probe{k}" for k in range(args.probes)], args.host, args.port)
        bpid = broker_pid(args.port) if args.host in ("127.0.0.1", "localhost") else None
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-stream-{run}-"))
        extra: dict[str, str] = {}
        serve_args: tuple[str, ...] = ()
        if storage_workers:
            extra = {
                "IOT_STREAMING__BACKEND": "kafka", "IOT_STREAMING__BROKERS": brokers,
                "IOT_STREAMING__TOPICS__SENSOR_DATA": f"bench-readings-{run}",
                "IOT_STREAMING__TOPICS__DOMAIN_EVENTS": f"bench-events-{run}",
                "IOT_STREAMING__TOPICS__DEAD_LETTER": f"bench-dead-{run}",
                "IOT_STREAMING__CONSUMER_GROUP": f"bench-{run}",
            }
            serve_args = ("--workers", "state,rules,projections,relay")
        log(f"{label}: run {run}, {args.devices:,} devices ...")
        platform = start_platform(args, run, workdir, args.harness, extra, serve_args)
        workers: list[subprocess.Popen[bytes]] = []
        rss = RssSampler(platform.process.pid)
        rss.start()
        WORKER_METRICS.clear()
        async with httpx.AsyncClient(base_url=platform.base_url, headers=platform.headers,
                                     limits=httpx.Limits(max_connections=args.register_concurrency + 8)) as client:
            try:
                await wait_ready(client, platform)
                env = platform_environment(args, run, workdir, args.harness,
                                           {**extra, "IOT_EVENTSTORE__MIGRATE_ON_START": "false",
                                            "IOT_SECURITY__ADMIN_API_KEY": platform.api_key})
                for i in range(storage_workers):
                    port = free_port()
                    with (workdir / f"worker-{i}.log").open("ab") as out:
                        workers.append(subprocess.Popen(
                            [str(BIN / "iot-platform"), "worker", "--role", "storage", "--metrics-port", str(port)],
                            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT))
                    WORKER_METRICS.append(f"http://127.0.0.1:{port}/metrics")
                give_up = time.monotonic() + 60
                while True:  # every worker answers its metrics
                    try:
                        await scrape(client)
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > give_up or any(w.poll() is not None for w in workers):
                            raise RuntimeError(f"a storage worker did not start (see {workdir})") from None
                        await asyncio.sleep(0.2)
                registered, reg_s, _ = await register(client, fleet, args.register_concurrency)
                log(f"  registered {registered:,} in {reg_s:.1f}s; activation ...")
                await platform_phase(args, fleet, client, platform, rss, bpid, "activation", 1, args.devices,
                                     probes=False, idle_give_up=300.0)
                saturated = await platform_phase(args, fleet, client, platform, rss, bpid, "saturated", 1,
                                                 args.messages)
                log(f"  saturated: {saturated['rate']:,.0f} msgs/s, p99 {fmt(saturated['p99'])} ms; "
                    f"{saturated['outcome']}")
                rate = saturated["rate"] * (args.paced or 0.5)
                paced = await platform_phase(args, fleet, client, platform, rss, bpid, "paced", 1,
                                             int(rate * args.paced_seconds), rate=rate)
                log(f"  paced at {rate:,.0f}/s: p50 {fmt(paced['p50'])} ms, p99 {fmt(paced['p99'])} ms; "
                    f"{paced['outcome']}")
                cpu_workers = sum(proc_cpu(w.pid) for w in workers)
                results.append({"label": label, "saturated": saturated, "paced": paced,
                                "worker_cpu_s": cpu_workers})
            except Exception as exc:
                log(f"{label} failed: {type(exc).__name__}: {exc}")
                exit_code = 1
            finally:
                rss.stop_event.set()
                for process in [*workers, platform.process]:
                    process.send_signal(signal.SIGTERM)
                for process in [*workers, platform.process]:
                    try:
                        process.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"bench_ingest --stream kafka: {args.devices:,} devices x {METRICS_PER_READING} metrics, "
          f"{args.messages:,} readings saturated at QoS 1, store influxdb, broker {args.broker}, "
          f"{os.cpu_count()} CPUs; baseline = the in-process stream in the same run")
    base = next((r["saturated"]["rate"] for r in results if r["label"] == "in-process"), math.nan)
    print(table(
        ["setup", "msgs/s", "vs in-process", "p50 ms", "p99 ms", "paced msgs/s", "paced p50 ms", "paced p99 ms",
         "outcome"],
        [[r["label"], fmt(r["saturated"]["rate"]), fmt(r["saturated"]["rate"] / base, 2), fmt(r["saturated"]["p50"]),
          fmt(r["saturated"]["p99"]), fmt(r["paced"]["rate"]), fmt(r["paced"]["p50"]), fmt(r["paced"]["p99"]),
          r["saturated"]["outcome"] if r["saturated"]["outcome"] != "complete" else r["paced"]["outcome"]]
         for r in results]))
    for r in results:
        u = r["saturated"]["usage"]
        print(f"  {r['label']}: saturated CPU (cores) platform {u['platform']:.2f}, broker {u['broker']:.2f}, "
              f"other processes (Kafka, workers, InfluxDB) {others(u, r['saturated']['publisher_cpu']):.2f}; "
              f"{r['saturated']['stored']:,.0f} stored in {r['saturated']['elapsed']:.1f}s")
    return exit_code


async def register(client: Any, fleet: Fleet, concurrency: int) -> tuple[int, float, int]:
    ids = fleet.devices + fleet.probes + fleet.alert_probes
    queue: asyncio.Queue[str] = asyncio.Queue()
    for d in ids:
        queue.put_nowait(d)
    failures: list[str] = []
    registered = 0

    async def worker() -> None:
        nonlocal registered
        while not queue.empty():
            device = queue.get_nowait()
            for attempt in range(5):
                try:
                    r = await client.post("/api/devices", json={
                        "device_id": device, "device_type": "bench_sensor", "tags": {"bench": fleet.run}},
                        timeout=60)
                except Exception as exc:
                    if attempt == 4:
                        failures.append(f"{device}: {exc!r}")
                    await asyncio.sleep(0.2)
                    continue
                if r.status_code in (201, 202, 409):
                    registered += 1
                    break
                if attempt == 4:
                    failures.append(f"{device}: {r.status_code} {r.text[:200]}")
                await asyncio.sleep(0.2)

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failures:
        log(f"registration failures ({len(failures)}): {failures[:3]}")
    return registered, time.monotonic() - t0, len(failures)


def count_points(workdir: Path) -> tuple[int, int] | None:
    """(points, distinct readings) in the embedded store, read after the platform stopped."""
    path = workdir / "ts.db"
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        points = db.execute("SELECT count(*) FROM points").fetchone()[0]
        readings = db.execute(
            "SELECT count(*) FROM (SELECT DISTINCT s.device_id, p.ts FROM points p "
            "JOIN series s ON s.series_id = p.series_id)").fetchone()[0]
        db.close()
        return int(points), int(readings)
    except sqlite3.Error as exc:
        log(f"could not count the embedded store's points: {exc}")
        return None


# -- report --------------------------------------------------------------------------------------


def fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |", line]
    for r in rows:
        out.append("| " + " | ".join(c.rjust(w) if i else c.ljust(w)
                                     for i, (c, w) in enumerate(zip(r, widths))) + " |")
    out.append(line)
    return "\n".join(out)


def print_rules(args: argparse.Namespace, phases: list[dict[str, Any]]) -> None:
    off = [ph["rate"] for ph in phases if not ph["rules"] and ph["rate"]]
    saturated = [ph for ph in phases if not ph["offered_rate"]]
    baseline = sum(off) / len(off) if off else math.nan
    print(f"\nrules on versus off (QoS {args.rules_qos}, {args.devices:,} devices; a phase ends when "
          "storage and the rule engine have both handled every reading; baseline = mean of the two "
          "phases without rules):")
    rows = []
    for ph in phases:
        readings = ph["stored"] or 1
        cost = 1 - ph["rate"] / baseline if ph["rules"] and baseline and ph in saturated else math.nan
        verdict = "" if not ph["rules"] or ph not in saturated else ("yes" if cost < TARGET_RULES_COST and ph["outcome"] == "complete"
                                               else "NO")
        rows.append([ph["name"], f"{ph['rules']:,}", fmt(ph["rate"]), fmt(ph["evaluations"] / max(ph["elapsed"], 1e-9)),
                     fmt(ph["evaluations"] / readings, 1), fmt(ph["p50"]), fmt(ph["p99"]),
                     f"{ph['usage']['platform']:.2f}", "-" if math.isnan(cost) else f"{cost:.1%}",
                     verdict or "-", ph["outcome"]])
    print(table(["phase", "rules", "msgs/s", "evaluations/s", "evals/reading", "stored p50 ms",
                 "stored p99 ms", "platform CPU", "cost", "cost < 30%?", "outcome"], rows))
    alerted = [ph for ph in phases if ph.get("alerts")]
    if alerted:
        print(f"\nreading-to-alert latency on the SSE stream (GET /api/alerts/stream; {args.alert_probes} "
              f"probe devices, each raising an alert {ALERT_INTERVAL:g}s after its last was cleared, in the same "
              "stream as the load):")
        print(table(["phase", "over-threshold readings", "raised notices", "resolved notices", "p50 ms",
                     "p99 ms", "max ms", "error"],
                    [[ph["name"], str(a["published"]), str(a["raised"]), str(a["resolved"]), fmt(a["p50"]),
                      fmt(a["p99"]), fmt(a["max"]), a["error"] or "-"]
                     for ph in alerted for a in [ph["alerts"]]]))


def mb(kb: int) -> float:
    return kb / 1024


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    harness = harness_env()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=10_000, help="simulated devices (default 10000)")
    p.add_argument("--messages", type=int, default=100_000,
                   help="readings per saturated phase, platform and bare alike (default 100000)")
    p.add_argument("--qos", default="1,0", help="comma list of phases' QoS, in order (default 1,0)")
    p.add_argument("--store", choices=("embedded", "influxdb"), default="embedded")
    p.add_argument("--publishers", type=int, default=2, help="publisher processes (default 2)")
    p.add_argument("--connections", type=int, default=4,
                   help="MQTT connections per publisher process (default 4)")
    p.add_argument("--window", type=int, default=1000,
                   help="unacknowledged QoS 1 publishes per connection (default 1000)")
    p.add_argument("--broker", default=harness.get("IOT_TEST_MQTT_URL", "mqtt://127.0.0.1:21883"),
                   help="mqtt://host:port (default: $IOT_TEST_MQTT_URL, the harness Mosquitto)")
    p.add_argument("--probes", type=int, default=2, help="latency probe devices (default 2)")
    p.add_argument("--paced", type=float, default=0.5,
                   help="latency phase at this fraction of the measured rate (0: none; default 0.5)")
    p.add_argument("--paced-seconds", type=float, default=8.0)
    p.add_argument("--time-cap", type=float, default=120.0, help="seconds per phase at most")
    p.add_argument("--register-concurrency", type=int, default=32)
    p.add_argument("--platform-env", action="append", default=[], metavar="IOT_KEY=VALUE",
                   help="extra setting for the platform process (repeatable)")
    p.add_argument("--bare-protocol", choices=("auto", "5", "3.1.1"), default="auto",
                   help="the bare subscriber's MQTT version (auto: the platform's, 5 unless "
                   "--platform-env IOT_MQTT__PROTOCOL=3.1.1); on 5 it uses a $share group as the "
                   "platform does")
    p.add_argument("--profile", metavar="PATH",
                   help="run the platform under cProfile, stats to PATH (slows it: figures not valid)")
    p.add_argument("--rules", type=int, default=1000,
                   help="rules for the rules-on/off comparison (0: skip it; default 1000)")
    p.add_argument("--rules-qos", type=int, choices=(0, 1), default=1, help="QoS of the rules phases")
    p.add_argument("--alert-probes", type=int, default=2,
                   help="devices timing reading-to-alert on the SSE stream (default 2)")
    p.add_argument("--stream", choices=("inprocess", "kafka"), default="inprocess",
                   help="kafka: compare the in-process stream with Kafka and 1 and 2 storage workers "
                   "(InfluxDB; --devices defaults to 1000 then)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (platform log, databases)")
    args = p.parse_args(argv)
    if args.stream == "kafka":
        args.store = "influxdb"
        if "--devices" not in (argv if argv is not None else sys.argv):
            args.devices = 1000
    args.qos_list = [int(q) for q in args.qos.split(",") if q.strip()]
    if any(q not in (0, 1) for q in args.qos_list):
        p.error("--qos takes 0 and/or 1")
    m = re.fullmatch(r"mqtt://([^:/]+):(\d+)/?", args.broker)
    if not m:
        p.error("--broker: mqtt://host:port")
    args.host, args.port = m.group(1), int(m.group(2))
    if args.store == "influxdb" and "IOT_TEST_INFLUX_URL" not in harness:
        p.error("--store influxdb needs IOT_TEST_INFLUX_* (tools/services.sh env)")
    args.harness = harness
    platform_protocol = "5"
    for item in args.platform_env:
        key, _, value = item.partition("=")
        if key.upper() == "IOT_MQTT__PROTOCOL" and value in ("3.1.1", "5"):
            platform_protocol = value
    args.bare_mqtt5 = (platform_protocol if args.bare_protocol == "auto" else args.bare_protocol) == "5"
    return args


async def main_async(args: argparse.Namespace) -> int:
    import httpx

    run = uuid.uuid4().hex[:5]
    fleet = Fleet(run, [f"b{run}-{i:05d}" for i in range(args.devices)],
                  [f"b{run}-probe{k}" for k in range(args.probes)], args.host, args.port,
                  [f"b{run}-alert{k}" for k in range(args.alert_probes if args.rules else 0)])
    bpid = broker_pid(args.port) if args.host in ("127.0.0.1", "localhost") else None
    log(f"run {run}: {args.devices:,} devices, {args.messages:,} readings per phase, QoS {args.qos}, "
        f"store {args.store}, broker {args.broker} (pid {bpid}), {args.publishers} publisher "
        f"processes x {args.connections} connections, {os.cpu_count()} CPUs")

    # 1. bare baselines, before the platform exists
    bare: dict[int, dict[str, Any]] = {}
    for qos in args.qos_list:
        log(f"bare subscriber, QoS {qos} ...")
        bare[qos] = await bare_phase(args, fleet, qos, bpid)
        b = bare[qos]
        log(f"  bare QoS {qos}: {b['received']:,} received in {b['elapsed']:.2f}s = {b['rate']:,.0f} msgs/s "
            f"(publishers: {b['published']['sent']:,} sent at "
            f"{b['published']['sent'] / max(1e-9, b['published']['t_sent'] - b['published']['t_first']):,.0f}/s)")

    # 2. the platform
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-ingest-{run}-"))
    platform = start_platform(args, run, workdir, args.harness)
    rss = RssSampler(platform.process.pid)
    rss.start()
    mem: dict[str, int] = {}
    timeline: list[tuple[str, float, int]] = []  # (moment, readings stored so far, RSS kB)

    async def checkpoint(label: str) -> None:
        stored_so_far = (await scrape(client)).get(STORED, 0.0)
        timeline.append((label, stored_so_far, rss.now()))

    phases: list[dict[str, Any]] = []
    rule_phases: list[dict[str, Any]] = []
    notes: list[str] = []
    exit_code = 0
    limits = httpx.Limits(max_connections=args.register_concurrency + 8)
    async with httpx.AsyncClient(base_url=platform.base_url, headers=platform.headers, limits=limits) as client:
        try:
            t = time.monotonic()
            await wait_ready(client, platform)
            log(f"platform ready in {time.monotonic() - t:.1f}s at {platform.base_url} (pid "
                f"{platform.process.pid}, dir {workdir})")
            mem["started"] = rss.now()
            await checkpoint("started")

            rss.label = "registration"
            log(f"registering {len(fleet.devices) + len(fleet.probes) + len(fleet.alert_probes):,} devices ...")
            cpu = CpuWindow(platform.process.pid, None)
            cpu.start()
            registered, reg_s, reg_failed = await register(client, fleet, args.register_concurrency)
            reg_cpu = cpu.stop()
            mem["registered"] = rss.now()
            await checkpoint(f"{registered:,} devices registered")
            notes.append(f"registration: {registered:,} devices in {reg_s:.1f}s = {registered / reg_s:,.0f}/s "
                         f"(POST /api/devices, {args.register_concurrency} concurrent; {reg_failed} failed; "
                         f"platform CPU {reg_cpu['platform']:.0%} of a core)")
            log(notes[-1])

            # 3. activation: every device's first reading
            log("activation: one reading per device ...")
            act = await platform_phase(args, fleet, client, platform, rss, bpid, "activation", 1,
                                       args.devices, probes=False, idle_give_up=300.0)
            # the probe devices' first readings, outside any measured phase
            prober = Prober(client, fleet, 1, "warm")
            prober.publishing = True
            warm = asyncio.create_task(prober.run())
            await asyncio.sleep(0.5)
            prober.publishing = False
            await warm
            mem["activated"] = rss.now()
            await checkpoint("all devices activated")
            notes.append(f"activation: the first reading of {args.devices:,} devices stored in "
                         f"{act['elapsed']:.1f}s = {act['rate']:,.0f} msgs/s (each appends DeviceActivated "
                         f"to the event store); {act['outcome']}")
            log(notes[-1])

            # 4. saturated phases (+ paced latency phases)
            for qos in args.qos_list:
                log(f"platform, QoS {qos}, {args.messages:,} readings as fast as possible ...")
                ph = await platform_phase(args, fleet, client, platform, rss, bpid, f"qos{qos}", qos,
                                          args.messages)
                ph["bare"] = bare[qos]
                phases.append(ph)
                await checkpoint(f"after QoS {qos} saturated")
                log(f"  {ph['stored']:,.0f} stored in {ph['elapsed']:.2f}s = {ph['rate']:,.0f} msgs/s, "
                    f"p50 {fmt(ph['p50'])} ms, p99 {fmt(ph['p99'])} ms; {ph['outcome']}")
                if args.paced > 0 and ph["rate"] > 0:
                    rate = ph["rate"] * args.paced
                    n = int(rate * args.paced_seconds)
                    log(f"platform, QoS {qos}, paced at {rate:,.0f} msgs/s for {args.paced_seconds:g}s ...")
                    pc = await platform_phase(args, fleet, client, platform, rss, bpid,
                                              f"qos{qos}-paced", qos, n, rate=rate)
                    phases.append(pc)
                    await checkpoint(f"after QoS {qos} paced")
                    log(f"  p50 {fmt(pc['p50'])} ms, p99 {fmt(pc['p99'])} ms ({pc['lat_n']} probes); "
                        f"{pc['outcome']}")
            if args.rules:
                rule_phases = await rules_comparison(args, fleet, client, platform, rss, bpid, notes)
                await checkpoint("after the rules phases")
            mem["end"] = rss.now()
            mem["hwm"] = proc_status(platform.process.pid, "VmHWM")
            final = await scrape(client)
        except Exception as exc:
            log(f"benchmark failed: {type(exc).__name__}: {exc}")
            exit_code = 1
            final = {}
        finally:
            rss.stop_event.set()
            # uvicorn re-raises the signal after its graceful stop; under cProfile, SIGINT
            # (KeyboardInterrupt) still lets the profile be written, SIGTERM would not.
            platform.process.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
            try:
                platform.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log("platform did not stop within 60s of SIGTERM; killed")
                platform.process.kill()
                platform.process.wait()

    # 5. report
    print()
    print(f"bench_ingest run {run}: {args.devices:,} devices x {METRICS_PER_READING} metrics, "
          f"{args.messages:,} readings per phase, store {args.store}, broker {args.broker}, "
          f"{os.cpu_count()} CPUs; {args.publishers}x{args.connections} publisher connections"
          + (f"; platform env {' '.join(args.platform_env)}" if args.platform_env else ""))
    peak_all = max(rss.peaks.values(), default=0)
    headers = ["phase", "msgs/s (platform)", "points/s", "bare msgs/s", "ratio", "p50 ms", "p99 ms",
               "peak RSS MB", "target met?"]
    rows = []
    for ph in phases:
        if "bare" not in ph:
            continue
        ratio = ph["rate"] / ph["bare"]["rate"] if ph["bare"]["rate"] else math.nan
        misses = []
        if not ratio >= TARGET_RATIO:
            misses.append("ratio<0.5")
        if args.store == "embedded" and not ph["rate"] >= TARGET_RATE:
            misses.append("rate<10k")
        if args.devices >= 10_000 and not mb(peak_all) < TARGET_RSS_MB:
            misses.append("RSS>=300MB")
        if ph["outcome"] != "complete":
            misses.append("incomplete")
        if args.devices < 10_000:
            misses.append("(RSS target needs 10k devices)")
        verdict = "yes" if not misses else "NO: " + ", ".join(misses)
        rows.append([f"QoS {ph['qos']} ({args.store})", fmt(ph["rate"]), fmt(ph["rate"] * METRICS_PER_READING),
                     fmt(ph["bare"]["rate"]), fmt(ratio, 2), fmt(ph["p50"]), fmt(ph["p99"]),
                     fmt(mb(ph["peak_rss_kb"]), 1), verdict])
    if rows:
        print(table(headers, rows))
    paced = [ph for ph in phases if "bare" not in ph]
    if paced:
        print("\nlatency at a sustainable rate (publishers paced at "
              f"{args.paced:.0%} of the measured platform rate, {args.paced_seconds:g}s):")
        print(table(["phase", "offered msgs/s", "stored msgs/s", "p50 ms", "p99 ms", "max ms", "probes",
                     "peak RSS MB", "outcome"],
                    [[ph["name"], fmt(ph["offered_rate"]), fmt(ph["rate"]), fmt(ph["p50"]), fmt(ph["p99"]),
                      fmt(ph["lat_max"]), str(ph["lat_n"]), fmt(mb(ph["peak_rss_kb"]), 1), ph["outcome"]]
                     for ph in paced]))
    if rule_phases:
        print_rules(args, rule_phases)
    print("\ndetails per phase:")
    for qos, b in bare.items():
        pub = b["published"]
        print(f"  bare QoS {qos}: {b['received']:,}/{args.messages:,} received in {b['elapsed']:.2f}s; "
              f"publishers sent {pub['sent']:,} in {pub['t_sent'] - pub['t_first']:.2f}s; CPU (cores): subscriber "
              f"{b['sub_cpu']:.2f}, broker {b['usage']['broker']:.2f}, publishers "
              f"{pub['cpu'] / max(1e-9, b['usage']['wall']):.2f}, other processes "
              f"{others(b['usage'], b['sub_cpu'], pub['cpu'] / max(1e-9, b['usage']['wall'])):.2f}"
              + (f"; errors {pub['errors'][:2]}" if pub["errors"] else "") + (f"; {b['error']}" if b["error"] else ""))
    for ph in phases + rule_phases:
        u, pub = ph["usage"], ph["published"]
        print(f"  {ph['name']}: {ph['stored']:,.0f}/{ph['messages'] + ph['probe_sent']:,} stored in "
              f"{ph['elapsed']:.2f}s ({ph['outcome']}); publishers sent {pub['sent']:,} at "
              f"{ph['publish_rate']:,.0f}/s; CPU (cores): platform {u['platform']:.2f}, broker "
              f"{u['broker']:.2f}, publishers {ph['publisher_cpu']:.2f}, bench {u['bench']:.2f}, other "
              f"processes {others(u, ph['publisher_cpu']):.2f}; "
              f"latency probes {ph['lat_n']} ({ph['probe_requests']} GETs"
              + (f", {ph['probe_lost']} never found" if ph["probe_lost"] else "") + "); end RSS "
              f"{mb(ph['end_rss_kb']):.1f} MB; most received-not-stored {ph['backlog']:,.0f}; "
              "deepest stream queue (readings): "
              + ", ".join(f"{k} {v:,.0f}" for k, v in ph["max_depth"].items()))
        interesting = {k: v for k, v in ph["counters"].items() if "accepted" not in k}
        if interesting:
            print(f"      counters: {json.dumps(interesting)}")
        for sink, text in ph["sinks"].items():
            print(f"      sink {sink}: {text}")
        if pub["errors"]:
            print(f"      publisher errors: {pub['errors'][:3]}")
    for note in notes:
        print(f"  {note}")
    if mem:
        print(f"  platform RSS MB: started {mb(mem.get('started', 0)):.1f}, after registration "
              f"{mb(mem.get('registered', 0)):.1f}, after activation {mb(mem.get('activated', 0)):.1f}, "
              f"end {mb(mem.get('end', 0)):.1f}; peak {mb(peak_all):.1f} "
              f"({max(rss.peaks, key=lambda k: rss.peaks[k], default='-')}); VmHWM {mb(mem.get('hwm', 0)):.1f}")
        print("  peak RSS MB by phase: " + ", ".join(f"{k} {mb(v):.1f}" for k, v in rss.peaks.items()))
    if timeline:
        print("\nplatform memory against readings stored (RSS sampled every 50 ms; VmHWM at the end "
              f"{mb(mem.get('hwm', 0)):.1f} MB):")
        print(table(["moment", "readings stored", "RSS MB"],
                    [[label, fmt(n), fmt(mb(kb), 1)] for label, n, kb in timeline]))
    total_stored = final.get(STORED, 0.0)
    print(f"  readings stored over the run (platform counter): {total_stored:,.0f}")
    if args.store == "embedded":
        counted = count_points(workdir)
        if counted is not None:
            points, readings = counted
            single = len(fleet.alert_probes) + sum(ph["alert_sent"] for ph in rule_phases) if rule_phases else 0
            ok = points == (readings - single) * METRICS_PER_READING + single and readings == total_stored
            print(f"  embedded store after the run: {points:,} points in {readings:,} distinct readings "
                  f"({'= ' if ok else '!= '}{METRICS_PER_READING} x counter"
                  + (f", less 4 for each of the {single:,} one-metric alert probe readings)" if single else ")"))
    text = platform.log_path.read_text(errors="replace")
    bad = [line for line in text.splitlines() if re.search(r"WARNING|ERROR|CRITICAL|Traceback", line)]
    print(f"  platform log: {len(text.splitlines())} lines, {len(bad)} warning/error lines"
          + (":" if bad else ""))
    for line in bad[:15]:
        print(f"      {line[:300]}")
    if args.keep:
        print(f"  kept: {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


def main() -> int:
    args = parse_args()
    if args.stream == "kafka":
        return asyncio.run(stream_comparison(args))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

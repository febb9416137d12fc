#!/usr/bin/env python3
"""CoAP ingestion benchmark: CBOR telemetry requests a second, end to end, against a bare server.

Everything runs in one invocation, on loopback:

1. **Bare baseline.** A bare aiocoap server (a separate process) answers 2.01 to every
   ``POST /devices/{id}/telemetry`` after decoding its CBOR, and does nothing else.
2. **Platform.** ``iot-platform serve`` in a fresh temp dir (SQLite event store, embedded
   time-series store, CoAP on a free UDP port, ``api.log_level=warning``). ``--devices`` devices
   are registered over REST and each sends one reading (activation), outside the figures.
3. **Load.** ``--clients`` simulated devices, each a stop-and-wait CoAP client as constrained
   devices are: one confirmable POST of a CBOR reading (5 metrics, a message id and a
   timestamp), then the next once the 2.01 is in, for ``--requests`` requests in all. The
   requests are built by hand (RFC 7252), so the load generator shares no code with aiocoap.
   A separate response (an empty ACK, then the answer) is acknowledged, as a device would.
   Latency = the 2.01's arrival - the moment before its request was sent.

The platform's storage counter (``iot_sink_readings_total{sink="storage"}``) is read at the end
to check that every request was stored once. The platform gets a fresh admin API key for the run
(``security.admin_api_key``), sent as ``Authorization: Bearer`` on every REST and /metrics
request. Tables go to stdout, progress to stderr::

    .venv/bin/python -m tools.bench_coap                       # 1,000 devices, 20,000 requests
    .venv/bin/python -m tools.bench_coap --clients 16 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import cbor2
import httpx

from tools.harness import (
    LOG_NAME,
    clean_env,
    fmt,
    free_port,
    free_udp_port,
    log,
    new_api_key,
    percentile,
    scrape,
    serve,
    stop,
    table,
    wait_ready,
)

STORED = 'iot_sink_readings_total{sink="storage"}'


def request(message_id: int, token: bytes, device: str, payload: bytes) -> bytes:
    """A confirmable POST to /devices/{device}/telemetry, content-format 60 (CBOR)."""
    header = struct.pack("!BBH", 0x40 | len(token), 0x02, message_id)
    options, last = b"", 0
    for number, value in ((11, b"devices"), (11, device.encode()), (11, b"telemetry"), (12, bytes([60]))):
        delta, last = number - last, number
        length = len(value)
        ext = b""
        if length >= 13:  # extended option length
            ext, length = bytes([length - 13]), 13
        options += bytes([(delta << 4) | length]) + ext + value
    return header + token + options + b"\xff" + payload


def reading(tag: str, device: str, seq: int) -> bytes:
    k = seq % 97
    return cbor2.dumps({"message_id": f"{tag}{device}-{seq}", "timestamp": time.time_ns() // 1000,
                        "metrics": {"temperature": 20 + k / 10, "humidity": 40 + k / 5, "pressure": 1010 + k / 20,
                                    "battery_level": 100 - k / 10, "co2": 400 + k}})


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0


class _Client(asyncio.DatagramProtocol):
    """One simulated device: stop-and-wait, retransmitting a lost request after 2 s."""

    def __init__(self, tag: str, devices: list[str], count: int, result: Result, done: asyncio.Future[None]) -> None:
        self.tag, self.devices, self.left, self.result, self.done = tag, devices, count, result, done
        self.mid = random.randrange(65536)
        self.seq = 0
        self.token = os.urandom(4)
        self.sent_at = 0.0
        self.datagram = b""
        self.retry: asyncio.TimerHandle | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # what create_datagram_endpoint gives
        self._next()

    def _next(self) -> None:
        if self.left == 0:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.left -= 1
        self.mid = (self.mid + 1) % 65536
        self.seq += 1
        device = self.devices[self.seq % len(self.devices)]
        self.datagram = request(self.mid, self.token, device, reading(self.tag, device, self.seq))
        self.sent_at = time.perf_counter()
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.transport.sendto(self.datagram)
        self.retry = asyncio.get_running_loop().call_later(2.0, self._resend)

    def _resend(self) -> None:
        self.result.errors["retransmitted"] = self.result.errors.get("retransmitted", 0) + 1
        self._send()

    def datagram_received(self, data: bytes, addr: object) -> None:
        mtype, code = (data[0] >> 4) & 0b11, data[1]
        if mtype == 0:  # a separate confirmable response: acknowledge it
            assert self.transport is not None
            self.transport.sendto(struct.pack("!BBH", 0x60, 0, struct.unpack("!H", data[2:4])[0]))
        if code == 0:
            return  # an empty ACK: the answer follows
        token = data[4:4 + (data[0] & 0x0F)]
        if token != self.token:
            return
        if self.retry is not None:
            self.retry.cancel()
        if code == 0x41:
            self.result.latencies.append((time.perf_counter() - self.sent_at) * 1000)
        else:
            name = f"{code >> 5}.{code & 0x1F:02d}"
            self.result.errors[name] = self.result.errors.get(name, 0) + 1
        self._next()


async def load(port: int, devices: list[str], clients: int, requests: int, tag: str) -> Result:
    """``tag`` keeps each phase's message ids apart (a repeated id is a duplicate, not stored)."""
    loop = asyncio.get_running_loop()
    result = Result()
    dones = []
    transports = []
    result.started = time.perf_counter()
    for i in range(clients):
        done: asyncio.Future[None] = loop.create_future()
        share = requests // clients + (1 if i < requests % clients else 0)
        client = functools.partial(_Client, f"{tag}{i}-", devices[i::clients] or devices, share, result, done)
        transport, _ = await loop.create_datagram_endpoint(client, remote_addr=("127.0.0.1", port))
        transports.append(transport)
        dones.append(done)
    await asyncio.gather(*dones)
    result.ended = time.perf_counter()
    for transport in transports:
        transport.close()
    return result


BARE_SERVER = """
import asyncio, sys, cbor2, aiocoap, aiocoap.resource as resource
from aiocoap.numbers.codes import Code
class Devices(resource.Resource, resource.PathCapable):
    async def render(self, request):
        cbor2.loads(request.payload)
        return aiocoap.Message(code=Code.CREATED, payload=b"stored")
async def main():
    site = resource.Site(); site.add_resource(["devices"], Devices())
    await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()
asyncio.run(main())
"""


async def main_async(args: argparse.Namespace) -> int:
    devices = [f"c{os.getpid() % 1000:03d}-{i:05d}" for i in range(args.devices)]
    rows: list[list[str]] = []
    # 1. the bare server
    port = free_udp_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
        log(f"bare aiocoap server: {args.requests:,} requests from {args.clients} clients ...")
        b = await load(port, devices, args.clients, args.requests, "bare")
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait(timeout=30)
    bare_rate = len(b.latencies) / (b.ended - b.started)
    rows.append(["bare aiocoap server", fmt(bare_rate), "1.00", fmt(percentile(b.latencies, 0.5), 1),
                 fmt(percentile(b.latencies, 0.99), 1), str(b.errors or "-")])
    # 2. the platform
    workdir = Path(tempfile.mkdtemp(prefix="bench-coap-"))
    http, coap = free_port(), free_udp_port()
    api_key = new_api_key()
    env = clean_env()
    env.update({"IOT_EVENTSTORE__URL": f"sqlite:///{workdir}/iot.db", "IOT_TIMESERIES__URL": f"sqlite:///{workdir}/ts.db",
                "IOT_COAP__PORT": str(coap), "IOT_MQTT__BROKER_URL": f"mqtt://127.0.0.1:{free_port()}",
                "IOT_LORAWAN__ENABLED": "false", "IOT_API__LOG_LEVEL": "warning",
                "IOT_SECURITY__ADMIN_API_KEY": api_key})
    platform = serve(workdir, http, env)
    exit_code = 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}", timeout=60,
                                     headers={"Authorization": f"Bearer {api_key}"}) as api:
            await wait_ready(api, platform, workdir / LOG_NAME)
            log(f"registering {len(devices):,} devices ...")
            pending = iter(devices)

            async def register() -> None:
                for device in pending:
                    response = await api.post("/api/devices", json={"device_id": device, "device_type": "coap_sensor",
                                                                   "protocol": "coap"})
                    if response.status_code not in (201, 409):
                        raise RuntimeError(f"registering {device}: {response.status_code} {response.text[:200]}")

            await asyncio.gather(*(register() for _ in range(16)))
            log("activation: one reading per device ...")
            await load(coap, devices, min(args.clients, len(devices)), len(devices), "activation")
            before = (await scrape(api)).get(STORED, 0.0)
            log(f"platform: {args.requests:,} requests from {args.clients} clients ...")
            p = await load(coap, devices, args.clients, args.requests, "load")
            give_up = time.monotonic() + 60
            while (stored := (await scrape(api)).get(STORED, 0.0) - before) < len(p.latencies):
                if time.monotonic() > give_up:
                    break
                await asyncio.sleep(0.1)
    except Exception as exc:
        log(f"benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        stop(platform, timeout=60)
    rate = len(p.latencies) / (p.ended - p.started)
    rows.append(["iot-platform serve", fmt(rate), fmt(rate / bare_rate, 2), fmt(percentile(p.latencies, 0.5), 1),
                 fmt(percentile(p.latencies, 0.99), 1), str(p.errors or "-")])
    print(f"\nbench_coap: {args.requests:,} confirmable CBOR POSTs (5 metrics) from {args.clients} stop-and-wait "
          f"clients over {len(devices):,} devices, loopback, {os.cpu_count()} CPUs; baseline = a bare aiocoap "
          "server in the same run")
    print(table(["server", "requests/s", "vs bare", "p50 ms", "p99 ms", "errors"], rows))
    print(f"  stored by the platform: {stored:,.0f} of {len(p.latencies):,} answered 2.01"
          + ("" if stored == len(p.latencies) else "  (MISMATCH)"))
    if stored != len(p.latencies):
        exit_code = 1
    return exit_code


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--clients", type=int, default=64, help="concurrent stop-and-wait clients (default 64)")
    p.add_argument("--requests", type=int, default=20_000)
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

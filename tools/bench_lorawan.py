#!/usr/bin/env python3
"""LoRaWAN network server benchmark: the uplink codec in process, then uplinks a second end to end.

Everything runs in one invocation, on loopback:

1. **Codec (in process, no I/O).** ``--frames`` prebuilt LoRaWAN 1.0.x unconfirmed uplinks
   (ABP, ``--devices`` sessions, increasing counters, a 15-byte Cayenne LPP payload of 4
   values) go through the network server's path: ``phy.parse``, ``counter_candidates``, the MIC
   check (``phy.data_mic``), ``phy.crypt_payload`` and ``codecs.cayenne_lpp``. Each stage is also
   timed alone over the same frames. Baseline in the same run: the bare AES-CMAC
   (``cryptography``'s CMAC) over the same B0 + MHDR..FRMPayload bytes, which the MIC check
   cannot go below.
2. **Bare baseline.** A bare asyncio UDP server (a separate process) answers PUSH_ACK to every
   GWMP PUSH_DATA after json-decoding its body and base64-decoding each rxpk, and does nothing
   else. It is driven by the same sender as the platform, saturated then paced.
3. **Platform.** ``iot-platform serve`` in a fresh temp dir on embedded defaults (SQLite event
   store and time-series store, the embedded MQTT broker on a free port, CoAP off, LoRaWAN on a
   free UDP port, ``api.log_level=warning``, ``lorawan.deduplication_ms=--dedup-ms``).
   ``--gateways`` gateways and ``--devices`` ABP devices (codec ``cayenne_lpp``) are registered
   over REST and each device sends one uplink (activation), outside the figures.
4. **Saturated, closed loop.** ``--uplinks`` uplinks over the devices, each device with at
   most one uplink in flight, as a real device's uplinks are seconds apart: its next uplink
   goes once the reading of its last one is on a WebSocket (``/api/ws?device=...``, one
   connection for all devices), or after 10 s (counted lost). Ready devices' frames go out
   together, up to ``--per-push`` rxpk per PUSH_DATA, every PUSH_DATA sent by each gateway (each
   frame is heard by all of them; the copies are gathered by the deduplication). Each gateway
   keeps at most ``--window`` PUSH_DATA awaiting their PUSH_ACK; one unanswered after 2 s is
   counted and not sent again (packet forwarders do not retransmit). Uplinks/s = the accepted
   readings / (the first ``/metrics`` scrape, every 0.1 s, showing
   ``iot_readings_accepted_total{protocol="lorawan"}`` up by ``--uplinks`` - the first send);
   the frame outcome counters (``iot_lorawan_frames_total{outcome=...}``) are printed, and any
   refused frame is a failure. Reading latency (sent -> on the WebSocket) is timed too.
5. **Paced.** ``--paced`` uplinks at ``--rate`` a second, one rxpk per PUSH_DATA, from the
   first ``--probes`` devices, each followed by an SSE client on
   ``GET /api/devices/{id}/stream``. Latency = the arrival of the ``reading`` event carrying
   the uplink's ``f_cnt`` - the moment before the PUSH_DATA was sent; it includes the
   deduplication window (the frame is held ``--dedup-ms`` before it is handled). PUSH_ACK round
   trips are timed in every phase, the bare server's being the baseline.
6. **Open loop.** ``--open-uplinks`` uplinks round robin, fire and forget (only the PUSH_ACK
   window holds the sender back), so that each device has several frames in the platform's
   backlog at once: an overload, where frames must still not be refused.

``--env IOT_...=VALUE`` passes more settings to the platform. The platform gets a fresh admin API
key for the run (``security.admin_api_key``, unless ``--env IOT_SECURITY__ADMIN_API_KEY=...``
gives one), sent as ``Authorization: Bearer`` on every REST, /metrics, SSE and WebSocket request.
The exit status is 1 if a frame was refused, a reading is missing or the platform log has errors.

The generator builds frames with ``phy``'s functions (the codec under test is also the one the
devices use; ``tests/unit/test_lorawan_frames.py`` checks it against the independent
simulator ``tests/lorawan_sim.py``).
Tables go to stdout, progress to stderr::

    .venv/bin/python -m tools.bench_lorawan                       # 200 devices, 10,000 uplinks, 2 gateways
    .venv/bin/python -m tools.bench_lorawan --gateways 1 --dedup-ms 0 --uplinks 5000
    .venv/bin/python -m tools.bench_lorawan --env IOT_LORAWAN__GATEWAY_CACHE_SECONDS=100000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from iot_platform.domain.lorawan.counters import CounterVerdict, counter_candidates
from iot_platform.presentation.lorawan import phy
from iot_platform.presentation.lorawan.codecs import cayenne_lpp
from tools import harness
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
    wait_ready,
)

ACCEPTED = 'iot_readings_accepted_total{protocol="lorawan"}'
FRAMES = "iot_lorawan_frames_total{outcome="
PACKETS = "iot_lorawan_gateway_packets_total{kind="
NOT_REFUSED = {"accepted", "gathered_copy", "downlink_sent", "downlink_rx1", "downlink_rx2"}
"""Outcomes of frames that were taken; any other outcome of an uplink here is a refusal."""
ACK_TIMEOUT = 2.0
T = TypeVar("T")


# -- devices and frames ------------------------------------------------------------------------


@dataclass
class Device:
    device_id: str
    dev_eui: str
    dev_addr: str
    nwk_s_key: bytes
    app_s_key: bytes
    f_cnt: int = 0
    """The last counter sent."""


def make_devices(count: int, run: str) -> list[Device]:
    devices = []
    for i in range(count):
        seed = hashlib.sha256(f"{run}-{i}".encode()).digest()
        devices.append(Device(
            device_id=f"lw{run}-{i:05d}", dev_eui=f"70b3d5{run[-4:].zfill(4)}{i:06x}",
            dev_addr=f"{0x01000000 + i:08x}", nwk_s_key=seed[:16], app_s_key=seed[16:]))
    return devices


def lpp(seq: int) -> bytes:
    """Cayenne LPP: temperature (ch 1), humidity (ch 2), barometer (ch 3), analog input (ch 4)."""
    k = seq % 97
    return (bytes([1, 0x67]) + struct.pack(">h", 200 + k) + bytes([2, 0x68, 80 + k // 2])
            + bytes([3, 0x73]) + struct.pack(">H", 10100 + k) + bytes([4, 0x02]) + struct.pack(">h", 300 + k))


def uplink(device: Device, f_cnt: int, f_port: int = 1) -> bytes:
    """An unconfirmed data uplink: MHDR 0x40, DevAddr (LE), FCtrl 0, FCnt (16 bits LE), FPort,
    the encrypted FRMPayload, the MIC."""
    signed = (bytes([0x40]) + bytes.fromhex(device.dev_addr)[::-1] + struct.pack("<BH", 0, f_cnt & 0xFFFF)
              + bytes([f_port]) + phy.crypt_payload(device.app_s_key, lpp(f_cnt), True, device.dev_addr, f_cnt))
    return signed + phy.data_mic(device.nwk_s_key, signed, True, device.dev_addr, f_cnt)


def next_uplinks(devices: list[Device], count: int) -> list[tuple[Device, int, bytes]]:
    """``count`` uplinks round robin over ``devices``, each with the device's next counter."""
    out = []
    for i in range(count):
        device = devices[i % len(devices)]
        device.f_cnt += 1
        out.append((device, device.f_cnt, uplink(device, device.f_cnt)))
    return out


# -- statistics and tables -----------------------------------------------------------------------


def table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    print(harness.table(headers, rows))


# -- 1. the codec in process -----------------------------------------------------------------------


@dataclass
class _Session:
    nwk_s_key: bytes
    app_s_key: bytes
    last: int | None = None


def _timed_pass(items: Sequence[T], step: Callable[[T], object]) -> tuple[float, list[float]]:
    """Runs ``step(item)`` over ``items``; (wall seconds, per-item microseconds)."""
    clock = time.perf_counter_ns
    each: list[float] = []
    started = clock()
    for item in items:
        t0 = clock()
        step(item)
        each.append((clock() - t0) / 1000)
    return (clock() - started) / 1e9, each


def codec_bench(frame_count: int, device_count: int) -> tuple[list[list[str]], int]:
    devices = make_devices(device_count, "9999")
    log(f"codec: building {frame_count:,} frames over {device_count:,} sessions ...")
    built = next_uplinks(devices, frame_count)
    frames = [f for _, _, f in built]
    sessions = {d.dev_addr: _Session(d.nwk_s_key, d.app_s_key) for d in devices}
    decoded = 0
    errors = 0

    def full(frame: bytes) -> None:
        nonlocal decoded, errors
        parsed = phy.parse(frame)
        assert isinstance(parsed, phy.DataFrame) and parsed.f_port is not None
        session = sessions[parsed.dev_addr]
        for f_cnt, verdict in counter_candidates(session.last, parsed.f_cnt16):  # noqa: B007 (read after the loop)
            if phy.data_mic(session.nwk_s_key, parsed.signed, True, parsed.dev_addr, f_cnt) == parsed.mic:
                break
        else:
            errors += 1
            return
        if verdict is not CounterVerdict.NEW:
            errors += 1
            return
        session.last = f_cnt
        payload = phy.crypt_payload(session.app_s_key, parsed.frm_payload, True, parsed.dev_addr, f_cnt)
        decoded += len(cayenne_lpp(parsed.f_port, payload))

    log("codec: full path ...")
    wall, each = _timed_pass(frames, full)

    # the stages alone, over the same frames, their arguments prepared beforehand
    parsed = [p for p in map(phy.parse, frames) if isinstance(p, phy.DataFrame)]
    assert len(parsed) == len(frames)
    counters = [(c - 1 if c > 1 else None, p.f_cnt16) for p, (_, c, _) in zip(parsed, built)]
    mics = [(d.nwk_s_key, p.signed, p.dev_addr, c) for p, (d, c, _) in zip(parsed, built)]
    crypts = [(d.app_s_key, p.frm_payload, p.dev_addr, c) for p, (d, c, _) in zip(parsed, built)]
    clear = [lpp(c) for _, c, _ in built]
    # the baseline: cryptography's AES-CMAC alone over B0 + the signed bytes
    b0 = [(d.nwk_s_key, struct.pack("<B4xB4sIxB", 0x49, 0, bytes.fromhex(d.dev_addr)[::-1], c, len(p.signed))
           + p.signed) for p, (d, c, _) in zip(parsed, built)]

    def cmac(item: tuple[bytes, bytes]) -> bytes:
        c = CMAC(algorithms.AES(item[0]))
        c.update(item[1])
        return c.finalize()

    for item, p in zip(b0[:100], parsed[:100]):  # the baseline checks itself: it is the frame's MIC
        assert cmac(item)[:4] == p.mic, "the baseline's CMAC is not the frame's MIC"
    log("codec: stages alone and the CMAC baseline ...")
    base_wall, base_each = _timed_pass(b0, cmac)
    stages = [
        ("  phy.parse", _timed_pass(frames, phy.parse)),
        ("  counter_candidates", _timed_pass(counters, lambda a: counter_candidates(*a))),
        ("  MIC (phy.data_mic)", _timed_pass(mics, lambda a: phy.data_mic(a[0], a[1], True, a[2], a[3]))),
        ("  decrypt (phy.crypt_payload)",
         _timed_pass(crypts, lambda a: phy.crypt_payload(a[0], a[1], True, a[2], a[3]))),
        ("  decode (cayenne_lpp)", _timed_pass(clear, lambda a: cayenne_lpp(1, a))),
    ]
    base_p50 = percentile(base_each, 0.5)

    def row(name: str, seconds: float, values: list[float]) -> list[str]:
        p50 = percentile(values, 0.5)
        return [name, fmt(len(values) / seconds), fmt(p50, 1), fmt(percentile(values, 0.99), 1),
                fmt(p50 / base_p50, 1)]

    rows = [row("bare AES-CMAC (baseline)", base_wall, base_each), row("full uplink path", wall, each),
            ["  stages alone:", "", "", "", ""]]
    rows += [row(name, seconds, values) for name, (seconds, values) in stages]
    expected = frame_count * 4
    log(f"codec: {decoded:,} metrics decoded (expected {expected:,}), {errors} frames refused")
    return rows, errors + (0 if decoded == expected else 1)


# -- the GWMP sender ----------------------------------------------------------------------------


@dataclass
class SendResult:
    started: float = 0.0
    last_ack: float = 0.0
    sent_done: float = 0.0
    pushes: int = 0
    acked: int = 0
    no_ack: int = 0
    rtts: list[float] = field(default_factory=list)
    """PUSH_ACK round trips, ms."""
    sent_at: list[float] = field(default_factory=list)
    """Per uplink (in order), the moment before its PUSH_DATA were sent."""


class _Gateway(asyncio.DatagramProtocol):
    """One packet forwarder's socket: PUSH_DATA out, PUSH_ACK in."""

    def __init__(self, eui: str, result: SendResult, window: int) -> None:
        self.eui = bytes.fromhex(eui)
        self.result = result
        self.slots = asyncio.Semaphore(window)
        self.pending: dict[bytes, tuple[float, asyncio.TimerHandle]] = {}
        self.tmst = random.randrange(1 << 31)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def push(self, frames: list[bytes]) -> None:
        assert self.transport is not None
        rxpk = []
        for frame in frames:
            self.tmst = (self.tmst + 50_000) & 0xFFFFFFFF
            rxpk.append({"tmst": self.tmst, "chan": 0, "rfch": 0, "freq": 868.1, "stat": 1, "modu": "LORA",
                         "datr": "SF7BW125", "codr": "4/5", "rssi": -60, "lsnr": 7.5, "size": len(frame),
                         "data": base64.b64encode(frame).decode()})
        token = os.urandom(2)
        while token in self.pending:
            token = os.urandom(2)
        body = json.dumps({"rxpk": rxpk}, separators=(",", ":")).encode()
        sent = time.perf_counter()
        self.transport.sendto(bytes([2]) + token + b"\x00" + self.eui + body)
        timer = asyncio.get_running_loop().call_later(ACK_TIMEOUT, self._lost, token)
        self.pending[token] = (sent, timer)
        self.result.pushes += 1

    def _lost(self, token: bytes) -> None:
        if self.pending.pop(token, None) is not None:
            self.result.no_ack += 1
            self.slots.release()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 4 or data[0] != 2 or data[3] != 1:
            return
        entry = self.pending.pop(data[1:3], None)
        if entry is None:
            return  # late, counted lost already
        now = time.perf_counter()
        entry[1].cancel()
        self.result.rtts.append((now - entry[0]) * 1000)
        self.result.acked += 1
        self.result.last_ack = now
        self.slots.release()


class Sender:
    """``len(euis)`` gateways on their own UDP sockets. Every PUSH_DATA is sent by each gateway
    at once (the copies of a frame that several gateways heard), each gateway keeping at most
    ``window`` unanswered; a PUSH_DATA unanswered after ``ACK_TIMEOUT`` is counted, not resent."""

    def __init__(self, port: int, euis: list[str], window: int) -> None:
        self.port, self.euis, self.window = port, euis, window
        self.result = SendResult()
        self.gateways: list[_Gateway] = []

    async def open(self) -> Sender:
        loop = asyncio.get_running_loop()
        for eui in self.euis:
            _, protocol = await loop.create_datagram_endpoint(
                lambda e=eui: _Gateway(e, self.result, self.window),  # type: ignore[misc]
                remote_addr=("127.0.0.1", self.port))
            self.gateways.append(protocol)
        return self

    async def push(self, frames: list[bytes]) -> float:
        """Sends one PUSH_DATA per gateway carrying ``frames``; the moment before."""
        for gateway in self.gateways:
            await gateway.slots.acquire()
        now = time.perf_counter()
        if not self.result.started:
            self.result.started = now
        self.result.sent_at.extend([now] * len(frames))
        for gateway in self.gateways:
            gateway.push(frames)
        return now

    async def close(self) -> SendResult:
        """Waits for the outstanding PUSH_ACKs (or their timeouts)."""
        self.result.sent_done = time.perf_counter()
        give_up = time.monotonic() + ACK_TIMEOUT + 1
        while any(g.pending for g in self.gateways) and time.monotonic() < give_up:
            await asyncio.sleep(0.01)
        for gateway in self.gateways:
            if gateway.transport is not None:
                gateway.transport.close()
        return self.result


async def send(port: int, euis: list[str], frames: list[bytes], per_push: int, window: int,
               rate: float | None = None) -> SendResult:
    """Open loop: ``frames`` in PUSH_DATA of ``per_push`` rxpk; ``rate``: uplinks a second
    (paced), else as fast as the window allows."""
    sender = await Sender(port, euis, window).open()
    started = time.perf_counter()
    for done in range(0, len(frames), per_push):
        if rate:
            delay = started + done / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await sender.push(frames[done:done + per_push])
    return await sender.close()


@dataclass
class ClosedResult:
    send: SendResult
    latencies: list[float] = field(default_factory=list)
    """Uplink sent -> its reading on the WebSocket, ms."""
    lost: int = 0
    """Uplinks whose reading did not come within ``READING_TIMEOUT``."""
    last_reading: float = 0.0
    error: str = ""


READING_TIMEOUT = 10.0


async def closed_loop(port: int, euis: list[str], devices: list[Device], total: int, per_push: int, window: int,
                      ws_url: str, headers: dict[str, str]) -> ClosedResult:
    """``total`` uplinks, at most one in flight per device: a device sends its next uplink once
    the reading of its last one is on the WebSocket (``/api/ws?device=...``), or after
    ``READING_TIMEOUT`` (counted lost). Ready devices go out together, up to ``per_push`` a
    PUSH_DATA. ``headers`` go on the WebSocket handshake (the bearer credential)."""
    import websockets

    quota = {d.device_id: total // len(devices) + (1 if i < total % len(devices) else 0)
             for i, d in enumerate(devices)}
    by_id = {d.device_id: d for d in devices}
    ready: asyncio.Queue[Device] = asyncio.Queue()
    for d in devices:
        if quota[d.device_id]:
            ready.put_nowait(d)
    inflight: dict[str, tuple[int, float, asyncio.TimerHandle]] = {}
    unresolved = total
    finished = asyncio.Event()
    sender = await Sender(port, euis, window).open()
    result = ClosedResult(sender.result)
    loop = asyncio.get_running_loop()

    def resolved(device_id: str) -> None:
        nonlocal unresolved
        unresolved -= 1
        if quota[device_id]:
            ready.put_nowait(by_id[device_id])
        if unresolved == 0:
            finished.set()

    def timed_out(device_id: str, f_cnt: int) -> None:
        entry = inflight.get(device_id)
        if entry is not None and entry[0] == f_cnt:
            del inflight[device_id]
            result.lost += 1
            resolved(device_id)

    async with websockets.connect(ws_url, max_size=None, additional_headers=headers) as ws:
        async def read() -> None:
            async for raw in ws:
                arrived = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") == "dropped":
                    result.error = "the WebSocket client was dropped"
                    finished.set()
                    return
                data = message.get("data") or {}
                device_id = str(data.get("device_id", ""))
                entry = inflight.get(device_id)
                if entry is not None and data.get("metrics", {}).get("f_cnt") == entry[0]:
                    del inflight[device_id]
                    entry[2].cancel()
                    result.latencies.append((arrived - entry[1]) * 1000)
                    result.last_reading = arrived
                    resolved(device_id)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.5)  # the subscription is made just after the handshake
        try:
            sent = 0
            while sent < total:
                batch = [await asyncio.wait_for(ready.get(), READING_TIMEOUT + 5)]
                if result.error:
                    raise RuntimeError(result.error)
                while len(batch) < per_push and not ready.empty():
                    batch.append(ready.get_nowait())
                frames = []
                for d in batch:
                    quota[d.device_id] -= 1
                    d.f_cnt += 1
                    frames.append(uplink(d, d.f_cnt))
                at = await sender.push(frames)
                for d in batch:
                    inflight[d.device_id] = (d.f_cnt, at, loop.call_later(READING_TIMEOUT, timed_out, d.device_id,
                                                                          d.f_cnt))
                sent += len(batch)
                if reader.done():
                    raise RuntimeError(f"the WebSocket closed: {reader.exception() or result.error}")
            await finished.wait()
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            for entry in inflight.values():
                entry[2].cancel()
            await sender.close()
    return result


BARE_SERVER = """
import asyncio, base64, json, sys
class Server(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        if len(data) >= 12 and data[0] == 2 and data[3] == 0:
            for rxpk in json.loads(data[12:]).get("rxpk") or []:
                base64.b64decode(rxpk["data"], validate=True)
            self.transport.sendto(data[:3] + b"\\x01", addr)
async def main():
    await asyncio.get_running_loop().create_datagram_endpoint(Server, local_addr=("127.0.0.1", int(sys.argv[1])))
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()
asyncio.run(main())
"""


# -- the platform ------------------------------------------------------------------------------


def outcomes(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, int]:
    """Deltas of one labelled counter, by label value."""
    found = {}
    for key, value in after.items():
        if key.startswith(prefix):
            delta = round(value - before.get(key, 0.0))
            if delta:
                found[key[len(prefix):].strip('"}')] = delta
    return found


async def wait_accepted(api: httpx.AsyncClient, target: float, stall_seconds: float = 10.0,
                        limit_seconds: float = 600.0) -> tuple[float, float]:
    """Scrapes every 0.1 s until the accepted counter reaches ``target``, stops moving for
    ``stall_seconds`` or ``limit_seconds`` pass; (its last value, the moment of the first scrape
    that showed that value)."""
    give_up = time.monotonic() + limit_seconds
    last, seen = -1.0, 0.0
    moved = time.monotonic()
    while True:
        value = (await scrape(api)).get(ACCEPTED, 0.0)
        if value != last:
            last, seen, moved = value, time.perf_counter(), time.monotonic()
        if value >= target or time.monotonic() - moved > stall_seconds or time.monotonic() > give_up:
            return value, seen
        await asyncio.sleep(0.1)


class Follower:
    """SSE clients on ``/api/devices/{id}/stream`` of the probe devices: the arrival of each
    reading, by (device, f_cnt)."""

    def __init__(self, api: httpx.AsyncClient, device_ids: list[str]) -> None:
        self.api = api
        self.device_ids = device_ids
        self.arrived: dict[tuple[str, int], float] = {}
        self.errors: list[str] = []
        self._ready = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._follow(d)) for d in self.device_ids]
        give_up = time.monotonic() + 30
        while self._ready < len(self.device_ids):
            if time.monotonic() > give_up or self.errors:
                raise RuntimeError(f"SSE streams not ready: {self.errors or 'timed out'}")
            await asyncio.sleep(0.05)

    async def _follow(self, device_id: str) -> None:
        try:
            async with self.api.stream("GET", f"/api/devices/{device_id}/stream",
                                       timeout=httpx.Timeout(10.0, read=None)) as response:
                if response.status_code != 200:
                    self.errors.append(f"{device_id}: {response.status_code}")
                    return
                kind = ""
                async for line in response.aiter_lines():
                    arrived = time.perf_counter()
                    if line.startswith("event:"):
                        kind = line.partition(":")[2].strip()
                        if kind == "ready":
                            self._ready += 1
                        elif kind == "dropped":
                            self.errors.append(f"{device_id}: the SSE client was dropped")
                            return
                    elif line.startswith("data:") and kind == "reading":
                        reading = json.loads(line.partition(":")[2])
                        f_cnt = reading.get("metrics", {}).get("f_cnt")
                        if f_cnt is not None:
                            self.arrived.setdefault((device_id, int(f_cnt)), arrived)
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            self.errors.append(f"{device_id}: {type(exc).__name__}: {exc}")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task


async def start_platform(workdir: Path, args: argparse.Namespace
                         ) -> tuple[subprocess.Popen[str], int, int, dict[str, str]]:
    """The platform process, its HTTP and LoRaWAN ports, and the headers an admin sends."""
    http, lorawan = free_port(), free_udp_port()
    env = clean_env()
    env.update({"IOT_EVENTSTORE__URL": f"sqlite:///{workdir}/iot.db", "IOT_TIMESERIES__URL": f"sqlite:///{workdir}/ts.db",
                "IOT_MQTT__BROKER_URL": f"mqtt://127.0.0.1:{free_port()}", "IOT_COAP__ENABLED": "false",
                "IOT_LORAWAN__PORT": str(lorawan), "IOT_LORAWAN__DEDUPLICATION_MS": str(args.dedup_ms),
                "IOT_API__LOG_LEVEL": "warning", "IOT_SECURITY__ADMIN_API_KEY": new_api_key()})
    for setting in args.env:
        key, _, value = setting.partition("=")
        env[key] = value
    platform = serve(workdir, http, env)
    return platform, http, lorawan, {"Authorization": f"Bearer {env['IOT_SECURITY__ADMIN_API_KEY']}"}


def refusals(frames: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in frames.items() if k not in NOT_REFUSED}


async def main_async(args: argparse.Namespace) -> int:
    run = f"{os.getpid() % 10000:04d}"
    failures: list[str] = []
    # 1. the codec in process
    codec_rows, codec_errors = codec_bench(args.frames, args.devices)
    if codec_errors:
        failures.append("codec: frames refused or metrics missing")
    euis = [f"aa555a{run}{i:06x}" for i in range(args.gateways)]
    devices = make_devices(args.devices, run)
    probes = devices[:max(1, min(args.probes, len(devices)))]
    # 2. the bare server, on its own copies of the devices (the counters do not matter to it)
    port = free_udp_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
        shadow = make_devices(args.devices, run)
        frames = [f for _, _, f in next_uplinks(shadow, args.uplinks)]
        log(f"bare GWMP server: {args.uplinks:,} uplinks from {args.gateways} gateways ...")
        b = await send(port, euis, frames, args.per_push, args.window)
        log(f"bare GWMP server: {args.paced} uplinks at {args.rate:g}/s ...")
        bp = await send(port, euis, [f for _, _, f in next_uplinks(shadow[:len(probes)], args.paced)], 1,
                        args.window, args.rate)
    finally:
        bare.send_signal(signal.SIGTERM)
        bare.wait(timeout=30)
    bare_acked = round(len(frames) * b.acked / max(1, b.pushes))
    bare_uplinks = bare_acked / (b.last_ack - b.started)
    # 3. the platform
    workdir = Path(tempfile.mkdtemp(prefix="bench-lorawan-"))
    platform, http, lorawan, headers = await start_platform(workdir, args)
    o: SendResult | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}", timeout=60, headers=headers) as api:
            await wait_ready(api, platform, workdir / LOG_NAME)
            for i, eui in enumerate(euis):
                response = await api.post("/api/lorawan/gateways", json={"gateway_eui": eui, "name": f"gw{i}"})
                if response.status_code != 201:
                    raise RuntimeError(f"registering gateway {eui}: {response.status_code} {response.text[:200]}")
            log(f"registering {len(devices):,} devices ...")
            pending = iter(devices)

            async def register() -> None:
                for d in pending:
                    response = await api.post("/api/devices", json={
                        "device_id": d.device_id, "device_type": "lora", "protocol": "lorawan",
                        "lorawan": {"dev_eui": d.dev_eui, "activation": "abp", "dev_addr": d.dev_addr,
                                    "nwk_s_key": d.nwk_s_key.hex(), "app_s_key": d.app_s_key.hex(),
                                    "codec": "cayenne_lpp"}})
                    if response.status_code != 201:
                        raise RuntimeError(f"registering {d.device_id}: {response.status_code} {response.text[:200]}")

            await asyncio.gather(*(register() for _ in range(16)))
            log("activation: one uplink per device ...")
            start = await scrape(api)
            await send(lorawan, euis, [f for _, _, f in next_uplinks(devices, len(devices))], args.per_push, args.window)
            activated, _ = await wait_accepted(api, start.get(ACCEPTED, 0.0) + len(devices))
            if activated - start.get(ACCEPTED, 0.0) < len(devices):
                raise RuntimeError(f"activation: {activated - start.get(ACCEPTED, 0.0):.0f} of {len(devices)} "
                                   f"uplinks accepted; frames {outcomes(start, await scrape(api), FRAMES)} "
                                   f"(see {workdir}/platform.log)")
            # 4. saturated, closed loop: one uplink in flight per device
            before = await scrape(api)
            log(f"platform: {args.uplinks:,} uplinks from {args.gateways} gateways, one in flight per device ...")
            watcher = asyncio.create_task(wait_accepted(api, before.get(ACCEPTED, 0.0) + args.uplinks))
            ws_url = f"ws://127.0.0.1:{http}/api/ws?device={','.join(d.device_id for d in devices)}"
            c = await closed_loop(lorawan, euis, devices, args.uplinks, args.per_push, args.window, ws_url, headers)
            _, reached = await watcher
            await asyncio.sleep(max(0.5, 2 * args.dedup_ms / 1000))  # stragglers, refusals
            after = await scrape(api)
            accepted = after.get(ACCEPTED, 0.0) - before.get(ACCEPTED, 0.0)
            # 5. paced, followed on SSE
            log(f"platform: {args.paced} uplinks at {args.rate:g}/s from {len(probes)} devices followed on SSE ...")
            follower = Follower(api, [d.device_id for d in probes])
            await follower.start()
            paced = next_uplinks(probes, args.paced)
            before_paced = await scrape(api)
            pp = await send(lorawan, euis, [f for _, _, f in paced], 1, args.window, args.rate)
            give_up = time.monotonic() + 10 + args.dedup_ms / 1000
            while (sum((d.device_id, n) in follower.arrived for d, n, _ in paced) < len(paced)
                   and time.monotonic() < give_up):
                await asyncio.sleep(0.05)
            await follower.stop()
            # a reading reaches the live feed before the storage counts it
            await wait_accepted(api, before_paced.get(ACCEPTED, 0.0) + len(paced), stall_seconds=2.0)
            after_paced = await scrape(api)
            # 6. open loop: fire and forget, round robin
            if args.open_uplinks:
                before_open = await scrape(api)
                log(f"platform: {args.open_uplinks:,} uplinks fire and forget (open loop) ...")
                o = await send(lorawan, euis, [f for _, _, f in next_uplinks(devices, args.open_uplinks)],
                               args.per_push, args.window)
                _, open_reached = await wait_accepted(api, before_open.get(ACCEPTED, 0.0) + args.open_uplinks,
                                                      stall_seconds=5.0)
                await asyncio.sleep(max(0.5, 2 * args.dedup_ms / 1000))
                after_open = await scrape(api)
                open_accepted = after_open.get(ACCEPTED, 0.0) - before_open.get(ACCEPTED, 0.0)
    except Exception as exc:
        log(f"benchmark failed: {type(exc).__name__}: {exc} (platform log: {workdir}/platform.log)")
        return 1
    finally:
        stop(platform, timeout=60)

    # -- tables
    cpus = os.cpu_count()
    table(f"bench_lorawan codec: {args.frames:,} unconfirmed uplinks (15-byte Cayenne LPP, 4 values) over "
          f"{args.devices:,} ABP sessions, in process, one core; baseline = cryptography's AES-CMAC over the same "
          "B0+frame bytes, in the same run",
          ["path", "frames/s", "p50 us", "p99 us", "p50 vs CMAC"], codec_rows)

    frames_closed = outcomes(before, after, FRAMES)
    rate = accepted / (reached - c.send.started)
    rows = [["bare asyncio GWMP server (PUSH_ACKs), open loop", f"{len(frames):,}", f"{bare_acked:,} acked",
             fmt(bare_uplinks), "1.00", fmt(percentile(b.rtts, 0.5), 2), fmt(percentile(b.rtts, 0.99), 2),
             fmt(max(b.rtts, default=math.nan), 1), "-", "-",
             str(b.no_ack), "-"],
            ["iot-platform serve, closed loop (1 in flight/device)", f"{args.uplinks:,}", f"{accepted:,.0f}",
             fmt(rate), fmt(rate / bare_uplinks, 3), fmt(percentile(c.send.rtts, 0.5), 2),
             fmt(percentile(c.send.rtts, 0.99), 2), fmt(max(c.send.rtts, default=math.nan), 1),
             fmt(percentile(c.latencies, 0.5), 1),
             fmt(percentile(c.latencies, 0.99), 1), str(c.send.no_ack), str(sum(refusals(frames_closed).values()))]]
    if o is not None:
        frames_open = outcomes(before_open, after_open, FRAMES)
        open_rate = open_accepted / (open_reached - o.started)
        rows.append(["iot-platform serve, open loop (fire and forget)", f"{args.open_uplinks:,}",
                     f"{open_accepted:,.0f}", fmt(open_rate), fmt(open_rate / bare_uplinks, 3),
                     fmt(percentile(o.rtts, 0.5), 2), fmt(percentile(o.rtts, 0.99), 2),
                     fmt(max(o.rtts, default=math.nan), 1), "-", "-", str(o.no_ack),
                     str(sum(refusals(frames_open).values()))])
    copies = f"{args.gateways} gateway{'s' if args.gateways > 1 else ''}"
    table(f"bench_lorawan end to end: uplinks round robin over {args.devices:,} ABP devices, each heard by "
          f"{copies} (every PUSH_DATA sent by each), up to {args.per_push} rxpk/PUSH_DATA, window {args.window} "
          f"PUSH_DATA/gateway, loopback, {cpus} CPUs; lorawan.deduplication_ms={args.dedup_ms}; uplinks/s = accepted "
          "readings / (first send -> first /metrics scrape showing the final count); baseline = a bare asyncio "
          "GWMP server (json + base64 decode, PUSH_ACK) driven by the same sender in the same run",
          ["load", "uplinks", "accepted", "uplinks/s", "vs bare", "PUSH_ACK p50 ms", "PUSH_ACK p99 ms",
           "PUSH_ACK max ms", "reading p50 ms", "reading p99 ms", "no PUSH_ACK", "refused"], rows)
    print("  reading = uplink sent -> its reading on /api/ws (includes the deduplication window)")
    print(f"  closed loop: frame outcomes {frames_closed}; gateway packets {outcomes(before, after, PACKETS)}; "
          f"readings not seen within {READING_TIMEOUT:g} s: {c.lost}; sender done after "
          f"{c.send.sent_done - c.send.started:.2f} s, count reached after {reached - c.send.started:.2f} s")
    if accepted != args.uplinks or refusals(frames_closed) or c.lost or c.error:
        failures.append(f"closed loop: {accepted:,.0f} of {args.uplinks:,} accepted, refused "
                        f"{refusals(frames_closed)}, lost {c.lost} {c.error}")
    if o is not None:
        print(f"  open loop: frame outcomes {frames_open}; gateway packets {outcomes(before_open, after_open, PACKETS)}; "
              f"sender done after {o.sent_done - o.started:.2f} s, final count after {open_reached - o.started:.2f} s")
        if open_accepted != args.open_uplinks or refusals(frames_open):
            failures.append(f"open loop: {open_accepted:,.0f} of {args.open_uplinks:,} accepted, refused "
                            f"{refusals(frames_open)}")

    latencies = [(follower.arrived[(d.device_id, n)] - sent) * 1000
                 for (d, n, _), sent in zip(paced, pp.sent_at) if (d.device_id, n) in follower.arrived]
    table(f"bench_lorawan paced: {args.paced} uplinks at {args.rate:g}/s (1 rxpk/PUSH_DATA, {copies}) from "
          f"{len(probes)} devices; uplink latency = SSE `reading` event on /api/devices/{{id}}/stream - PUSH_DATA "
          f"sent, INCLUDING the {args.dedup_ms} ms deduplication window; baseline = the bare server's PUSH_ACK round "
          "trip at the same pace",
          ["measure", "samples", "p50 ms", "p99 ms", "max ms"],
          [["bare GWMP server: PUSH_ACK round trip", str(len(bp.rtts)), fmt(percentile(bp.rtts, 0.5), 2),
            fmt(percentile(bp.rtts, 0.99), 2), fmt(max(bp.rtts, default=math.nan), 2)],
           ["platform: PUSH_ACK round trip", str(len(pp.rtts)), fmt(percentile(pp.rtts, 0.5), 2),
            fmt(percentile(pp.rtts, 0.99), 2), fmt(max(pp.rtts, default=math.nan), 2)],
           [f"platform: uplink -> reading on SSE (incl. {args.dedup_ms} ms dedup)", str(len(latencies)),
            fmt(percentile(latencies, 0.5), 1), fmt(percentile(latencies, 0.99), 1),
            fmt(max(latencies, default=math.nan), 1)]])
    paced_frames = outcomes(before_paced, after_paced, FRAMES)
    print(f"  readings seen on SSE: {len(latencies)} of {len(paced)}; frame outcomes {paced_frames}")
    if follower.errors:
        print(f"  SSE errors: {follower.errors}")
    if len(latencies) != len(paced) or refusals(paced_frames) or follower.errors:
        failures.append(f"paced: {len(latencies)} of {len(paced)} readings seen, refused {refusals(paced_frames)}")
    problems = [line.strip() for line in (workdir / "platform.log").read_text(errors="replace").splitlines()
                if "ERROR" in line or "Traceback" in line]
    print(f"  platform log ({workdir}/platform.log): {len(problems)} ERROR/Traceback lines"
          + (f", first: {problems[0][:200]}" if problems else ""))
    for failure in failures:
        print(f"  FAILED: {failure}")
    return 1 if failures or problems else 0


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--devices", type=int, default=200, help="ABP devices (default 200)")
    p.add_argument("--uplinks", type=int, default=10_000,
                   help="uplinks of the saturated closed-loop phase (default 10,000)")
    p.add_argument("--open-uplinks", type=int, default=2_000,
                   help="uplinks of the open-loop (fire and forget) phase, 0: none (default 2,000)")
    p.add_argument("--gateways", type=int, default=2, help="gateways hearing every uplink (default 2)")
    p.add_argument("--dedup-ms", type=int, default=200, help="lorawan.deduplication_ms (default 200, the default)")
    p.add_argument("--per-push", type=int, default=4, help="max rxpk per PUSH_DATA when saturated (default 4)")
    p.add_argument("--window", type=int, default=8, help="unanswered PUSH_DATA per gateway (default 8)")
    p.add_argument("--paced", type=int, default=200, help="uplinks of the paced phase (default 200)")
    p.add_argument("--rate", type=float, default=20.0, help="uplinks/s of the paced phase (default 20)")
    p.add_argument("--probes", type=int, default=10, help="devices of the paced phase, each on SSE (default 10)")
    p.add_argument("--frames", type=int, default=20_000, help="frames of the in-process codec phase (default 20,000)")
    p.add_argument("--env", action="append", default=[], metavar="IOT_...=VALUE",
                   help="an extra platform setting (repeatable), e.g. IOT_LORAWAN__GATEWAY_CACHE_SECONDS=60")
    args = p.parse_args()
    if any(not s.startswith("IOT_") or "=" not in s for s in args.env):
        p.error("--env takes IOT_...=VALUE")
    if min(args.devices, args.uplinks, args.gateways, args.per_push, args.window, args.paced, args.frames) < 1:
        p.error("counts must be positive")
    if args.open_uplinks < 0:
        p.error("--open-uplinks must be 0 or more")
    if (args.uplinks + args.open_uplinks) // args.devices + 2 + args.paced > 0xFFFF:
        p.error("too many uplinks per device for 16-bit counters")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())

"""The load: MQTT 3.1.1 publishers on plain sockets with hand-encoded PUBLISH packets, so that
the load generator costs little CPU, and the bare subscriber that is the baseline. Each runs in
a process of its own (``multiprocessing``, spawn)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from tools.bench_ingest.constants import CHUNK


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


def reading_payload(tag: bytes, seq: int, ts_us: int) -> bytes:
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
                payload = reading_payload(tag, sent, ts)
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

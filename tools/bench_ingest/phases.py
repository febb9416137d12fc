"""The phases of a run: registering the fleet, the bare baseline, and a platform phase
(saturated or paced) with its stored-reading count, latency, memory and CPU."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import sqlite3
import time
from pathlib import Path
from typing import Any

from tools.bench_ingest.constants import IDLE_GIVE_UP, POLL_METRICS, RECEIVED, STORED
from tools.bench_ingest.fleet import Fleet
from tools.bench_ingest.platform import Platform, delta, scrape, sink_usage
from tools.bench_ingest.probes import AlertProber, Prober
from tools.bench_ingest.publishers import bare_process, publisher_process
from tools.bench_ingest.usage import CpuWindow, RssSampler
from tools.harness import log, percentile


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

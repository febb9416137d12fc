"""``--stream kafka``: the in-process stream against Kafka with one and two storage workers."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools import harness
from tools.bench_ingest.constants import METRICS_PER_READING
from tools.bench_ingest.fleet import Fleet
from tools.bench_ingest.phases import platform_phase, register
from tools.bench_ingest.platform import (
    WORKER_METRICS,
    broker_pid,
    platform_environment,
    scrape,
    start_platform,
    wait_ready,
)
from tools.bench_ingest.usage import RssSampler, others, proc_cpu
from tools.harness import fmt, free_port, log, stop, table

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
        workers: list[subprocess.Popen[str]] = []
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
                    workers.append(harness.worker(workdir, ["storage"], env, f"worker-{i}.log",
                                                  ("--metrics-port", str(port))))
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
                stop(*workers, platform.process, timeout=60)
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

"""The command line and the default run: bare baselines, the platform's phases, the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools.bench_ingest import __doc__ as DESCRIPTION
from tools.bench_ingest.constants import STORED
from tools.bench_ingest.fleet import Fleet
from tools.bench_ingest.phases import bare_phase, platform_phase, register
from tools.bench_ingest.platform import broker_pid, harness_env, scrape, start_platform, wait_ready
from tools.bench_ingest.probes import Prober
from tools.bench_ingest.report import RunResults, print_run
from tools.bench_ingest.rules import rules_comparison
from tools.bench_ingest.streams import stream_comparison
from tools.bench_ingest.usage import CpuWindow, RssSampler, proc_status
from tools.harness import fmt, log


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    harness = harness_env()
    p = argparse.ArgumentParser(prog="python -m tools.bench_ingest", description=DESCRIPTION.split("\n\n")[0],
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
    print_run(args, RunResults(run, fleet, workdir, platform.log_path, bare, phases, rule_phases, notes, mem,
                               timeline, rss.peaks, final))
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

"""The command line and the default run: bare baselines, the platform's phases, the report."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
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
from tools.bench_ingest.constants import METRICS_PER_READING, STORED, TARGET_RATE, TARGET_RATIO, TARGET_RSS_MB
from tools.bench_ingest.fleet import Fleet
from tools.bench_ingest.phases import bare_phase, count_points, platform_phase, register
from tools.bench_ingest.platform import broker_pid, harness_env, scrape, start_platform, wait_ready
from tools.bench_ingest.probes import Prober
from tools.bench_ingest.report import mb, print_rules
from tools.bench_ingest.rules import rules_comparison
from tools.bench_ingest.streams import stream_comparison
from tools.bench_ingest.usage import CpuWindow, RssSampler, others, proc_status
from tools.harness import fmt, log, table


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

"""What a run prints: the tables on stdout, with the details behind them."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench_ingest.constants import (
    ALERT_INTERVAL,
    METRICS_PER_READING,
    STORED,
    TARGET_RATE,
    TARGET_RATIO,
    TARGET_RSS_MB,
    TARGET_RULES_COST,
)
from tools.bench_ingest.fleet import Fleet
from tools.bench_ingest.phases import count_points
from tools.bench_ingest.usage import others
from tools.harness import fmt, table


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


@dataclass
class RunResults:
    """What a default run measured, handed from the run to its report."""

    run: str
    fleet: Fleet
    workdir: Path
    log_path: Path
    bare: dict[int, dict[str, Any]]
    """The bare subscriber's phase per QoS."""
    phases: list[dict[str, Any]]
    """The platform's saturated (with ``bare``) and paced phases."""
    rule_phases: list[dict[str, Any]]
    notes: list[str]
    mem: dict[str, int]
    """RSS in kB at the run's moments (started, registered, activated, end, hwm)."""
    timeline: list[tuple[str, float, int]]
    """(moment, readings stored so far, RSS kB)"""
    peaks: dict[str, int]
    """Peak RSS in kB per phase."""
    final: dict[str, float]
    """The platform's figures at the end."""


def print_run(args: argparse.Namespace, results: RunResults) -> None:
    """The default run's tables and details, to stdout."""
    r = results
    run, fleet, workdir, log_path, bare, phases = r.run, r.fleet, r.workdir, r.log_path, r.bare, r.phases
    rule_phases, notes, mem, timeline, peaks, final = r.rule_phases, r.notes, r.mem, r.timeline, r.peaks, r.final
    print()
    print(f"bench_ingest run {run}: {args.devices:,} devices x {METRICS_PER_READING} metrics, "
          f"{args.messages:,} readings per phase, store {args.store}, broker {args.broker}, "
          f"{os.cpu_count()} CPUs; {args.publishers}x{args.connections} publisher connections"
          + (f"; platform env {' '.join(args.platform_env)}" if args.platform_env else ""))
    peak_all = max(peaks.values(), default=0)
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
              f"({max(peaks, key=lambda k: peaks[k], default='-')}); VmHWM {mb(mem.get('hwm', 0)):.1f}")
        print("  peak RSS MB by phase: " + ", ".join(f"{k} {mb(v):.1f}" for k, v in peaks.items()))
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
    text = log_path.read_text(errors="replace")
    bad = [line for line in text.splitlines() if re.search(r"WARNING|ERROR|CRITICAL|Traceback", line)]
    print(f"  platform log: {len(text.splitlines())} lines, {len(bad)} warning/error lines"
          + (":" if bad else ""))
    for line in bad[:15]:
        print(f"      {line[:300]}")

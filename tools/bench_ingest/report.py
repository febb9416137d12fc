"""The tables a run prints."""

from __future__ import annotations

import argparse
import math
from typing import Any

from tools.bench_ingest.constants import ALERT_INTERVAL, TARGET_RULES_COST
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

"""The rules comparison: the same load without rules, with ``--rules`` rules and with them
disabled, and the reading-to-alert latency."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from tools.bench_ingest.constants import ALERT_THRESHOLD
from tools.bench_ingest.fleet import Fleet
from tools.bench_ingest.phases import each, platform_phase
from tools.bench_ingest.platform import Platform
from tools.bench_ingest.usage import RssSampler
from tools.harness import log


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

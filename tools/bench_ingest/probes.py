"""Latency probes: devices whose readings are timed from publish to queryable, and alert probes
timed from reading to the SSE ``raised`` notice."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from tools.bench_ingest.constants import ALERT_GIVE_UP, ALERT_INTERVAL, PROBE_GIVE_UP, PROBE_INTERVAL, PROBE_POLL
from tools.bench_ingest.fleet import Fleet
from tools.bench_ingest.publishers import reading_payload


@dataclass
class Probe:
    published: float
    found: float | None = None


class Prober:
    """Probe devices publish a reading every ``PROBE_INTERVAL`` in the same stream as the load;
    for each device one ``GET /api/devices/{id}/data?from=<oldest unseen probe>&to=<now>`` every
    ``PROBE_POLL`` finds the probes that have become queryable. Latency = the answer's arrival
    - the probe's publish (an upper bound, by up to one poll interval plus the GET itself)."""

    def __init__(self, client: Any, fleet: Fleet, qos: int, tag: str) -> None:
        self.client = client
        self.fleet = fleet
        self.qos = qos
        self.tag = tag
        self.samples: list[Probe] = []
        self.publishing = True
        self.sent = 0
        self.requests = 0
        self.lost = 0

    async def run(self) -> None:
        import aiomqtt

        async with aiomqtt.Client(self.fleet.host, self.fleet.port,
                                  identifier=f"bench-{self.fleet.run}-probe-{self.tag}") as mqtt:
            await asyncio.gather(*(self._device(mqtt, d) for d in self.fleet.probes))

    async def _device(self, mqtt: Any, device: str) -> None:
        outstanding: dict[int, Probe] = {}  # by timestamp in ns

        async def publish() -> None:
            seq = 0
            while self.publishing:
                ts_us = time.time_ns() // 1000
                probe = Probe(time.monotonic())
                await mqtt.publish(f"devices/{device}/telemetry",
                                   reading_payload(f"{self.tag}probe-".encode(), seq, ts_us), qos=self.qos)
                seq += 1
                self.sent += 1
                self.samples.append(probe)
                outstanding[ts_us * 1000] = probe
                await asyncio.sleep(PROBE_INTERVAL)

        publishing = asyncio.create_task(publish())
        url = f"/api/devices/{device}/data"
        while not publishing.done() or outstanding:
            await asyncio.sleep(PROBE_POLL)
            if not outstanding:
                continue
            oldest = min(outstanding)
            params = {"from": str(oldest // 1000), "to": str(time.time_ns() // 1000 + 1), "limit": "10000"}
            self.requests += 1
            response = await self.client.get(url, params=params, timeout=30)
            answered = time.monotonic()
            if response.status_code == 200:
                for reading in response.json()["readings"]:
                    probe = outstanding.pop(int(reading["timestamp_ns"]), None)
                    if probe is not None:
                        probe.found = answered
            for ts, probe in list(outstanding.items()):
                if answered - probe.published > PROBE_GIVE_UP:
                    del outstanding[ts]
                    self.lost += 1
        await publishing

    def latencies_ms(self) -> list[float]:
        return sorted((p.found - p.published) * 1000 for p in self.samples if p.found is not None)


class AlertProber:
    """Reading-to-alert latency on the SSE stream, while the load runs.

    An SSE client follows ``GET /api/alerts/stream?rule_id=<the probe rule>``. Each alert probe
    device publishes a reading over the rule's threshold whose value (1000 + its sequence number)
    names it; once its ``raised`` notice has arrived (or after ``ALERT_GIVE_UP``), one under the
    threshold that resolves the alert; then, ``ALERT_INTERVAL`` later, the next. Waiting for the
    notice keeps a device's raising and clearing readings apart, so that no batch can reorder
    them. Latency = arrival of the ``raised`` notice carrying the value - the moment just before
    the reading was published. The probe readings go over the same broker, in the same stream as
    the load.
    """

    def __init__(self, client: Any, fleet: Fleet, rule_id: str, qos: int, tag: str) -> None:
        self.client = client
        self.fleet = fleet
        self.rule_id = rule_id
        self.qos = qos
        self.tag = tag
        self.publishing = True
        self.sent = 0  # readings published (raising and clearing)
        self.published: dict[tuple[str, float], float] = {}  # (device, value) -> publish time
        self.raised: dict[tuple[str, float], float] = {}  # (device, value) -> notice arrival
        self._arrived: dict[tuple[str, float], asyncio.Event] = {}
        self.resolved = 0
        self.error = ""

    async def run(self) -> None:
        import aiomqtt
        import httpx

        ready = asyncio.Event()

        async def follow() -> None:
            timeout = httpx.Timeout(10.0, read=None)
            async with self.client.stream("GET", "/api/alerts/stream", params={"rule_id": self.rule_id},
                                          timeout=timeout) as response:
                kind = ""
                async for line in response.aiter_lines():
                    arrived = time.monotonic()
                    if line.startswith("event:"):
                        kind = line.partition(":")[2].strip()
                        if kind == "ready":
                            ready.set()
                        elif kind == "dropped":
                            self.error = "the SSE client was dropped"
                            return
                    elif line.startswith("data:") and kind == "alert":
                        notice = json.loads(line.partition(":")[2])
                        if notice["kind"] == "raised":
                            key = (notice["device_id"], float(notice["value"]))
                            self.raised[key] = arrived
                            self._arrived.setdefault(key, asyncio.Event()).set()
                        elif notice["kind"] == "resolved":
                            self.resolved += 1

        following = asyncio.create_task(follow())
        try:
            await asyncio.wait_for(ready.wait(), 30)
            async with aiomqtt.Client(self.fleet.host, self.fleet.port,
                                      identifier=f"bench-{self.fleet.run}-alerts-{self.tag}") as mqtt:
                await asyncio.gather(*(self._device(mqtt, d) for d in self.fleet.alert_probes))
            give_up = time.monotonic() + ALERT_GIVE_UP
            while len(self.raised) < len(self.published) and time.monotonic() < give_up:
                if following.done():
                    break
                await asyncio.sleep(0.05)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            following.cancel()
            with contextlib.suppress(BaseException):
                await following

    async def _device(self, mqtt: Any, device: str) -> None:
        seq = 0
        topic = f"devices/{device}/telemetry"

        async def publish(value: float) -> None:
            body = json.dumps({"message_id": f"{self.tag}alert-{seq}-{value:g}",
                               "timestamp": time.time_ns() // 1000, "metrics": {"temperature": value}})
            await mqtt.publish(topic, body, qos=self.qos)
            self.sent += 1

        while self.publishing:
            key = (device, 1000.0 + seq)
            arrived = self._arrived.setdefault(key, asyncio.Event())
            self.published[key] = time.monotonic()
            await publish(key[1])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), ALERT_GIVE_UP)
            await publish(0.0)
            await asyncio.sleep(ALERT_INTERVAL)
            seq += 1

    def latencies_ms(self) -> list[float]:
        return sorted((self.raised[k] - t) * 1000 for k, t in self.published.items() if k in self.raised)

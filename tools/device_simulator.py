#!/usr/bin/env python3
"""Device fleet simulator: N simulated devices publishing telemetry to an MQTT broker.

Every device owns a few sensors whose values take a slow random walk around a resting level
drawn per device (temperature, humidity, pressure, battery_level, co2, vibration), and publishes
them every ``--interval`` seconds on ``devices/{device_id}/telemetry``, the topic contract of
docs/mqtt.md. The flat payload is::

    {"temperature": 23.51, "humidity": 45.2, "timestamp": "2024-01-01T12:00:00.123Z"}

and ``--envelope`` sends ``{"message_id", "timestamp", "metrics": {...}, "tags": {}}`` instead;
``--format cbor`` encodes either as CBOR. Device ids are ``{--device-prefix}00001``, ... .

The first publishes of the fleet are spread evenly over one interval (device i of N starts at
i * interval / N), so 1,000 devices at ``--interval 1`` are a steady 1,000 msgs/s, not a burst
every second, and a run of D seconds has N * D / interval readings due. The devices share
``--clients`` MQTT connections (default min(N, 20)), so 10,000 devices need 20 sockets, not
10,000. At QoS 1 a reading counts as acknowledged when the broker's PUBACK arrives; each
connection keeps at most ``--max-inflight`` publishes unacknowledged, and when that window is
full the schedule waits. Readings this process could not send before the end (a slow broker,
or more than one Python process can publish: about 9,000 msgs/s on two cores) are reported as
"late"; for more load, run several simulators with different ``--device-prefix``.

A lost connection is re-established with exponential back-off (0.5 s doubling to 30 s, with
jitter); readings that fall due while a device's connection is down are not sent and count as
"missed"; publishes in flight when it drops count as failed.

``--status`` publishes a retained ``online`` to ``devices/{id}/status`` for every device on
(re)connecting and a retained ``offline`` at the end. An MQTT last will belongs to a connection,
so only a connection that carries a single device (``--clients`` equal to ``--device-count``)
also leaves ``offline`` as its will; with shared connections a killed simulator leaves its
devices ``online``.

A progress line on stderr (elapsed, sent, acknowledged, in flight, failed, rate, connections)
is rewritten twice a second when stderr is a terminal or with ``--progress``. The run ends after
``--duration`` seconds, or on Ctrl-C / SIGTERM (a second one quits at once), with a clean
disconnect and a summary on stdout. Exit status: 0; 1 if the broker (or the registration API)
could not be reached at all; 2 for bad arguments; 130 when forced to quit.

Examples (from the repository root)::

    # the seed document's run: 1,000 temperature/humidity sensors, every 30 s, for an hour
    .venv/bin/python -m tools.device_simulator --device-count 1000 \\
        --sensor-types temperature,humidity --interval 30 --duration 3600

    # a quick look at the payloads on the local services harness
    mosquitto_sub -h 127.0.0.1 -p 21883 -t 'devices/#' -v -C 20 &
    .venv/bin/python -m tools.device_simulator --broker mqtt://127.0.0.1:21883 \\
        --device-count 5 --interval 0.5 --duration 3

    # CBOR envelopes, devices registered through the REST API first, status topics, repeatable
    export IOT_API_KEY=iotk_...    # see "REST API key" below
    .venv/bin/python -m tools.device_simulator --format cbor --envelope --status --seed 7 \\
        --register-url http://127.0.0.1:8000 --sensor-types co2,battery_level

    # load: 10,000 devices, one reading every 2 s each (5,000 msgs/s), 50 connections, TLS
    .venv/bin/python -m tools.device_simulator --broker mqtts://broker.example:8883 \\
        --ca-file ca.crt --device-count 10000 --interval 2 --clients 50 --duration 300

REST API key: ``--register-url`` calls the platform's REST API, which wants
``Authorization: Bearer <API key>`` (401 without one, 403 if its role may not register devices).
``--api-key`` (default ``$IOT_API_KEY``) gives it. ``make run`` prints an admin key on the
platform's first start (``Admin API key: iotk_...``); a narrower one for the simulator::

    .venv/bin/iot-platform apikey create --name sim --role fleet_manager   # prints <id> <key>
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import signal
import socket
import ssl
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
import cbor2
import httpx

BACKOFF_MIN = 0.5  # seconds before the first reconnect attempt; doubles up to BACKOFF_MAX
BACKOFF_MAX = 30.0
PUBLISH_TIMEOUT = 10.0  # an unacknowledged QoS 1 publish fails after this long
DRAIN_TIMEOUT = 10.0  # at the end, how long in-flight publishes may take to be acknowledged
REGISTER_CONCURRENCY = 16
PROGRESS_PERIOD = 0.5
RATE_WINDOW = 2.0  # seconds of history behind the rate on the progress line
LAG_SHOWN = 0.5  # the progress line says so when readings go out this late
LATE_GRACE = 0.25  # a reading due just before the end may still go out this long after it

API_KEY_HELP = (
    "`make run` prints an admin key on the platform's first start (\"Admin API key: iotk_...\"); "
    "`iot-platform apikey create --name sim --role fleet_manager` makes one for the simulator "
    "(it prints the key id, then the key)"
)

# The platform's device id rule (domain/devices/values.py): ids travel in topics and URLs.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


# -- sensors --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensorModel:
    """A sensor's value walks: each step pulls it ``reversion`` of the way back to the device's
    resting level, adds ``drift`` and Gaussian noise of ``step``, and stays within low..high."""

    low: float
    high: float
    resting: tuple[float, float]  # a device's resting level is drawn uniformly from this range
    step: float
    decimals: int
    reversion: float = 0.05
    drift: float = 0.0


SENSORS: dict[str, SensorModel] = {
    "temperature": SensorModel(-40.0, 85.0, (18.0, 26.0), 0.15, 2),  # degrees C, indoors
    "humidity": SensorModel(0.0, 100.0, (35.0, 60.0), 0.4, 1),  # % RH
    "pressure": SensorModel(870.0, 1085.0, (1005.0, 1022.0), 0.15, 2),  # hPa
    # % charge: drains about 0.01 points a reading, with a little measurement noise
    "battery_level": SensorModel(0.0, 100.0, (60.0, 100.0), 0.02, 1, reversion=0.0, drift=-0.01),
    "co2": SensorModel(350.0, 5000.0, (420.0, 900.0), 8.0, 0),  # ppm
    "vibration": SensorModel(0.0, 50.0, (0.3, 2.5), 0.05, 3),  # mm/s RMS
}

Sensors = Sequence[tuple[str, SensorModel]]


@dataclass(slots=True)
class Device:
    device_id: str
    offset: float  # seconds into every interval at which it publishes
    resting: list[float]
    values: list[float]

    @property
    def telemetry_topic(self) -> str:
        return f"devices/{self.device_id}/telemetry"

    @property
    def status_topic(self) -> str:
        return f"devices/{self.device_id}/status"

    def read(self, sensors: Sensors, rng: random.Random) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for i, (name, model) in enumerate(sensors):
            value = self.values[i]
            value += model.reversion * (self.resting[i] - value) + model.drift
            value += rng.gauss(0.0, model.step)
            value = min(model.high, max(model.low, value))
            self.values[i] = value
            metrics[name] = round(value, model.decimals) if model.decimals else round(value)
        return metrics


def build_fleet(
    count: int, prefix: str, interval: float, sensors: Sensors, rng: random.Random
) -> list[Device]:
    fleet = []
    for i in range(count):
        resting = [rng.uniform(*model.resting) for _, model in sensors]
        fleet.append(Device(f"{prefix}{i + 1:05d}", i * interval / count, resting, list(resting)))
    return fleet


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(metrics: dict[str, Any], *, envelope: bool, fmt: str) -> bytes:
    body: dict[str, Any]
    if envelope:
        body = {
            "message_id": str(uuid.uuid4()),
            "timestamp": utc_timestamp(),
            "metrics": metrics,
            "tags": {},
        }
    else:
        body = {**metrics, "timestamp": utc_timestamp()}
    if fmt == "cbor":
        return cbor2.dumps(body)
    return json.dumps(body, separators=(",", ":")).encode()


# -- command line ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    url: str  # without credentials, for messages
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None


def broker_url(text: str) -> Broker:
    parts = urlsplit(text)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise argparse.ArgumentTypeError(f"{text!r}: use mqtt://host[:port] or mqtts://host[:port]")
    if not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} names no host")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} has an invalid port") from None
    return Broker(
        url=f"{parts.scheme}://{parts.hostname}:{port}",
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def sensor_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SENSORS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown sensor type {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SENSORS)}"
        )
    return list(dict.fromkeys(names))


def positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, not {text}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tools.device_simulator",
        description="Simulate a fleet of devices publishing telemetry over MQTT.",
        epilog=f"sensor types: {', '.join(SENSORS)}",
    )
    p.add_argument(
        "--device-count", type=positive(int), default=10, metavar="N", help="devices (default 10)"
    )
    p.add_argument(
        "--sensor-types", type=sensor_list, default=["temperature", "humidity"], metavar="LIST",
        help="comma-separated sensors of every device (default temperature,humidity)",
    )
    p.add_argument(
        "--interval", type=positive(float), default=30.0, metavar="SECONDS",
        help="each device publishes once per interval (default 30; fractions allowed)",
    )
    p.add_argument(
        "--duration", type=positive(float), default=3600.0, metavar="SECONDS",
        help="run time (default 3600)",
    )
    p.add_argument(
        "--broker", type=broker_url, default=broker_url("mqtt://127.0.0.1:1883"), metavar="URL",
        help="mqtt://[user:password@]host[:port] or mqtts://... (default mqtt://127.0.0.1:1883)",
    )
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help="telemetry QoS (default 1)")
    p.add_argument(
        "--format", choices=("json", "cbor"), default="json", help="payload encoding (default json)"
    )
    p.add_argument(
        "--envelope", action="store_true",
        help='send {"message_id", "timestamp", "metrics": {...}, "tags": {}} instead of flat '
        "metrics",
    )
    p.add_argument(
        "--device-prefix", default="sim-", metavar="PREFIX", help="device id prefix (default sim-)"
    )
    p.add_argument(
        "--register-url", metavar="URL",
        help="register every device first with POST URL/api/devices (an existing one is fine); "
        "needs --api-key",
    )
    p.add_argument(
        "--api-key", default=os.environ.get("IOT_API_KEY") or None, metavar="KEY",
        help="REST API key (iotk_...) sent as 'Authorization: Bearer KEY' with --register-url "
        "(default $IOT_API_KEY); " + API_KEY_HELP.replace("%", "%%"),
    )
    p.add_argument(
        "--clients", type=positive(int), metavar="K",
        help="MQTT connections the devices are spread over (default min(devices, 20))",
    )
    p.add_argument(
        "--max-inflight", type=positive(int), default=100, metavar="N",
        help="unacknowledged QoS 1 publishes allowed per connection (default 100)",
    )
    p.add_argument(
        "--status", action="store_true",
        help="publish retained online/offline to devices/{id}/status at start and end",
    )
    p.add_argument("--seed", type=int, help="random seed, for repeatable sensor values")
    p.add_argument(
        "--progress", action="store_true",
        help="show the progress line even when stderr is not a terminal",
    )
    p.add_argument("--ca-file", help="mqtts: CA bundle to verify the broker with (default: system)")
    p.add_argument("--cert-file", help="mqtts: client certificate (PEM), if the broker wants mTLS")
    p.add_argument("--key-file", help="mqtts: the client certificate's private key (PEM)")
    args = p.parse_args(argv)
    if not DEVICE_ID.match(f"{args.device_prefix}{args.device_count:05d}"):
        p.error("--device-prefix: device ids are letters, digits and . _ : - (starting with one)")
    if args.key_file and not args.cert_file:
        p.error("--key-file needs --cert-file")
    args.clients = min(args.clients or 20, args.device_count)
    return args


# -- counters and the progress line ---------------------------------------------------------------


@dataclass
class Stats:
    sent: int = 0
    acked: int = 0  # at QoS 0: written to the socket
    failed: int = 0
    missed: int = 0  # fell due while the device's connection was down
    late: int = 0  # still unsent at the end: this process could not keep up with the schedule
    reconnects: int = 0
    last_ack: float = 0.0  # time.monotonic() of the latest acknowledgement

    @property
    def due(self) -> int:
        return self.sent + self.missed + self.late

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked - self.failed


def thousands(n: float) -> str:
    return f"{n:,.0f}"


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class ProgressLine:
    """One line on stderr, rewritten in place; messages are printed above it."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.render: Callable[[], str] = lambda: ""
        self._width = 0

    def draw(self) -> None:
        text = self.render()
        if self.enabled and text:
            sys.stderr.write("\r" + text.ljust(self._width))
            sys.stderr.flush()
            self._width = len(text)

    def finish(self) -> None:
        """Draw the final state and move on to a new line."""
        self.draw()
        if self.enabled and self._width:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._width = 0

    def message(self, text: str) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            self._width = 0
        print(text, file=sys.stderr, flush=True)

    async def run(self) -> None:
        while True:
            self.draw()
            await asyncio.sleep(PROGRESS_PERIOD)


class RateMeter:
    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, count: int) -> float:
        now = time.monotonic()
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        then, before = self._samples[0]
        return (count - before) / (now - then) if now > then else 0.0


# -- MQTT connections -----------------------------------------------------------------------------


@dataclass
class Settings:
    broker: Broker
    tls_context: ssl.SSLContext | None
    qos: int
    fmt: str
    envelope: bool
    status: bool
    max_inflight: int
    sensors: Sensors


def describe(exc: BaseException) -> str:
    """aiomqtt's message for a dropped connection is generic; the reason is its cause."""
    cause = exc.__cause__ or exc
    return str(cause) or type(cause).__name__


@dataclass
class Connection:
    """One MQTT connection and the devices it publishes for.

    ``maintain`` keeps the connection up (reconnecting with back-off) until ``stopping`` is set,
    then lets in-flight publishes finish and disconnects; ``run_schedule`` publishes each device's
    readings on time through whichever connection is currently up.
    """

    index: int
    devices: list[Device]
    settings: Settings
    stats: Stats
    rng: random.Random
    stopping: asyncio.Event
    progress: ProgressLine
    client: aiomqtt.Client | None = None  # set while connected and ready for telemetry
    first_attempt: asyncio.Event = field(default_factory=asyncio.Event)
    ever_connected: bool = False
    last_error: str = ""
    lag: float = 0.0  # how late (seconds) the latest reading was taken
    _window: asyncio.Semaphore = field(init=False)
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._window = asyncio.Semaphore(self.settings.max_inflight)

    def _new_client(self) -> aiomqtt.Client:
        s = self.settings
        single = self.devices[0] if len(self.devices) == 1 else None
        will = None
        if single is not None and s.status:
            will = aiomqtt.Will(single.status_topic, b"offline", qos=1, retain=True)
        client = aiomqtt.Client(
            s.broker.host,
            s.broker.port,
            username=s.broker.username,
            password=s.broker.password,
            identifier=single.device_id if single else f"simulator-{os.getpid()}-{self.index}",
            will=will,
            tls_context=s.tls_context,
            timeout=PUBLISH_TIMEOUT,
            max_inflight_messages=s.max_inflight,
            # PUBLISH and PUBACK are tiny packets: without this, Nagle's algorithm can hold one
            # back until the peer's delayed TCP ACK arrives, and QoS 1 crawls.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        # aiomqtt logs a warning (stderr) above 10 pending publishes; many are normal here.
        client.pending_calls_threshold = s.max_inflight + len(self.devices) + 1
        return client

    async def maintain(self) -> None:
        backoff = BACKOFF_MIN
        while not self.stopping.is_set():
            client = self._new_client()
            try:
                async with client:
                    if self.ever_connected:
                        self.stats.reconnects += 1
                        self.progress.message(f"connection {self.index}: reconnected")
                    self.ever_connected = True
                    backoff = BACKOFF_MIN
                    if self.settings.status:
                        await self._publish_status(client, b"online")
                    self.client = client
                    self.first_attempt.set()
                    await self._until_stopping_or_lost(client)
                    self.client = None
                    await self._drain()
                    if self.settings.status:
                        await self._publish_status(client, b"offline")
                    return
            except aiomqtt.MqttError as exc:
                self.last_error = describe(exc)
                if self.client is not None:
                    self.progress.message(
                        f"connection {self.index}: lost ({self.last_error}), reconnecting"
                    )
            finally:
                self.client = None
                self._abandon_in_flight()
            self.first_attempt.set()
            delay = backoff * random.uniform(0.5, 1.0)  # jitter: connections retry out of step
            backoff = min(backoff * 2, BACKOFF_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def _until_stopping_or_lost(self, client: aiomqtt.Client) -> None:
        """Return when asked to stop; raise MqttError if the connection drops first."""

        async def lost() -> None:
            async for _ in client.messages:  # subscribed to nothing: ends by raising on a drop
                pass

        watch = asyncio.create_task(lost())
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait((watch, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not watch.done():
                watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch  # raises the MqttError of a drop

    async def _publish_status(self, client: aiomqtt.Client, payload: bytes) -> None:
        await asyncio.gather(
            *(client.publish(d.status_topic, payload, qos=1, retain=True) for d in self.devices)
        )

    async def _drain(self) -> None:
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=DRAIN_TIMEOUT)

    def _abandon_in_flight(self) -> None:
        for task in list(self._in_flight):
            task.cancel()  # _publish counts it as failed

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        try:
            await client.publish(topic, payload, qos=self.settings.qos)
        except (aiomqtt.MqttError, asyncio.CancelledError):
            self.stats.failed += 1
        else:
            self.stats.acked += 1
            self.stats.last_ack = time.monotonic()
        finally:
            self._window.release()

    async def run_schedule(self, start: float, end: float, interval: float) -> None:
        """Publish each device's readings at start + offset + n * interval, until end.

        Times are time.monotonic(). A reading falls due, then is sent, or missed (connection
        down), or late (the end, plus LATE_GRACE, came before it could be sent).
        """
        s = self.settings
        for cycle in itertools.count():
            for device in self.devices:  # in order of offset
                due = start + cycle * interval + device.offset
                if due >= end:
                    return
                now = time.monotonic()
                if now >= end + LATE_GRACE:
                    self.stats.late += 1
                    continue
                await asyncio.sleep(max(0.0, due - now))
                self.lag = max(0.0, now - due)
                metrics = device.read(s.sensors, self.rng)  # the sensor measures, online or not
                client = self.client
                if client is not None:
                    await self._window.acquire()
                    client = self.client  # it may have dropped while the window was full
                    if client is None or time.monotonic() >= end + LATE_GRACE:
                        self._window.release()
                        if client is not None:  # the end came while waiting
                            self.stats.late += 1
                            continue
                if client is None:
                    self.stats.missed += 1
                    continue
                payload = encode(metrics, envelope=s.envelope, fmt=s.fmt)
                self.stats.sent += 1
                task = asyncio.create_task(self._publish(client, device.telemetry_topic, payload))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)


# -- registration ---------------------------------------------------------------------------------


class RegistrationError(Exception):
    pass


async def register_devices(
    url: str, devices: Sequence[Device], device_type: str, progress: ProgressLine,
    api_key: str | None = None,
) -> None:
    done = 0
    progress.render = lambda: f"registering devices {thousands(done)}/{thousands(len(devices))}"
    todo: Iterator[Device] = iter(devices)

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal done
        for device in todo:
            body = {
                "device_id": device.device_id,
                "device_type": device_type,
                "tags": {"simulated": "true"},
            }
            try:
                response = await http.post("/api/devices", json=body)
            except httpx.HTTPError as exc:
                raise RegistrationError(f"POST {url}/api/devices: {describe(exc)}") from None
            if response.status_code not in (200, 201, 202, 409):  # 409: registered earlier
                hint = ""
                if response.status_code == 401:
                    hint = (" (no API key given: use --api-key or IOT_API_KEY; " + API_KEY_HELP + ")"
                            if api_key is None else " (the API key is unknown, expired or revoked)")
                elif response.status_code == 403:
                    hint = " (the API key's role may not register devices: use fleet_manager or admin)"
                raise RegistrationError(
                    f"POST {url}/api/devices for {device.device_id}: "
                    f"HTTP {response.status_code} {response.text[:300]}{hint}"
                )
            done += 1

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=url, timeout=10.0, headers=headers) as http:
        count = min(REGISTER_CONCURRENCY, len(devices))
        workers = [asyncio.create_task(worker(http)) for _ in range(count)]
        try:
            await asyncio.gather(*workers)  # the first error ends the registration
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


# -- the run --------------------------------------------------------------------------------------


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.broker.tls:
        return None
    context = ssl.create_default_context(cafile=args.ca_file)
    if args.cert_file:
        context.load_cert_chain(args.cert_file, args.key_file)
    return context


def summary(args: argparse.Namespace, stats: Stats, elapsed: float, interrupted: bool) -> str:
    acked = "acknowledged" if args.qos == 1 else "written (QoS 0)"
    layout = "envelope" if args.envelope else "flat"
    rate = stats.acked / elapsed if elapsed > 0 else 0.0
    rows = [
        ("broker", f"{args.broker.url}  QoS {args.qos}, {args.format}, {layout}"),
        ("devices", f"{thousands(args.device_count)} over {args.clients} connection(s)"),
        ("readings due", thousands(stats.due)),
        ("messages sent", thousands(stats.sent)),
        (acked, thousands(stats.acked)),
        ("failed", thousands(stats.failed)),
        ("missed (offline)", thousands(stats.missed)),
        ("late (not sent)", thousands(stats.late)),
        ("reconnects", thousands(stats.reconnects)),
        ("duration", f"{elapsed:.2f} s" + ("  (stopped early)" if interrupted else "")),
        ("average rate", f"{rate:,.1f} msgs/s {acked}"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


async def wait_for_either(work: Awaitable[Any], stop: asyncio.Event) -> bool:
    """Wait for ``work``; False if ``stop`` was set first (``work`` is then cancelled)."""
    work_task = asyncio.ensure_future(work)
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait((work_task, stop_task), return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if work_task.done():
        work_task.result()
        return True
    work_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work_task
    return False


async def simulate(args: argparse.Namespace) -> int:
    progress = ProgressLine(enabled=args.progress or sys.stderr.isatty())
    stats = Stats()
    stop_requested = asyncio.Event()
    stopping = asyncio.Event()  # tells the connections to drain and disconnect
    main_task = asyncio.current_task()
    assert main_task is not None

    def on_signal() -> None:
        if stop_requested.is_set():
            main_task.cancel()  # a second Ctrl-C: do not wait for the clean shutdown
        stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, on_signal)

    master = random.Random(args.seed)
    sensors = [(name, SENSORS[name]) for name in args.sensor_types]
    fleet = build_fleet(args.device_count, args.device_prefix, args.interval, sensors, master)
    settings = Settings(
        broker=args.broker, tls_context=tls_context(args), qos=args.qos, fmt=args.format,
        envelope=args.envelope, status=args.status, max_inflight=args.max_inflight,
        sensors=sensors,
    )
    connections = [
        Connection(
            k, fleet[k :: args.clients], settings, stats,
            random.Random(master.getrandbits(64)), stopping, progress,
        )
        for k in range(args.clients)
    ]
    started: float | None = None  # time.monotonic() when publishing began
    rate = RateMeter()

    def connected() -> int:
        return sum(c.client is not None for c in connections)

    def line() -> str:
        if started is None:
            return f"connecting {connected()}/{len(connections)} to {args.broker.url}"
        elapsed = min(time.monotonic() - started, args.duration)
        lag = max(c.lag for c in connections)
        links = "closed" if stopping.is_set() else f"{connected()}/{len(connections)}"
        return (
            f"{clock(elapsed)}/{clock(args.duration)}  sent {thousands(stats.sent)}"
            f"  acked {thousands(stats.acked)}  in flight {thousands(stats.in_flight)}"
            f"  failed {thousands(stats.failed)}  {thousands(rate.rate(stats.acked))} msgs/s"
            f"  connections {links}"
            + (f"  behind schedule {lag:.1f} s" if lag >= LAG_SHOWN else "")
        )

    async def publish_until(end: float) -> None:
        start = end - args.duration
        await asyncio.gather(*(c.run_schedule(start, end, args.interval) for c in connections))
        await asyncio.sleep(end - time.monotonic())  # the run lasts its duration

    def run_time(until: float) -> float:
        # The last acknowledgements may come after the end: the run lasts until then.
        return max(until, stats.last_ack) - started if started is not None else 0.0

    drawer = asyncio.create_task(progress.run())
    maintainers: list[asyncio.Task[None]] = []
    try:
        if args.register_url:
            url = args.register_url.rstrip("/")
            device_type = "simulated_" + "_".join(args.sensor_types)
            try:
                registration = register_devices(url, fleet, device_type, progress, args.api_key)
                registered = await wait_for_either(registration, stop_requested)
            except RegistrationError as exc:
                progress.finish()
                print(f"device-simulator: could not register devices: {exc}", file=sys.stderr)
                return 1
            progress.finish()
            if not registered:
                print("device-simulator: stopped during registration", file=sys.stderr)
                return 0

        progress.render = line
        maintainers = [asyncio.create_task(c.maintain()) for c in connections]
        first_attempts = asyncio.gather(*(c.first_attempt.wait() for c in connections))
        completed = await wait_for_either(first_attempts, stop_requested)
        if completed and not any(c.ever_connected for c in connections):
            progress.finish()
            reason = next((c.last_error for c in connections if c.last_error), "no answer")
            print(f"device-simulator: could not connect to {args.broker.url}: {reason}",
                  file=sys.stderr)
            return 1
        if completed:
            started = time.monotonic()
            publishing = publish_until(started + args.duration)
            completed = await wait_for_either(publishing, stop_requested)
        finished = time.monotonic()
        stopping.set()
        _, stuck = await asyncio.wait(maintainers, timeout=DRAIN_TIMEOUT + 5)
        for task in stuck:
            task.cancel()
        progress.finish()
        print(summary(args, stats, run_time(finished), interrupted=not completed))
        if stats.late:
            print(f"device-simulator: {thousands(stats.late)} readings were still unsent at the "
                  "end: this process or the broker could not keep up with the schedule",
                  file=sys.stderr)
        return 0
    except asyncio.CancelledError:
        progress.finish()
        print("device-simulator: forced to quit", file=sys.stderr)
        print(summary(args, stats, run_time(time.monotonic()), interrupted=True))
        return 130
    finally:
        drawer.cancel()
        for task in maintainers:
            task.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(simulate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

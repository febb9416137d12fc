"""Who may do what on the embedded MQTT broker, end to end with mosquitto_pub and mosquitto_sub.

The tables below are the specification. With ``security.allow_anonymous_devices: never`` a
device logs in with username = its device id and password = a device token or API key issued
over REST for it; it may use its own topics of the contract (``devices/{id}/telemetry``,
``/status``, ``/commands``, ``/commands/ack``, ``sensors/{id}/{sensor}``) and no other
device's: a publish there is dropped (nothing stored, no status, no acknowledgement), a
subscription refused, and so is every wildcard. Nobody but the platform may connect with the
platform's client id (which would take over its session and lose readings), nor leave a last
will on another device's topic, nor resume or cut off another device's session by reusing its
client id.

With the default ``loopback`` (the broker on 127.0.0.1) a client without a username is
admitted, as Mosquitto 2.0 admits local clients: it is trusted with any concrete topic (it is
not confined by its client id: mosquitto_pub picks a random one), but it gets no wildcard
subscription and not the platform's client id. A client that presents credentials is checked
and confined in both modes.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_access import new_key
from tests.e2e.platform_process import BIN, RunningPlatform, free_port, platform_env, running_platform
from tests.e2e.test_access import token_with_curl
from tests.e2e.test_telemetry import eventually, readings, register

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"


def mqtt(tool: str, port: int, *args: str, login: tuple[str, str] | None = None,
         client_id: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [tool, "-h", "127.0.0.1", "-p", str(port), "-q", "1", *args]
    if login is not None:
        command += ["-u", login[0], "-P", login[1]]
    if client_id is not None:
        command += ["-i", client_id]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def publish(port: int, topic: str, message: str, **how: Any) -> subprocess.CompletedProcess[str]:
    return mqtt("mosquitto_pub", port, "-t", topic, "-m", message, **how)


def refused_connection(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode != 0 and "not authori" in done.stderr


def refused_subscription(port: int, topic_filter: str, **how: Any) -> bool:
    """mosquitto_sub says so and ends when every subscription it asked for is denied."""
    done = mqtt("mosquitto_sub", port, "-t", topic_filter, "-C", "1", "-W", "30", **how)
    return "denied" in done.stderr


def receives_own_commands(platform: RunningPlatform, api: httpx.Client, device_id: str,
                          forger: tuple[str, str] | None = None, **how: Any) -> str:
    """A real subscriber on the device's command topic gets a command issued over REST (the
    first message it gets is printed). The embedded broker may route nothing to a fresh
    subscriber for a moment after its SUBACK, so commands are issued until one arrives; a
    ``forger`` publishes its own "command" on that topic just before each."""
    login = how.get("login")
    command = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(platform.mqtt_port), "-q", "1", "-C", "1", "-W", "120",
               "-t", f"devices/{device_id}/commands"] + (["-u", login[0], "-P", login[1]] if login else [])
    subscriber = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        give_up = time.monotonic() + 120
        while True:
            if forger is not None:
                forged = publish(platform.mqtt_port, f"devices/{device_id}/commands", '{"command": "forged"}',
                                 login=forger)
                assert forged.returncode == 0, forged.stderr
            api.post(f"/devices/{device_id}/commands", json={"command": "ping"}).raise_for_status()
            try:
                out, err = subscriber.communicate(timeout=1)
                assert "denied" not in err, err
                return out
            except subprocess.TimeoutExpired:
                if time.monotonic() > give_up:
                    raise AssertionError("no command reached the device's own subscription") from None
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.communicate()


def device(api: httpx.Client, device_id: str) -> dict[str, Any]:
    return dict(api.get(f"/devices/{device_id}").json())


def command_status(api: httpx.Client, device_id: str, command_id: str) -> str:
    return str(api.get(f"/devices/{device_id}/commands/{command_id}").json()["status"])


# What a publish on each topic of the contract does, and how to see that it did (or did not).
Effect = Callable[[httpx.Client, str, str], bool]
PUBLISHES: list[tuple[str, Callable[[str, int], str], Effect]] = [
    ("devices/{id}/telemetry", lambda _, n: json.dumps({"t": n}),
     lambda api, d, _: any(r["metrics"].get("t") is not None for r in readings(api, d))),
    ("sensors/{id}/temp", lambda _, n: json.dumps({"value": n}),
     lambda api, d, _: any("temp" in r["metrics"] for r in readings(api, d))),
    ("devices/{id}/status", lambda _, n: "online",
     lambda api, d, _: device(api, d).get("connected") is True),
    ("devices/{id}/commands/ack", lambda command, n: json.dumps({"command_id": command, "status": "succeeded"}),
     lambda api, d, command: command_status(api, d, command) == "succeeded"),
]
SUBSCRIPTIONS_REFUSED_TO_D1 = ["devices/d2/commands", "devices/d2/telemetry", "sensors/d2/temp", "#", "+/d1/commands",
                               "devices/+/commands", "devices/d1/#", "sensors/d1/+"]
SUBSCRIPTIONS_REFUSED_TO_ANONYMOUS = ["#", "devices/+/commands", "devices/#", "sensors/+/+"]
PLATFORM_CLIENT_IDS = ["iot-platform", "iot-platform-commands"]


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[RunningPlatform]:
    """The embedded broker on loopback with anonymous access ``never``."""
    url = f"sqlite:///{tmp_path / 'data' / 'iot.db'}"
    with running_platform(tmp_path, url, IOT_SECURITY__ALLOW_ANONYMOUS_DEVICES="never") as running:
        yield running


def test_a_device_logs_in_as_itself_and_uses_only_its_own_topics(locked: RunningPlatform) -> None:
    with httpx.Client(base_url=f"{locked.base_url}/api", headers=locked.headers, timeout=30) as api:
        register(api, "d1")
        register(api, "d2")
        d1 = ("d1", new_key(api, "device", device_id="d1"))
        api.post("/auth/users", json={"username": "d1-user", "password": PASSWORD, "roles": ["device"],
                                      "device_id": "d1"}).raise_for_status()
        token = token_with_curl(locked, "d1-user", PASSWORD)
        port = locked.mqtt_port

        # Connections: only the device's own credential, under any client id but the platform's
        # or one whose live or persistent session is another device's (d2 leaves one here).
        d2 = ("d2", new_key(api, "device", device_id="d2"))
        mqtt("mosquitto_sub", port, "-c", "-t", "devices/d2/commands", "-W", "1", login=d2, client_id="d2-session")
        refusals = {
            "d2's session": publish(port, "devices/d1/telemetry", "{}", login=d1, client_id="d2-session"),
            "no username": publish(port, "devices/d1/telemetry", "{}"),
            "wrong password": publish(port, "devices/d1/telemetry", "{}", login=("d1", "iotk_nope_nope")),
            "d1's key as d2": publish(port, "devices/d2/telemetry", "{}", login=("d2", d1[1])),
            "an admin key": publish(port, "devices/d1/telemetry", "{}",
                                    login=("d1", locked.headers["Authorization"].split()[1])),
            "a last will on d2": mqtt("mosquitto_pub", port, "-t", "devices/d1/telemetry", "-m", "{}",
                                      "--will-topic", "devices/d2/status", "--will-payload", "offline", login=d1),
            **{f"client id {c}": publish(port, "devices/d1/telemetry", "{}", login=d1, client_id=c)
               for c in PLATFORM_CLIENT_IDS},
        }
        assert {why: refused_connection(done) for why, done in refusals.items()} == dict.fromkeys(refusals, True)
        counted = httpx.get(f"{locked.base_url}/metrics/", headers=locked.headers, follow_redirects=True).text
        for reason, count in {"no_credentials": 1, "bad_credentials": 3, "foreign_will": 1, "reserved_client_id": 2,
                              "foreign_session": 1}.items():
            assert f'iot_mqtt_connections_refused_total{{reason="{reason}"}} {count}.0' in counted, reason

        # Publishes: d2's topics dropped (nothing happens to d2), d1's own take effect; the
        # device token works as the API key does.
        commands = {d: api.post(f"/devices/{d}/commands", json={"command": "reboot"}).json()["command_id"]
                    for d in ("d1", "d2")}
        for n, (pattern, payload, happened) in enumerate(PUBLISHES):
            foreign = publish(port, pattern.format(id="d2"), payload(commands["d2"], n), login=d1)
            assert foreign.returncode == 0, foreign.stderr  # dropped, as a broker's ACL drops
            own = publish(port, pattern.format(id="d1"), payload(commands["d1"], n), login=("d1", token))
            assert own.returncode == 0, own.stderr
            eventually(lambda: happened(api, "d1", commands["d1"]), bool)
            assert not happened(api, "d2", commands["d2"]), f"{pattern} reached d2"

        # Subscriptions: its own command topic; nothing of d2's and no wildcard.
        refused = {f: refused_subscription(port, f, login=d1) for f in SUBSCRIPTIONS_REFUSED_TO_D1}
        assert refused == dict.fromkeys(SUBSCRIPTIONS_REFUSED_TO_D1, True)
        assert '"command": "ping"' in receives_own_commands(locked, api, "d1", login=d1)
        # Nor may d1 put words in the platform's mouth on d2's command topic.
        assert '"command": "ping"' in receives_own_commands(locked, api, "d2", forger=d1, login=d2)


def test_anonymous_local_clients_get_no_wildcard_and_not_the_platform_s_session(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    register(api, "d1")
    register(api, "d2")
    port = platform.mqtt_port
    for client_id in PLATFORM_CLIENT_IDS:  # a takeover would cost the platform its subscription
        assert refused_connection(publish(port, "devices/d1/telemetry", "{}", client_id=client_id))
    refused = {f: refused_subscription(port, f) for f in SUBSCRIPTIONS_REFUSED_TO_ANONYMOUS}
    assert refused == dict.fromkeys(SUBSCRIPTIONS_REFUSED_TO_ANONYMOUS, True)
    # Still trusted with concrete topics (readings of any device, as make run promises) ...
    assert publish(port, "devices/d2/telemetry", json.dumps({"t": 2})).returncode == 0
    eventually(lambda: readings(api, "d2"), bool)
    # ... while a client that logs in is checked and confined even here.
    d1 = ("d1", new_key(api, "device", device_id="d1"))
    assert refused_connection(publish(port, "devices/d1/telemetry", "{}", login=("d1", "iotk_nope_nope")))
    assert publish(port, "devices/d2/telemetry", json.dumps({"t": 3}), login=d1).returncode == 0
    assert publish(port, "devices/d1/telemetry", json.dumps({"t": 1}), login=d1).returncode == 0
    eventually(lambda: readings(api, "d1"), bool)
    assert [r["metrics"]["t"] for r in readings(api, "d2")] == [2.0]
    assert refused_subscription(port, "devices/d2/commands", login=d1)


def test_an_anonymous_broker_off_loopback_stops_start_up_with_one_line_naming_the_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "iot-platform"), "serve", "--port", str(free_port())], cwd=tmp_path,
        env=platform_env(f"sqlite:///{tmp_path / 'iot.db'}", IOT_MQTT__BROKER_URL=f"mqtt://0.0.0.0:{free_port()}"),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("iot-platform: bad config value security.allow_anonymous_devices:"), line

"""CoAP telemetry end to end, driven by aiocoap-client (a real CoAP client) and raw UDP datagrams.

Given a running platform and a registered device, readings POSTed as CBOR or JSON to
/devices/{id}/telemetry or /sensors are stored; malformed CBOR, a wrong content format, an
unknown device and an oversized payload get the 4.xx the contract names; and a datagram sent
twice with the same message id is stored once.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import cbor2
import httpx
import pytest

from tests.conftest import IN_CI
from tests.e2e.platform_process import (
    BIN,
    RunningPlatform,
    free_port,
    free_udp_port,
    platform_env,
    running_platform,
)
from tests.e2e.test_telemetry import eventually, register

pytestmark = pytest.mark.e2e


def coap(platform: RunningPlatform, path: str, *args: str) -> tuple[str, str]:
    """(response code, payload) of a POST to coap://.../path by aiocoap-client, which prints
    the payload of a success and the code line, then the payload, of anything else."""
    done = subprocess.run(
        [str(BIN / "aiocoap-client"), "-m", "POST", *args, f"coap://127.0.0.1:{platform.coap_port}{path}"],
        capture_output=True, text=True, timeout=60,
    )
    out = (done.stdout + done.stderr).strip()
    if re.match(r"^[45]\.\d\d ", out):
        first, _, rest = out.partition("\n")
        return first, rest
    assert done.returncode == 0, out
    return "2.xx", out


def readings(api: httpx.Client, device: str) -> list[dict[str, object]]:
    response = api.get(f"/devices/{device}/data", params={"from": "2020-01-01T00:00:00Z", "limit": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["readings"])


def test_cbor_and_json_readings_are_stored(platform: RunningPlatform, api: httpx.Client, tmp_path: Path) -> None:
    register(api, "sensor-1")
    register(api, "sensor-2")
    cbor_file = tmp_path / "reading.cbor"
    cbor_file.write_bytes(cbor2.dumps({"timestamp": "2026-01-01T00:00:00Z", "temperature": 21.5}))
    # raw CBOR bytes from a file, and CBOR recoded by the client from diagnostic notation
    assert coap(platform, "/devices/sensor-1/telemetry", "--content-format", "application/cbor",
                "--payload", f"@{cbor_file}")[1] == "stored"
    assert coap(platform, "/devices/sensor-1/telemetry", "--content-format", "application/cbor",
                "--payload", '{"timestamp": "2026-01-01T00:00:01Z", "metrics": {"temperature": 22.5}}')[1] == "stored"
    assert coap(platform, "/sensors", "--content-format", "application/json", "--payload",
                json.dumps({"device_id": "sensor-2", "timestamp": "2026-01-01T00:00:00Z", "humidity": 40}))[1] == "stored"
    got = eventually(lambda: readings(api, "sensor-1"), lambda r: len(r) == 2)
    assert [r["metrics"] for r in got] == [{"temperature": 21.5}, {"temperature": 22.5}]
    assert [r["metrics"] for r in eventually(lambda: readings(api, "sensor-2"), lambda r: len(r) == 1)] == [
        {"humidity": 40}]


def test_bad_requests_get_the_code_that_says_why(platform: RunningPlatform, api: httpx.Client, tmp_path: Path) -> None:
    register(api, "sensor-1")
    broken = tmp_path / "broken.cbor"
    broken.write_bytes(b"\xbf\x61")  # an indefinite map cut short
    first, why = coap(platform, "/devices/sensor-1/telemetry", "--content-format", "application/cbor",
                      "--payload", f"@{broken}")
    assert first.startswith("4.00") and "undecodable CBOR" in why
    first, why = coap(platform, "/devices/sensor-1/telemetry", "--content-format", "0", "--payload", "21.5")
    assert first.startswith("4.15") and "content-format 0" in why
    first, why = coap(platform, "/devices/nobody/telemetry", "--content-format", "application/json",
                      "--payload", '{"temperature": 1}')
    assert first.startswith("4.04") and "unknown_device" in why
    first, why = coap(platform, "/sensors", "--content-format", "application/json", "--payload", '{"temperature": 1}')
    assert first.startswith("4.00") and "device_id" in why
    first, why = coap(platform, "/devices/sensor-1/telemetry", "--content-format", "application/json",
                      "--payload", '{"temperature": "hot", "timestamp": "not a time"}')
    assert first.startswith("4.00") and "timestamp" in why
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"temperature": 1, "note": "x" * 70_000}))
    first, _ = coap(platform, "/devices/sensor-1/telemetry", "--content-format", "application/json",
                    "--payload", f"@{big}")
    assert first.startswith("4.13")
    assert readings(api, "sensor-1") == []


def datagram(message_id: int, confirmable: bool, path: list[str], payload: bytes) -> bytes:
    """A CoAP POST built by hand (RFC 7252 section 3), independent of aiocoap."""
    version, mtype, token = 1, 0 if confirmable else 1, b"\x42"
    header = struct.pack("!BBH", (version << 6) | (mtype << 4) | len(token), 0x02, message_id)
    options, last = b"", 0
    for number, value in [(11, p.encode()) for p in path] + [(12, bytes([50]))]:  # Uri-Path, Content-Format
        delta, last = number - last, number
        assert delta < 13 and len(value) < 13
        options += bytes([(delta << 4) | len(value)]) + value
    return header + token + options + b"\xff" + payload


def exchange(udp: socket.socket, port: int, message: bytes) -> int:
    """Sends ``message`` and returns the response code byte of the answer, acknowledging a
    separate (confirmable) response; an empty ACK alone means "the answer follows"."""
    udp.sendto(message, ("127.0.0.1", port))
    while True:
        answer = udp.recv(2048)
        mtype, code = (answer[0] >> 4) & 0b11, answer[1]
        if mtype == 0:  # a separate confirmable response: acknowledge it
            udp.sendto(struct.pack("!BBH", 0x60, 0, struct.unpack("!H", answer[2:4])[0]), ("127.0.0.1", port))
        if code != 0:
            return code


@pytest.mark.parametrize("confirmable", [True, False], ids=["CON", "NON"])
def test_the_same_message_twice_is_stored_once(platform: RunningPlatform, api: httpx.Client, confirmable: bool) -> None:
    register(api, "sensor-1")
    # no timestamp and no message id: only the CoAP message id tells the repeat apart
    path = ["devices", "sensor-1", "telemetry"]
    message = datagram(0x1234, confirmable, path, b'{"temperature": 5}')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(10)
        assert exchange(udp, platform.coap_port, message) == 0x41  # 2.01 Created
        udp.sendto(message, ("127.0.0.1", platform.coap_port))  # the repeat: answered from cache, or not
        assert exchange(udp, platform.coap_port, datagram(0x1235, confirmable, path, b'{"temperature": 6}')) == 0x41
    got = eventually(lambda: readings(api, "sensor-1"), lambda r: len(r) >= 2)
    assert [r["metrics"] for r in got] == [{"temperature": 5}, {"temperature": 6}]


# aiocoap-client 0.4.17 cancels an observation as soon as its first response is in (the
# ``finally`` around its first ``await``), so the observing device is aiocoap's client library
# in a process of its own: still a CoAP client nobody here wrote.
OBSERVER = """
import asyncio, sys, aiocoap
async def main():
    context = await aiocoap.Context.create_client_context()
    request = context.request(aiocoap.Message(code=aiocoap.GET, uri=sys.argv[1], observe=0))
    print((await request.response).payload.decode(), flush=True)
    async for notification in request.observation:
        print(notification.payload.decode(), flush=True)
asyncio.run(main())
"""


def test_an_observing_device_is_pushed_its_commands_and_acknowledges_them(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    register(api, "valve-1", protocol="coap")
    first = api.post("/devices/valve-1/commands", json={"command": "open", "parameters": {"percent": 50}})
    assert first.status_code in (201, 202), first.text
    observer = subprocess.Popen(
        [sys.executable, "-c", OBSERVER, f"coap://127.0.0.1:{platform.coap_port}/devices/valve-1/commands"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    watchdog = threading.Timer(90, observer.kill)  # a missing notification fails, never hangs
    watchdog.start()
    try:
        assert observer.stdout is not None
        notified = (json.loads(line) for line in observer.stdout if line.startswith("{"))
        pending = next(notified)  # the registration's answer
        assert [c["command"] for c in pending["commands"]] == ["open"]
        second = api.post("/devices/valve-1/commands", json={"command": "close", "parameters": {}})
        # the first notification may repeat "open": devices tolerate a repeated command id
        pushed = next(n for n in notified if any(c["command"] == "close" for c in n["commands"]))
        assert [c["command_id"] for c in pushed["commands"]] == [second.json()["command_id"]]
    finally:
        watchdog.cancel()
        observer.terminate()
        observer.communicate(timeout=30)
    command_id = first.json()["command_id"]
    first_line, text = coap(platform, "/devices/valve-1/commands/ack", "--content-format", "application/json",
                            "--payload", json.dumps({"command_id": command_id, "status": "succeeded",
                                                     "result": {"percent": 50}}))
    assert text == "acknowledged", (first_line, text)
    status = api.get(f"/devices/valve-1/commands/{command_id}").json()
    assert (status["status"], status["result"]) == ("succeeded", {"percent": 50})
    first_line, text = coap(platform, "/devices/valve-1/commands/ack", "--content-format", "application/json",
                            "--payload", json.dumps({"command_id": "nope", "status": "succeeded"}))
    assert first_line.startswith("4.04")


def test_with_unauthenticated_coap_off_every_request_is_refused(tmp_path: Path, platform_database_url: str) -> None:
    from tests.e2e.platform_process import running_platform

    with running_platform(tmp_path, platform_database_url, IOT_COAP__ALLOW_UNAUTHENTICATED="false") as running, \
            httpx.Client(base_url=f"{running.base_url}/api", headers=running.headers, timeout=30) as api:
        register(api, "sensor-1")
        first, _ = coap(running, "/devices/sensor-1/telemetry", "--content-format", "application/json",
                        "--payload", '{"temperature": 1}')
        assert first.startswith("4.01")
        first, _ = coap(running, "/devices/sensor-1/commands/ack", "--content-format", "application/json",
                        "--payload", '{"command_id": "x", "status": "succeeded"}')
        assert first.startswith("4.01")
        assert readings(api, "sensor-1") == []


def oscore_credentials(tmp_path: Path, platform: RunningPlatform, provisioned: dict[str, object], name: str) -> Path:
    """An aiocoap-client credentials file holding the device's side of its OSCORE context."""
    side = provisioned["oscore"]
    assert isinstance(side, dict)
    context = tmp_path / name
    context.mkdir()
    (context / "settings.json").write_text(json.dumps({
        "sender-id_hex": side["sender_id_hex"], "recipient-id_hex": side["recipient_id_hex"],
        "secret_hex": side["secret_hex"], "salt_hex": side["salt_hex"]}))
    credentials = tmp_path / f"{name}.json"
    credentials.write_text(json.dumps({f"coap://127.0.0.1:{platform.coap_port}/*": {"oscore": {"contextfile": f"{context}/"}}}))
    return credentials


def test_oscore_devices_are_authenticated_and_confined_to_their_own_data(tmp_path: Path, platform_database_url: str) -> None:
    with running_platform(tmp_path, platform_database_url, IOT_COAP__ALLOW_UNAUTHENTICATED="false") as platform, \
            httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        register(api, "coap-1", protocol="coap")
        register(api, "coap-2", protocol="coap")
        register(api, "mqtt-1")
        answer = api.put("/devices/coap-1/provision", json={"credential": "oscore"})
        assert answer.status_code == 200, answer.text
        provisioned = answer.json()
        assert provisioned["status"] == "provisioned" and provisioned["credential_type"] == "oscore"
        assert api.get("/devices/coap-1").json()["status"] == "provisioned"
        assert api.put("/devices/mqtt-1/provision", json={"credential": "oscore"}).status_code == 422
        credentials = oscore_credentials(tmp_path, platform, provisioned, "coap-1")
        body = ("--content-format", "application/json", "--payload", '{"timestamp": "2026-01-01T00:00:00Z", "temperature": 20.5}')
        assert coap(platform, "/devices/coap-1/telemetry", "--credentials", str(credentials), *body)[1] == "stored"
        assert [r["metrics"] for r in eventually(lambda: readings(api, "coap-1"), lambda r: len(r) == 1)] == [
            {"temperature": 20.5}]
        first, why = coap(platform, "/devices/coap-2/telemetry", "--credentials", str(credentials), *body)
        assert first.startswith("4.03") and "coap-1" in why
        first, _ = coap(platform, "/devices/coap-1/telemetry", *body)  # no OSCORE at all
        assert first.startswith("4.01")
        # A device whose secret is not the one provisioned is not let in: the platform answers
        # 4.00 "Decryption failed" unprotected, which the client reports as an unprotected answer.
        forged = dict(provisioned, oscore=dict(provisioned["oscore"], secret_hex="00" * 16))
        refused = subprocess.run(
            [str(BIN / "aiocoap-client"), "-m", "POST", "--credentials",
             str(oscore_credentials(tmp_path, platform, forged, "forged")), *body,
             f"coap://127.0.0.1:{platform.coap_port}/devices/coap-1/telemetry"],
            capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "stored" not in refused.stdout
        assert "No Object-Security option present" in refused.stderr
        history = json.dumps(api.get("/devices/coap-1/history").json())
        assert provisioned["oscore"]["secret_hex"] not in history
        assert provisioned["oscore"]["secret_hex"] not in (platform.workdir / "platform.log").read_text()
        assert readings(api, "coap-2") == []
    # After a restart the context comes back from its sealed copy (the replay window is
    # re-established with an Echo challenge, which the client answers by itself).
    with running_platform(tmp_path, platform_database_url, IOT_COAP__ALLOW_UNAUTHENTICATED="false") as platform, \
            httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        again = tmp_path / "again"  # the port is new; the device's context starts afresh
        again.mkdir()
        credentials = oscore_credentials(again, platform, provisioned, "coap-1")
        later = ("--content-format", "application/json", "--payload", '{"timestamp": "2026-01-01T00:00:01Z", "temperature": 21.5}')
        assert coap(platform, "/devices/coap-1/telemetry", "--credentials", str(credentials), *later)[1] == "stored"
        eventually(lambda: readings(api, "coap-1"), lambda r: len(r) == 2)


def libcoap(platform: RunningPlatform, path: str, *args: str) -> subprocess.CompletedProcess[str]:
    """libcoap's command-line client (``coap-client-notls``, Debian's libcoap3-bin): the CoAP
    stack most constrained devices are built on, and not aiocoap, so the two check each other."""
    tool = shutil.which("coap-client-notls")
    if tool is None:
        message = "coap-client-notls (libcoap3-bin) is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run([tool, *args, f"coap://127.0.0.1:{platform.coap_port}{path}"],
                          capture_output=True, text=True, timeout=60)


def test_a_client_that_leaves_before_its_answer_does_not_deafen_the_listener(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    """Issue 12, defect 11. An observing client that leaves (libcoap's ``-s 2`` ends its
    observation and closes its port) gets notifications that meet an ICMP port-unreachable;
    under uvloop that took aiocoap's socket out of the loop's epoll set and the listener never
    read another datagram. Every device after it must still be answered."""
    register(api, "c1", protocol="coap")
    observed = libcoap(platform, "/devices/c1/commands", "-s", "2")
    assert observed.returncode == 0, observed.stderr
    assert json.loads(observed.stdout.splitlines()[0]) == {"commands": []}
    # given the observer is gone, a command it would have been pushed is answered into a closed port
    assert api.post("/devices/c1/commands", json={"command": "open", "parameters": {}}).status_code in (201, 202)
    time.sleep(2)  # lets the notification meet the closed port before anyone else asks

    got = libcoap(platform, "/devices/c1/commands", "-m", "get", "-B", "30")
    assert got.returncode == 0 and "open" in got.stdout, (got.stdout, got.stderr)
    stored = libcoap(platform, "/devices/c1/telemetry", "-m", "post", "-t", "50", "-B", "30",
                     "-e", '{"timestamp": "2026-01-01T00:00:00Z", "temperature": 3}')
    assert stored.returncode == 0 and stored.stdout.strip() == "stored", (stored.stdout, stored.stderr)
    assert [r["metrics"] for r in eventually(lambda: readings(api, "c1"), lambda r: len(r) == 1)] == [
        {"temperature": 3}]


def rejected_count(platform: RunningPlatform, reason: str) -> float:
    text = httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text
    found = re.search(rf'iot_readings_rejected_total{{protocol="coap",reason="{reason}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_deeply_nested_payloads_are_a_4_00_with_a_reason_and_counted(
    platform: RunningPlatform, api: httpx.Client, tmp_path: Path
) -> None:
    """Issue 12, defect 2: JSON nested 1,000 deep (about 2 KB) made CoAP answer 5.00 (the
    decoder's RecursionError). Given that payload as JSON and its like as CBOR, when POSTed,
    then each is a 4.00 saying it is nested too deep, counted, and the next reading is stored."""
    register(api, "sensor-1")
    deep_json = tmp_path / "deep.json"
    deep_json.write_text('{"x":' + "[" * 1000 + "]" * 1000 + "}")
    deep_cbor = tmp_path / "deep.cbor"
    deep_cbor.write_bytes(b"\xa1\x61x" + b"\x81" * 1000 + b"\x01")
    for path, content_format in ((deep_json, "application/json"), (deep_cbor, "application/cbor")):
        first, why = coap(platform, "/devices/sensor-1/telemetry", "--content-format", content_format,
                          "--payload", f"@{path}")
        assert first.startswith("4.00") and "nested deeper than" in why, (first, why)
    first, why = coap(platform, "/sensors", "--content-format", "application/json", "--payload", f"@{deep_json}")
    assert first.startswith("4.00") and "nested deeper than" in why, (first, why)
    assert rejected_count(platform, "nesting_too_deep") == 3
    first, _ = coap(platform, "/devices/sensor-1/telemetry", "--content-format", "0", "--payload", "21.5")
    assert first.startswith("4.15") and rejected_count(platform, "unsupported_format") == 1
    stored = libcoap(platform, "/devices/sensor-1/telemetry", "-m", "post", "-t", "50", "-B", "30",
                     "-e", '{"timestamp": "2026-01-01T00:00:00Z", "temperature": 3}')
    assert stored.stdout.strip() == "stored", (stored.stdout, stored.stderr)
    assert "Traceback" not in (platform.workdir / "platform.log").read_text()


def test_devices_present_a_token_once_anonymous_devices_are_not_admitted(tmp_path: Path, platform_database_url: str) -> None:
    """Issue 12, defect 6 (CoAP): /sensors took readings for any device from anyone. With
    security.allow_anonymous_devices: never, a device presents its own API key as ?token=
    and may write and take commands for itself only."""
    with running_platform(tmp_path, platform_database_url, IOT_SECURITY__ALLOW_ANONYMOUS_DEVICES="never") as platform, \
            httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        register(api, "sensor-1", protocol="coap")
        register(api, "sensor-2", protocol="coap")
        created = api.post("/auth/apikeys", json={"name": "sensor-1", "roles": ["device"], "device_id": "sensor-1"})
        assert created.status_code == 201, created.text
        token = created.json()["api_key"]
        body = ("--content-format", "application/json", "--payload", '{"timestamp": "2026-01-01T00:00:00Z", "t": 1}')
        first, _ = coap(platform, "/sensors", "--content-format", "application/json",
                        "--payload", '{"device_id": "sensor-2", "t": 1}')
        assert first.startswith("4.01")
        assert coap(platform, f"/devices/sensor-1/telemetry?token={token}", *body)[1] == "stored"
        first, why = coap(platform, f"/devices/sensor-2/telemetry?token={token}", *body)
        assert first.startswith("4.03") and "sensor-1" in why
        first, _ = coap(platform, "/sensors?token=iotk_nokey_nosecret", "--content-format", "application/json",
                        "--payload", '{"device_id": "sensor-1", "t": 2}')
        assert first.startswith("4.01")
        commands = libcoap(platform, f"/devices/sensor-1/commands?token={token}", "-m", "get", "-B", "30")
        assert json.loads(commands.stdout) == {"commands": []}, (commands.stdout, commands.stderr)
        assert rejected_count(platform, "unauthenticated") == 2
        assert rejected_count(platform, "identity_mismatch") == 1
        assert [r["metrics"] for r in eventually(lambda: readings(api, "sensor-1"), lambda r: len(r) == 1)] == [{"t": 1}]
        assert readings(api, "sensor-2") == []
        assert token not in (platform.workdir / "platform.log").read_text()


def test_a_coap_listener_on_the_network_with_anonymous_devices_does_not_start(tmp_path: Path) -> None:
    """Anonymous devices only on loopback (as Mosquitto 2.0 does): a CoAP listener bound to
    every address with the default security.allow_anonymous_devices: loopback refuses to start,
    with one line naming the key."""
    done = subprocess.run(
        [str(BIN / "iot-platform"), "serve", "--port", str(free_port())], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
        env=platform_env(f"sqlite:///{tmp_path / 'iot.db'}", IOT_COAP__HOST="0.0.0.0",
                         IOT_COAP__PORT=str(free_udp_port()), IOT_LORAWAN__PORT=str(free_udp_port())))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("iot-platform: bad config value security.allow_anonymous_devices:") and "0.0.0.0" in line


def garbage_datagrams(count: int, seed: int) -> list[bytes]:
    """Random bytes, and CoAP requests to the platform's paths whose options carry random
    values (Uri-Query and Uri-Path that are not UTF-8, Block1 that contradicts the message,
    unknown critical options) and whose payloads are random or nested 500 deep."""
    rng = random.Random(seed)

    def option(number: int, last: int, value: bytes) -> bytes:
        def extended(x: int) -> tuple[int, bytes]:
            return (x, b"") if x < 13 else (13, bytes([x - 13])) if x < 269 else (14, struct.pack("!H", x - 269))
        (delta, delta_ext), (length, length_ext) = extended(number - last), extended(len(value))
        return bytes([(delta << 4) | length]) + delta_ext + length_ext + value

    found = []
    for i in range(count):
        if i % 3 == 0:
            found.append(rng.randbytes(rng.randint(0, 60)))
            continue
        token = rng.randbytes(rng.randint(0, 8))
        message = struct.pack("!BBH", 0x40 | len(token), rng.choice([1, 2, 3, 4, 5, 0x45, 0x80]),
                              rng.randint(0, 0xFFFF)) + token
        last = 0
        for part in ([b"devices", b"c1", b"telemetry"] if rng.random() < 0.5 else [b"sensors"]):
            message, last = message + option(11, last, part), 11
        for number in sorted(rng.sample([11, 12, 15, 17, 6, 7, 23, 27, 60, 258, 2049, 65000, 3, 1, 4, 8, 35, 39,
                                         28, 252], k=rng.randint(0, 5))):
            if number >= last:
                value = rng.choice([rng.randbytes(rng.randint(0, 6)), b"\xff\xfe", b"token=\xff", b"", bytes(9)])
                message, last = message + option(number, last, value), number
        found.append(message + rng.choice([b"", b"\xff" + rng.randbytes(20), b'\xff{"t":1}',
                                           b'\xff{"x":' + b"[" * 500]))
    return found


def test_random_datagrams_get_no_server_error_and_write_no_traceback(
    platform: RunningPlatform, api: httpx.Client
) -> None:
    """Issue 12 (CoAP garbage): a Uri-Path that is not UTF-8 made aiocoap write a traceback per
    datagram, a contradicting Block1 option a 5.00 with one. Given 1,500 random and malformed
    datagrams, then none is answered 5.xx, the log holds no traceback, the datagrams that are
    no CoAP message are counted, and the next device is served."""
    register(api, "c1", protocol="coap")
    answers: list[int] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.setblocking(False)
        for message in garbage_datagrams(1500, seed=12):
            udp.sendto(message, ("127.0.0.1", platform.coap_port))
            try:
                while True:  # what has come back so far, without waiting for it
                    answers.append(udp.recv(4096)[1])
            except BlockingIOError:
                pass
        udp.settimeout(2)  # then what still comes
        try:
            while True:
                answers.append(udp.recv(4096)[1])
        except TimeoutError:
            pass
    assert answers and not [code for code in answers if code >> 5 == 5]
    stored = libcoap(platform, "/devices/c1/telemetry", "-m", "post", "-t", "50", "-B", "30",
                     "-e", '{"timestamp": "2026-01-01T00:00:00Z", "temperature": 3}')
    assert stored.stdout.strip() == "stored", (stored.stdout, stored.stderr)
    log = (platform.workdir / "platform.log").read_text()
    assert "Traceback" not in log
    metrics = httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text
    unparsable = re.search(r"^iot_coap_unparsable_total (\S+)", metrics, re.MULTILINE)
    assert unparsable is not None and float(unparsable.group(1)) > 0

"""LoRaWAN end to end: a running platform, gateways simulated over real UDP sockets (GWMP v2),
frames built by the tests' own end device (tests/lorawan_sim.py), results read over REST.

Given registered gateways and devices, uplinks are stored once however many gateways heard
them; replays, bad MICs, wrong keys and counters that went back are refused and counted; an
OTAA device joins and then reports; a command goes out in the receive window after an uplink
and is delivered by the device's ACK, or in RX2 when the gateway cannot send in RX1; a link
check is answered and ADR moves a device to a faster data rate; and ChirpStack's MQTT uplinks
(mosquitto_pub) land too.
"""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.platform_process import RunningPlatform, free_udp_port, running_platform
from tests.e2e.test_telemetry import eventually, mosquitto_pub, readings
from tests.lorawan_sim import EndDevice, Gateway

pytestmark = pytest.mark.e2e

NWK = "44024241ed4ce9a68c6a8bc055233fd3"
APP = "ec925802ae430ca77fd3dd73cb2cc588"
APP_KEY = "2b7e151628aed2a6abf7158809cf4f3c"
GW_A, GW_B = "aa555a0000000000", "aa555a0000000001"
TWO_TEMPERATURES = bytes.fromhex("03670110056700FF")  # Cayenne LPP: 27.2 on 3, 25.5 on 5
ADR_HISTORY = 3
"""Uplinks per ADR decision (20 by default)."""
RX1_DELAY = 3
"""Seconds; longer than the 1 s default so that a loaded test machine never misses RX1, which
sends a downlink to RX2 instead (one test makes it so on purpose)."""


@pytest.fixture
def platform(tmp_path: Path, platform_database_url: str) -> Iterator[RunningPlatform]:
    with running_platform(tmp_path, platform_database_url, IOT_LORAWAN__RX1_DELAY_SECONDS=str(RX1_DELAY),
                          IOT_LORAWAN__ADR_HISTORY=str(ADR_HISTORY)) as running:
        yield running


def abp(api: httpx.Client, device_id: str, dev_addr: int, codec: str = "cayenne_lpp",
        app_s_key: str = APP) -> EndDevice:
    response = api.post("/devices", json={
        "device_id": device_id, "device_type": "lora-th", "protocol": "lorawan",
        "lorawan": {"dev_eui": f"{dev_addr:016x}", "activation": "abp", "dev_addr": f"{dev_addr:08x}",
                    "nwk_s_key": NWK, "app_s_key": app_s_key, "codec": codec}})
    assert response.status_code == 201, response.text
    return EndDevice(dev_eui=dev_addr, dev_addr=dev_addr, nwk_s_key=bytes.fromhex(NWK),
                     app_s_key=bytes.fromhex(APP))


def issue(api: httpx.Client, device_id: str, command: str, parameters: dict[str, Any]) -> str:
    issued = api.post(f"/devices/{device_id}/commands", json={"command": command, "parameters": parameters})
    assert issued.status_code in (201, 202), issued.text
    return str(issued.json()["command_id"])


def add_gateway(api: httpx.Client, eui: str) -> None:
    response = api.post("/lorawan/gateways", json={"gateway_eui": eui, "name": f"gw-{eui[-2:]}"})
    assert response.status_code == 201, response.text


def frame_count(platform: RunningPlatform, outcome: str) -> float:
    text = httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text
    found = re.search(rf'iot_lorawan_frames_total{{outcome="{outcome}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def metric_line(platform: RunningPlatform, pattern: str) -> float:
    found = re.search(pattern + r" (\S+)", httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def gateways(platform: RunningPlatform, api: httpx.Client) -> Iterator[tuple[Gateway, Gateway]]:
    add_gateway(api, GW_A)
    add_gateway(api, GW_B)
    a, b = Gateway(GW_A, platform.lorawan_port), Gateway(GW_B, platform.lorawan_port)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def a(gateways: tuple[Gateway, Gateway]) -> Gateway:
    """Gateway A with its downlink path open (it has sent PULL_DATA)."""
    gateway, _ = gateways
    assert gateway.pull()
    return gateway


def test_an_uplink_heard_by_two_gateways_is_stored_once_with_both_receptions(
    platform: RunningPlatform, api: httpx.Client, gateways: tuple[Gateway, Gateway]
) -> None:
    device = abp(api, "lw-1", 0x26011BDA)
    a, b = gateways
    frame = device.uplink(1, TWO_TEMPERATURES)
    assert a.push(frame, rssi=-50, snr=9.0)
    assert b.push(frame, rssi=-95, snr=-3.5)
    [reading] = eventually(lambda: readings(api, "lw-1"), lambda r: len(r) == 1)
    metrics = reading["metrics"]
    assert (metrics["temperature_3"], metrics["temperature_5"]) == (27.2, 25.5)
    assert (metrics["rssi"], metrics["snr"], metrics["gateways"], metrics["f_cnt"]) == (-50, 9.0, 2, 0)
    assert metrics["frequency_hz"] == 868_100_000
    assert sorted(r["gateway"] for r in json.loads(metrics["rx_info"])) == [GW_A, GW_B]
    assert reading["tags"] == {"gateway": GW_A, "data_rate": "SF7BW125"}
    assert frame_count(platform, "gathered_copy") == 1
    assert api.get("/devices/lw-1").json()["status"] == "active"
    session = api.get("/lorawan/devices/lw-1").json()
    assert (session["dev_addr"], session["f_cnt_up"], session["activation"]) == ("26011bda", 0, "abp")
    assert not {"nwk_s_key", "app_s_key", "app_key"} & session.keys()


def test_replays_bad_mics_wrong_keys_and_counters_that_went_back_are_refused(
    platform: RunningPlatform, api: httpx.Client, gateways: tuple[Gateway, Gateway]
) -> None:
    device = abp(api, "lw-1", 0x26011BDA)
    a, _ = gateways
    first = device.uplink(1, TWO_TEMPERATURES, fcnt=5)
    assert a.push(first)
    eventually(lambda: frame_count(platform, "accepted"), lambda n: n == 1)
    assert a.push(first)  # the same frame again, after the gathering window
    eventually(lambda: frame_count(platform, "replay"), lambda n: n == 1)
    assert a.push(device.uplink(1, TWO_TEMPERATURES, fcnt=3))
    eventually(lambda: frame_count(platform, "counter_behind"), lambda n: n == 1)
    assert a.push(device.uplink(1, TWO_TEMPERATURES, fcnt=6, mic_key=bytes(16)))
    eventually(lambda: frame_count(platform, "bad_mic"), lambda n: n == 1)
    # Registered with another AppSKey: the MIC holds, the payload decrypts to noise.
    wrong = abp(api, "lw-2", 0x26011BDB, app_s_key="00" * 16)
    assert a.push(wrong.uplink(1, TWO_TEMPERATURES))
    eventually(lambda: metric_line(platform, r'iot_readings_rejected_total\{protocol="lorawan",reason="undecodable"\}'),
               lambda n: n == 1)
    assert a.push(device.uplink(1, TWO_TEMPERATURES, fcnt=6))
    eventually(lambda: readings(api, "lw-1"), lambda r: [x["metrics"]["f_cnt"] for x in r] == [5, 6])
    assert a.push(b"\x40\x01")  # not a frame at all
    eventually(lambda: frame_count(platform, "malformed"), lambda n: n == 1)
    assert readings(api, "lw-2") == []


def test_an_unknown_gateway_gets_no_answer_and_is_counted(platform: RunningPlatform, api: httpx.Client) -> None:
    device = abp(api, "lw-1", 0x26011BDA)
    stranger = Gateway("0102030405060708", platform.lorawan_port)
    try:
        assert not stranger.push(device.uplink(1, TWO_TEMPERATURES), timeout=1.0)
        assert not stranger.pull(timeout=1.0)
        assert metric_line(platform, r'iot_lorawan_gateway_packets_total\{kind="unknown_gateway"\}') == 2
        add_gateway(api, "0102030405060708")  # registered here: known at once
        assert stranger.pull()
    finally:
        stranger.close()
    assert readings(api, "lw-1") == []


def test_an_otaa_device_joins_then_reports_and_a_replayed_join_is_refused(
    platform: RunningPlatform, api: httpx.Client, a: Gateway
) -> None:
    response = api.post("/devices", json={
        "device_id": "lw-otaa", "device_type": "lora-th", "protocol": "lorawan",
        "lorawan": {"dev_eui": "0004a30b001c0530", "join_eui": "70b3d57ed0000001", "activation": "otaa",
                    "app_key": APP_KEY, "codec": "cayenne_lpp"}})
    assert response.status_code == 201, response.text
    device = EndDevice(dev_eui=0x0004A30B001C0530, join_eui=0x70B3D57ED0000001, app_key=bytes.fromhex(APP_KEY))
    assert a.push(device.join_request(dev_nonce=0x0102))
    txpk = a.downlink()
    assert txpk is not None, "no join accept"
    assert txpk["tmst"] == a.tmst + 5_000_000 and txpk["freq"] == 868.1 and txpk["ipol"] is True
    device.accept(txpk["phy"])
    assert device.rx1_delay == RX1_DELAY and device.rx2_dr == 0  # told by the join accept
    assert a.push(device.uplink(1, TWO_TEMPERATURES))
    [reading] = eventually(lambda: readings(api, "lw-otaa"), lambda r: len(r) == 1)
    assert reading["metrics"]["temperature_3"] == 27.2
    history = api.get("/devices/lw-otaa/history").json()["events"]
    joined = [e for e in history if e["event_type"] == "DeviceJoined"]
    assert [e["data"]["dev_addr"] for e in joined] == [f"{device.dev_addr:08x}"]
    assert APP_KEY not in json.dumps(history) and "key" not in json.dumps(joined[0]["data"])
    assert a.push(device.join_request(dev_nonce=0x0102))  # the same DevNonce again
    eventually(lambda: frame_count(platform, "join_nonce_replay"), lambda n: n == 1)
    assert a.downlink(timeout=1.5) is None
    assert api.get("/lorawan/devices/lw-otaa").json()["joined"] is True


def test_a_command_goes_out_after_the_next_uplink_and_the_ack_bit_delivers_it(
    platform: RunningPlatform, api: httpx.Client, a: Gateway
) -> None:
    device = abp(api, "lw-1", 0x26011BDA)
    command_id = issue(api, "lw-1", "set_interval", {"payload_hex": "0a3c", "fport": 10})
    assert a.push(device.uplink(1, TWO_TEMPERATURES))
    txpk = a.downlink()
    assert txpk is not None, "no downlink"
    assert txpk["tmst"] == a.tmst + RX1_DELAY * 1_000_000
    down = device.read_downlink(txpk["phy"])
    assert (down["confirmed"], down["fport"], down["payload"], down["fcnt"]) == (True, 10, b"\x0a\x3c", 0)
    status = lambda: api.get(f"/devices/lw-1/commands/{command_id}").json()["status"]  # noqa: E731
    assert status() == "sent"
    assert a.push(device.uplink(1, TWO_TEMPERATURES, ack=True))
    eventually(status, lambda s: s == "delivered")
    # A confirmed uplink is acknowledged even with nothing to send.
    assert a.push(device.uplink(1, TWO_TEMPERATURES, confirmed=True))
    txpk = a.downlink()
    assert txpk is not None
    down = device.read_downlink(txpk["phy"])
    assert (down["ack"], down["fport"], down["fcnt"]) == (True, None, 1)


def test_an_ack_heard_after_a_restart_still_delivers_the_confirmed_command(
    tmp_path: Path, platform_database_url: str
) -> None:
    """The process that sent a confirmed downlink is gone when the device's ACK comes: the
    command read model says what the ACK acknowledges."""
    env = {"IOT_LORAWAN__RX1_DELAY_SECONDS": str(RX1_DELAY), "IOT_LORAWAN__PORT": str(free_udp_port())}
    with running_platform(tmp_path, platform_database_url, **env) as platform, \
            httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        device = abp(api, "lw-restart", 0x26011BDF)
        add_gateway(api, GW_A)
        gateway = Gateway(GW_A, platform.lorawan_port)
        assert gateway.pull()
        command_id = issue(api, "lw-restart", "set_interval", {"payload_hex": "0a3c"})
        assert gateway.push(device.uplink(1, TWO_TEMPERATURES))
        txpk = gateway.downlink()
        assert txpk is not None and device.read_downlink(txpk["phy"])["confirmed"] is True
    with running_platform(tmp_path, platform_database_url, **env) as platform, \
            httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        assert api.get(f"/devices/lw-restart/commands/{command_id}").json()["status"] == "sent"
        assert gateway.pull()
        assert gateway.push(device.uplink(1, TWO_TEMPERATURES, ack=True))
        eventually(lambda: api.get(f"/devices/lw-restart/commands/{command_id}").json()["status"],
                   lambda s: s == "delivered")
        assert gateway.downlink(timeout=RX1_DELAY + 1.5) is None  # not sent a second time
    gateway.close()


def test_a_downlink_the_gateway_cannot_send_in_rx1_goes_out_in_rx2_and_is_delivered(
    platform: RunningPlatform, api: httpx.Client, a: Gateway
) -> None:
    device = abp(api, "lw-rx2", 0x26011BDB)
    command_id = issue(api, "lw-rx2", "reboot", {"payload_hex": "01", "confirmed": False})
    assert a.push(device.uplink(1, TWO_TEMPERATURES))
    rx1 = a.downlink(error="TOO_LATE")
    assert rx1 is not None and (rx1["tmst"], rx1["freq"]) == (a.tmst + RX1_DELAY * 1_000_000, 868.1)
    rx2 = a.downlink()
    assert rx2 is not None, "no RX2 after the gateway refused RX1"
    assert (rx2["tmst"], rx2["freq"], rx2["datr"], rx2["phy"]) == (a.tmst + (RX1_DELAY + 1) * 1_000_000, 869.525,
                                                                "SF12BW125", rx1["phy"])
    down = device.read_downlink(rx2["phy"])
    assert (down["confirmed"], down["payload"]) == (False, b"\x01")
    eventually(lambda: api.get(f"/devices/lw-rx2/commands/{command_id}").json()["status"],
               lambda s: s == "delivered")
    assert frame_count(platform, "downlink_rx2") == 1


def test_a_link_check_request_is_answered_with_the_margin_and_the_gateway_count(
    platform: RunningPlatform, api: httpx.Client, gateways: tuple[Gateway, Gateway]
) -> None:
    device = abp(api, "lw-link", 0x26011BDC)
    a, b = gateways
    assert a.pull()
    frame = device.uplink(1, TWO_TEMPERATURES, f_opts=b"\x02")  # LinkCheckReq
    assert a.push(frame, snr=7.5) and b.push(frame, snr=-3.0)
    txpk = a.downlink()
    assert txpk is not None, "no LinkCheckAns"
    # SF7's demodulation floor is -7.5 dB: 7.5 dB of SNR is a margin of 15; two gateways heard it.
    assert device.read_downlink(txpk["phy"])["f_opts"] == bytes([0x02, 15, 2])
    eventually(lambda: readings(api, "lw-link"), lambda r: len(r) == 1)


def test_a_device_time_request_is_answered_with_gps_time(
    platform: RunningPlatform, api: httpx.Client, a: Gateway
) -> None:
    device = abp(api, "lw-time", 0x26011BDE)
    asked = time.time()
    assert a.push(device.uplink(1, TWO_TEMPERATURES, f_opts=b"\x0d"))  # DeviceTimeReq
    txpk = a.downlink()
    assert txpk is not None, "no DeviceTimeAns"
    f_opts = device.read_downlink(txpk["phy"])["f_opts"]
    assert f_opts[0] == 0x0D and len(f_opts) == 6
    gps = int.from_bytes(f_opts[1:5], "little") + f_opts[5] / 256
    unix = gps + 315_964_800 - 18  # GPS epoch 1980-01-06, 18 leap seconds behind
    assert asked - 1 <= unix <= time.time() + 1


def test_adr_moves_a_device_heard_well_at_sf12_to_dr5(
    platform: RunningPlatform, api: httpx.Client, a: Gateway
) -> None:
    device = abp(api, "lw-adr", 0x26011BDD)
    for _ in range(ADR_HISTORY):
        assert a.push(device.uplink(1, TWO_TEMPERATURES, adr=True), snr=5.0, datr="SF12BW125")
    txpk = a.downlink()
    assert txpk is not None, "no LinkADRReq"
    assert txpk["datr"] == "SF12BW125"  # RX1 answers at the uplink's data rate
    # LinkADRReq: DR5 at full power, on every channel the device has (ChMaskCntl 6), once.
    assert device.read_downlink(txpk["phy"])["f_opts"] == bytes([0x03, 0x50, 0x00, 0x00, 0x61])
    assert a.push(device.uplink(1, TWO_TEMPERATURES, adr=True, f_opts=b"\x03\x07"), snr=2.0, datr="SF7BW125")
    eventually(lambda: frame_count(platform, "adr_accepted"), lambda n: n == 1)
    assert len(eventually(lambda: readings(api, "lw-adr"), lambda r: len(r) == ADR_HISTORY + 1)) == ADR_HISTORY + 1


def test_the_raw_codec_stores_hex_and_keys_are_sealed_at_rest(
    platform: RunningPlatform, api: httpx.Client, gateways: tuple[Gateway, Gateway], platform_database_url: str
) -> None:
    device = abp(api, "lw-raw", 0x26011BDC, codec="raw")
    a, _ = gateways
    assert a.push(device.uplink(42, b"\xde\xad\xbe\xef"))
    [reading] = eventually(lambda: readings(api, "lw-raw"), lambda r: len(r) == 1)
    assert (reading["metrics"]["payload_hex"], reading["metrics"]["f_port"]) == ("deadbeef", 42)
    log = (platform.workdir / "platform.log").read_text()
    assert NWK not in log and APP not in log
    if platform_database_url.startswith("sqlite"):
        stored = b"".join(p.read_bytes() for p in Path(platform_database_url.removeprefix("sqlite:///")).parent.glob("iot.db*"))
        assert bytes.fromhex(NWK) not in stored and NWK.encode() not in stored and APP.encode() not in stored


def test_chirpstack_uplinks_published_with_mosquitto_pub_are_stored(tmp_path: Path, platform_database_url: str) -> None:
    with running_platform(tmp_path, platform_database_url, IOT_LORAWAN__CHIRPSTACK_UPLINKS="true") as platform, \
            httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
        abp(api, "lw-cs", 0x0101010101010101 & 0xFFFFFFFF)
        eui = f"{0x0101010101010101 & 0xFFFFFFFF:016x}"
        decoded = {"deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d", "time": "2026-11-30T10:00:00.123456789Z",
                   "deviceInfo": {"applicationId": "app-1", "devEui": eui, "deviceName": "th"},
                   "devAddr": "01010101", "fCnt": 10, "fPort": 1, "dr": 5, "object": {"temperature": 21.5, "battery": {"v": 3.1}},
                   "rxInfo": [{"gatewayId": "0016c001f153a14c", "rssi": -57, "snr": 10.2}],
                   "txInfo": {"frequency": 868100000}}
        encoded = {**decoded, "deduplicationId": "b1", "time": "2026-11-30T10:00:01Z", "fCnt": 11,
                   "data": base64.b64encode(TWO_TEMPERATURES).decode()}
        del encoded["object"]
        topic = f"application/app-1/device/{eui}/event/up"
        mosquitto_pub(platform.mqtt_port, topic, message=json.dumps(decoded))
        mosquitto_pub(platform.mqtt_port, topic, message=json.dumps(encoded))
        mosquitto_pub(platform.mqtt_port, topic, message="{not json")
        got = eventually(lambda: readings(api, "lw-cs"), lambda r: len(r) == 2)
        assert got[0]["timestamp"].startswith("2026-11-30T10:00:00.123456")
        assert (got[0]["metrics"]["temperature"], got[0]["metrics"]["battery_v"], got[0]["metrics"]["rssi"]) == (21.5, 3.1, -57)
        assert got[0]["tags"]["gateway"] == "0016c001f153a14c"
        assert (got[1]["metrics"]["temperature_3"], got[1]["metrics"]["f_cnt"]) == (27.2, 11)
        eventually(lambda: metric_line(platform, r'iot_readings_rejected_total\{protocol="lorawan",reason="undecodable"\}'),
                   lambda n: n == 1)


DEEP_JSON = b'{"x":' + b"[" * 1000 + b"]" * 1000 + b"}"


def test_malformed_gwmp_packets_are_counted_and_logged_once_and_the_next_uplink_is_stored(
    platform: RunningPlatform, api: httpx.Client, gateways: tuple[Gateway, Gateway]
) -> None:
    """Issue 12, defects 2 and 8: anyone who reaches UDP 1700 can send garbage, also in the
    name of a registered gateway. Given three of each kind of malformed packet (a body of the
    wrong shape, JSON nested 1,000 deep, truncated headers, random bytes, a PHY payload that is
    no frame, an LPP payload that is no LPP), when a good uplink follows, then it is stored,
    every bad one is counted by reason, and the log holds no traceback."""
    device = abp(api, "lw-1", 0x26011BDA)
    a, _ = gateways
    eui = bytes.fromhex(GW_A)
    push, tx_ack = bytes([2, 0, 1, 0]) + eui, bytes([2, 0, 1, 5]) + eui
    malformed = {
        "bad_rxpk": push + b'{"rxpk":5}',
        "bad_txpk_ack": tx_ack + b'{"txpk_ack":"x"}',
        "nesting_too_deep": push + DEEP_JSON,
        "short_header": b"\x02\x00",
        "not_json": push + bytes(range(200, 256)),
        "bad_version": bytes(range(40, 90)),
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for packet in malformed.values():
            for _ in range(3):
                udp.sendto(packet, ("127.0.0.1", platform.lorawan_port))
    for i in range(3):
        assert a.push(b"\x41" + bytes([i]) * 20)  # a PUSH_DATA whose frame is no LoRaWAN R1 frame
        assert a.push(device.uplink(1, b"\x03\x67"))  # a real frame whose payload is cut-short LPP
    assert a.push(device.uplink(1, TWO_TEMPERATURES))
    [reading] = eventually(lambda: readings(api, "lw-1"), lambda r: len(r) == 1)
    assert reading["metrics"]["temperature_3"] == 27.2
    for reason in malformed:
        assert eventually(lambda r=reason: metric_line(platform, rf'iot_gwmp_rejected_total{{reason="{r}"}}'),
                          lambda n: n == 3) == 3
    assert frame_count(platform, "malformed") == 3
    assert metric_line(platform, r'iot_readings_rejected_total{protocol="lorawan",reason="undecodable"}') == 3
    log = (platform.workdir / "platform.log").read_text()
    assert "Traceback" not in log
    assert len(re.findall(r"GWMP packet from .* refused \(bad_rxpk\)", log)) == 1


def test_a_flood_of_random_gwmp_datagrams_leaves_the_listener_serving(
    platform: RunningPlatform, api: httpx.Client, gateways: tuple[Gateway, Gateway]
) -> None:
    """Given 3,000 seeded random datagrams, a third of them random bytes and the rest PUSH_DATA,
    PULL_DATA and TX_ACK headers of a registered gateway with random JSON bodies, when a good
    uplink follows, then it is stored, every datagram that was refused is counted, and the log
    holds no traceback."""
    device = abp(api, "lw-1", 0x26011BDA)
    a, _ = gateways
    rng = random.Random(8)
    values: list[Any] = [None, True, 5, -1.5, "x", "", [], {}, [1, "a"], {"data": 5}, {"tmst": "x"},
                         [{"data": "!!", "freq": "nan"}], [{"tmst": 1, "freq": 1e400, "datr": 1, "rssi": None, "data": "AA=="}]]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for i in range(3000):
            if i % 3 == 0:
                packet = rng.randbytes(rng.randint(0, 40))
            else:
                header = bytes([2]) + rng.randbytes(2) + bytes([rng.choice([0, 2, 5])]) + bytes.fromhex(GW_A)
                body = {rng.choice(["rxpk", "stat", "txpk_ack", "x"]): rng.choice(values) for _ in range(rng.randint(0, 3))}
                packet = header + (json.dumps(body).encode() if rng.random() < 0.8 else rng.randbytes(30))
            udp.sendto(packet, ("127.0.0.1", platform.lorawan_port))
    frame = device.uplink(1, TWO_TEMPERATURES)
    eventually(lambda: a.push(frame), bool)  # once the flood is worked off (a repeat is stored once)
    [reading] = eventually(lambda: readings(api, "lw-1"), lambda r: len(r) == 1)
    assert reading["metrics"]["temperature_3"] == 27.2
    text = httpx.get(f"{platform.base_url}/metrics/", headers=platform.headers).text
    assert sum(float(n) for n in re.findall(r"^iot_gwmp_rejected_total{.*} (\S+)", text, re.MULTILINE)) > 0
    assert "Traceback" not in (platform.workdir / "platform.log").read_text()

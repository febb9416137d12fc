"""Anyone who reaches UDP 1700 or a LoRa radio can send garbage: the GWMP parser, the LoRaWAN
PHY parser and the Cayenne LPP codec raise nothing but their own errors on any bytes and any
structured-but-wrong JSON, and the gateway endpoint counts each refused packet by reason and
logs one line per reason a minute, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iot_platform.presentation.log_limits import OncePerInterval
from iot_platform.presentation.lorawan import phy
from iot_platform.presentation.lorawan.codecs import UndecodablePayload, cayenne_lpp
from iot_platform.presentation.lorawan.gwmp import (
    GatewayServer,
    Ident,
    MalformedPacket,
    RxInfo,
    parse_packet,
    received,
)

EUI = bytes.fromhex("aa555a0000000000")
DEEP_JSON = b'{"x":' + b"[" * 1000 + b"]" * 1000 + b"}"


def header(ident: Ident, token: bytes = b"\x12\x34") -> bytes:
    eui = EUI if ident in (Ident.PUSH_DATA, Ident.PULL_DATA, Ident.TX_ACK) else b""
    return bytes([2]) + token + bytes([ident]) + eui


MALFORMED = {
    "rxpk_not_a_list": (header(Ident.PUSH_DATA) + b'{"rxpk":5}', "bad_rxpk"),
    "rxpk_of_numbers": (header(Ident.PUSH_DATA) + b'{"rxpk":[1,2]}', "bad_rxpk"),
    "stat_not_an_object": (header(Ident.PUSH_DATA) + b'{"stat":"x"}', "bad_stat"),
    "txpk_ack_not_an_object": (header(Ident.TX_ACK) + b'{"txpk_ack":"x"}', "bad_txpk_ack"),
    "deep_json": (header(Ident.PUSH_DATA) + DEEP_JSON, "nesting_too_deep"),
    "not_json": (header(Ident.PUSH_DATA) + b"\xff\xfe{", "not_json"),
    "body_not_an_object": (header(Ident.PUSH_DATA) + b"[1]", "not_an_object"),
    "truncated_header": (b"\x02\x12", "short_header"),
    "push_without_eui": (bytes([2, 0, 0, 0, 1, 2]), "short_header"),
    "bad_version": (bytes([9, 0, 0, 0]) + EUI, "bad_version"),
    "unknown_type": (bytes([2, 0, 0, 77]), "unknown_type"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_each_kind_of_malformed_packet_is_refused_with_its_reason(name: str) -> None:
    data, reason = MALFORMED[name]
    with pytest.raises(MalformedPacket) as refused:
        parse_packet(data)
    assert refused.value.reason == reason


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_a_packet_or_a_malformed_packet(data: bytes) -> None:
    try:
        packet = parse_packet(data)
    except MalformedPacket:
        return
    if packet.ident is Ident.PUSH_DATA:
        received(packet)  # never raises: a bad rxpk is dropped and counted


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=30,
)
RXPK_FIELDS = ["data", "tmst", "freq", "datr", "codr", "rssi", "rssis", "lsnr", "rfch", "chan", "tmms", "stat", "modu"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(RXPK_FIELDS), JSON, max_size=13), max_size=4), JSON)
def test_structured_but_wrong_json_is_refused_or_dropped_never_raised(rxpk: list[dict[str, Any]], other: Any) -> None:
    """Given a PUSH_DATA whose rxpk objects hold the right names with values of any type, when
    it is parsed and its frames read, then only MalformedPacket escapes, and each frame is
    read with finite numbers or dropped."""
    for body in ({"rxpk": rxpk}, {"rxpk": other}, {"stat": other}, other):
        try:
            packet = parse_packet(header(Ident.PUSH_DATA) + json.dumps(body).encode())
        except MalformedPacket:
            continue
        frames, dropped = received(packet)
        assert len(frames) + dropped <= len(packet.body.get("rxpk") or []) if packet.body else True
        for info, _ in frames:
            assert all(abs(v) < float("inf") for v in (info.rssi, info.snr, info.frequency_hz))
    for body in ({"txpk_ack": other}, other):
        try:
            parse_packet(header(Ident.TX_ACK) + json.dumps(body).encode())
        except MalformedPacket:
            pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_phy_payloads_are_a_frame_or_a_malformed_frame(data: bytes) -> None:
    try:
        phy.parse(data)
    except phy.MalformedFrame:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255))
def test_arbitrary_lpp_payloads_are_metrics_or_undecodable(data: bytes, f_port: int) -> None:
    try:
        metrics = cayenne_lpp(f_port, data)
    except UndecodablePayload:
        return
    assert metrics and all(isinstance(name, str) for name in metrics)


def test_an_lpp_payload_longer_than_a_radio_frame_is_refused_unread() -> None:
    with pytest.raises(UndecodablePayload, match="over the 255"):
        cayenne_lpp(1, bytes.fromhex("03670110") * 100)  # 100 good temperatures: 400 bytes


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)


async def _known(eui: str) -> bool:
    return True


async def _tx_ack(eui: str, token: bytes, error: str) -> None:
    pass


@pytest.mark.asyncio
async def test_the_gateway_endpoint_counts_garbage_and_logs_it_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    """Given three of each kind of malformed packet and then a good PUSH_DATA, when they come
    in, then each is counted by reason, each reason is logged once without a traceback, and
    the good frame is handed on."""
    reasons: list[str] = []
    frames: list[tuple[RxInfo, bytes]] = []
    server = GatewayServer(_known, lambda info, phy_payload: frames.append((info, phy_payload)), _tx_ack,
                           lambda kind: None, reasons.append)
    server.connection_made(_Transport())  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    for data, _ in MALFORMED.values():
        for _ in range(3):
            server.datagram_received(data, ("127.0.0.1", 9))
    good = {"rxpk": [{"tmst": 1, "freq": 868.1, "datr": "SF7BW125", "rssi": -50, "lsnr": 9.0,
                      "data": base64.b64encode(b"\x40\x01\x02\x03\x04\x00\x00\x00\x01\xaa\x01\x02\x03\x04").decode()}]}
    server.datagram_received(header(Ident.PUSH_DATA) + json.dumps(good).encode(), ("127.0.0.1", 9))
    await asyncio.sleep(0.05)
    await server.drain()
    assert sorted(reasons) == sorted(reason for _, reason in MALFORMED.values() for _ in range(3))
    assert len(frames) == 1
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == len({reason for _, reason in MALFORMED.values()})
    assert not any(r.exc_info or "Traceback" in r.getMessage() for r in caplog.records)


def test_a_limited_log_writes_one_line_per_kind_per_interval_and_says_how_many_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = OncePerInterval(logging.getLogger("test.limited"), interval=60, clock=lambda: now[0])
    caplog.set_level(logging.WARNING)
    assert limited("a", "bad %s", 1)
    assert not limited("a", "bad %s", 2)
    assert not limited("a", "bad %s", 3)
    assert limited("b", "other")
    now[0] = 61
    assert limited("a", "bad %s", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1", "other", "bad 4 (2 more like it in the last 60 s)"]

"""The Semtech UDP packet forwarder protocol (GWMP, version 2), spoken by LoRa gateways.

Gateway -> server: PUSH_DATA (received packets, statistics; answered PUSH_ACK), PULL_DATA (a
keep-alive that opens the downlink path through NATs; answered PULL_ACK), TX_ACK (the outcome
of a downlink). Server -> gateway: PULL_RESP (a packet to transmit), sent to the address the
gateway's last PULL_DATA came from. Unknown gateways get no answer at all, and are counted.
The format is a 4- or 12-byte header and a JSON body, so it is parsed here by hand.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, cast

from iot_platform.application.telemetry.model import Rejection
from iot_platform.presentation.log_limits import OncePerInterval
from iot_platform.presentation.payloads import PayloadLimits, PayloadRejected, decode_json

log = logging.getLogger(__name__)

VERSION = 2


class Ident(IntEnum):
    PUSH_DATA = 0
    PUSH_ACK = 1
    PULL_DATA = 2
    PULL_RESP = 3
    PULL_ACK = 4
    TX_ACK = 5


class MalformedPacket(ValueError):
    """A datagram that is not a GWMP packet the server takes; ``reason`` labels the
    ``iot_gwmp_rejected_total`` counter (a few fixed words, never the sender's bytes)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


MAX_PACKET_BYTES = 65_507
"""The largest UDP payload over IPv4; a gateway's PUSH_DATA is far smaller."""
BODY_LIMITS = PayloadLimits(max_bytes=MAX_PACKET_BYTES, max_depth=8, max_items=20_000)
"""A PUSH_DATA body is 4 levels deep (``{"rxpk": [{"rsig": [{...}]}]}``); a few more are left
for forwarders that add fields. Deeper, or more values, is refused before it is looked at."""


@dataclass(frozen=True, slots=True)
class Packet:
    version: int
    token: bytes
    ident: Ident
    gateway_eui: str | None
    body: dict[str, Any] | None


def parse_packet(data: bytes) -> Packet:
    """Raises ``MalformedPacket`` (only) for anything but a well-formed GWMP v1/v2 packet whose
    body, if any, is a JSON object of the shape its type needs (``rxpk`` a list of objects,
    ``stat`` and ``txpk_ack`` objects)."""
    if len(data) < 4:
        raise MalformedPacket("shorter than a GWMP header", "short_header")
    if len(data) > MAX_PACKET_BYTES:
        raise MalformedPacket(f"{len(data)} bytes is over {MAX_PACKET_BYTES}", "too_large")
    version, ident_byte = data[0], data[3]
    if version not in (1, 2):
        raise MalformedPacket(f"protocol version {version}", "bad_version")
    try:
        ident = Ident(ident_byte)
    except ValueError:
        raise MalformedPacket(f"unknown packet type {ident_byte}", "unknown_type") from None
    eui = None
    rest = data[4:]
    if ident in (Ident.PUSH_DATA, Ident.PULL_DATA, Ident.TX_ACK):
        if len(data) < 12:
            raise MalformedPacket(f"{ident.name} without a gateway EUI", "short_header")
        eui, rest = data[4:12].hex(), data[12:]
    body = None
    if rest.strip(b"\0"):
        try:
            body = decode_json(rest.rstrip(b"\0"), BODY_LIMITS)
        except PayloadRejected as exc:
            reason = "nesting_too_deep" if exc.reason is Rejection.NESTING_TOO_DEEP else (
                "too_large" if exc.reason is Rejection.PAYLOAD_TOO_LARGE else "not_json")
            raise MalformedPacket(f"{ident.name} body: {exc}", reason) from None
        if not isinstance(body, dict):
            raise MalformedPacket(f"{ident.name} body is not an object", "not_an_object")
        _check_shape(ident, body)
    return Packet(version, data[1:3], ident, eui, body)


def _check_shape(ident: Ident, body: dict[str, Any]) -> None:
    """The members the server reads have the type it reads them as; one wrong one refuses the
    packet (the rest of a PUSH_DATA is not guessed at)."""
    if ident is Ident.PUSH_DATA:
        rxpk = body.get("rxpk")
        if rxpk is not None and not (isinstance(rxpk, list) and all(isinstance(p, dict) for p in rxpk)):
            raise MalformedPacket("rxpk is not a list of objects", "bad_rxpk")
        if body.get("stat") is not None and not isinstance(body["stat"], dict):
            raise MalformedPacket("stat is not an object", "bad_stat")
    elif ident is Ident.TX_ACK:
        ack = body.get("txpk_ack")
        if ack is not None and not isinstance(ack, dict):
            raise MalformedPacket("txpk_ack is not an object", "bad_txpk_ack")


def answer(packet: Packet, ident: Ident) -> bytes:
    return bytes([packet.version]) + packet.token + bytes([ident])


@dataclass(frozen=True, slots=True)
class RxInfo:
    """How one gateway heard a frame."""

    gateway_eui: str
    tmst: int
    """The gateway's microsecond counter at reception: downlinks are timed against it."""
    frequency_hz: int
    data_rate: str
    coding_rate: str
    rssi: float
    snr: float
    rf_chain: int = 0
    channel: int = 0
    heard_at: float = field(default=0.0, compare=False)
    """This process's monotonic clock when the PUSH_DATA came (0: unknown): how much of the
    receive window's delay is left is told by it, not by the gateway's counter."""
    heard_utc: float = field(default=0.0, compare=False)
    """The wall clock (Unix seconds) then, for a device asking the time (0: unknown)."""
    gps_time_ms: int | None = field(default=None, compare=False)
    """The gateway's GPS time of the reception (rxpk ``tmms``), when it has a GPS fix."""

    def as_dict(self) -> dict[str, object]:
        return {"gateway": self.gateway_eui, "rssi": self.rssi, "snr": self.snr,
                "channel": self.channel}


def received(packet: Packet) -> tuple[list[tuple[RxInfo, bytes]], int]:
    """The packets of a PUSH_DATA that passed the radio CRC, and how many were left out
    (bad CRC, or an rxpk missing what a frame needs)."""
    assert packet.gateway_eui is not None
    found: list[tuple[RxInfo, bytes]] = []
    dropped = 0
    heard_at, heard_utc = time.monotonic(), time.time()
    for rxpk in (packet.body or {}).get("rxpk") or []:
        try:
            if rxpk.get("stat", 1) != 1 or rxpk.get("modu", "LORA") != "LORA":
                dropped += 1
                continue
            phy = base64.b64decode(rxpk["data"], validate=True)
            info = RxInfo(
                gateway_eui=packet.gateway_eui,
                tmst=int(rxpk["tmst"]),
                frequency_hz=round(_finite(rxpk["freq"]) * 1_000_000),
                data_rate=str(rxpk["datr"]),
                coding_rate=str(rxpk.get("codr", "4/5")),
                rssi=_finite(rxpk.get("rssis", rxpk["rssi"])),
                snr=_finite(rxpk.get("lsnr", 0.0)),
                rf_chain=int(rxpk.get("rfch", 0)),
                channel=int(rxpk.get("chan", 0)),
                heard_at=heard_at,
                heard_utc=heard_utc,
                gps_time_ms=int(rxpk["tmms"]) if rxpk.get("tmms") is not None else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, binascii.Error):
            dropped += 1
            continue
        found.append((info, phy))
    return found, dropped


def _finite(value: Any) -> float:
    """A number from a gateway: NaN or an infinity would poison the reading built from it."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def txpk(phy: bytes, *, tmst: int, frequency_hz: int, data_rate: str, coding_rate: str,
         power: int, rf_chain: int = 0) -> dict[str, Any]:
    """A downlink for the gateway to send at ``tmst`` (its own counter), IQ inverted as
    downlinks to devices are."""
    return {
        "imme": False, "tmst": tmst & 0xFFFFFFFF, "freq": frequency_hz / 1_000_000,
        "rfch": rf_chain, "powe": power, "modu": "LORA", "datr": data_rate, "codr": coding_rate,
        "ipol": True, "size": len(phy), "data": base64.b64encode(phy).decode(), "ncrc": True,
    }


PushHandler = Callable[[RxInfo, bytes], None]
TxAckHandler = Callable[[str, bytes, str], Awaitable[None]]
"""(gateway EUI, PULL_RESP token, error) of a TX_ACK."""
GatewayCheck = Callable[[str], Awaitable[bool]]
Count = Callable[[str], None]


class GatewayServer(asyncio.DatagramProtocol):
    """The UDP endpoint gateways talk to. Received frames go to ``on_frame`` (the network
    server gathers copies of one frame); everything else is answered here."""

    def __init__(self, known: GatewayCheck, on_frame: PushHandler, on_tx_ack: TxAckHandler,
                 count: Count, reject: Count | None = None) -> None:
        self._known = known
        self._on_frame = on_frame
        self._on_tx_ack = on_tx_ack
        self._count = count
        self._reject = reject or (lambda reason: None)
        """Counts a refused packet by reason (``iot_gwmp_rejected_total``)."""
        self._refused = OncePerInterval(log)
        """Refused packets: one line per reason a minute at most; every one is counted."""
        self._transport: asyncio.DatagramTransport | None = None
        self._pull_addresses: dict[str, tuple[str, int]] = {}
        self._token = int.from_bytes(os.urandom(2))
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            packet = parse_packet(data)
        except MalformedPacket as exc:
            self._refuse(exc.reason, "GWMP packet from %s refused (%s): %s", addr, exc.reason, exc)
            self._count("malformed")
            return
        if packet.ident not in (Ident.PUSH_DATA, Ident.PULL_DATA, Ident.TX_ACK):
            self._refuse("unexpected_type", "GWMP packet from %s refused: a gateway does not send %s",
                         addr, packet.ident.name)
            self._count("unexpected")
            return
        task = asyncio.get_running_loop().create_task(self._handle(packet, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, packet: Packet, addr: tuple[str, int]) -> None:
        assert packet.gateway_eui is not None and self._transport is not None
        try:
            if not await self._known(packet.gateway_eui):
                self._count("unknown_gateway")
                return
            if packet.ident is Ident.PUSH_DATA:
                self._transport.sendto(answer(packet, Ident.PUSH_ACK), addr)
                self._count("push_data")
                frames, dropped = received(packet)
                for _ in range(dropped):
                    self._count("rxpk_dropped")
                for info, phy in frames:
                    self._on_frame(info, phy)
            elif packet.ident is Ident.PULL_DATA:
                self._pull_addresses[packet.gateway_eui] = addr
                self._transport.sendto(answer(packet, Ident.PULL_ACK), addr)
                self._count("pull_data")
            else:
                error = ((packet.body or {}).get("txpk_ack") or {}).get("error", "NONE")
                self._count("tx_ack")
                await self._on_tx_ack(packet.gateway_eui, packet.token, str(error))
        except Exception as exc:  # one gateway's packet must never stop the server
            self._refuse("failed", "GWMP %s from %s failed: %s: %s", packet.ident.name,
                         packet.gateway_eui, type(exc).__name__, exc)

    def _refuse(self, reason: str, message: str, *args: object) -> None:
        self._reject(reason)
        self._refused(reason, message, *args)

    def send(self, gateway_eui: str, tx: dict[str, Any]) -> bytes | None:
        """Sends a PULL_RESP; returns its token (a TX_ACK names it), or None if the gateway
        has not pulled yet, so no path to it is known."""
        addr = self._pull_addresses.get(gateway_eui)
        if addr is None or self._transport is None:
            return None
        # Counted, not random: a TX_ACK is matched by its token, and random ones would collide
        # among a gateway's PULL_RESPs awaiting theirs long before 65,536 are sent.
        self._token = (self._token + 1) & 0xFFFF
        token = self._token.to_bytes(2, "big")
        body = json.dumps({"txpk": tx}, separators=(",", ":")).encode()
        self._transport.sendto(struct.pack("B2sB", VERSION, token, Ident.PULL_RESP) + body, addr)
        return token

    def can_reach(self, gateway_eui: str) -> bool:
        return gateway_eui in self._pull_addresses

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

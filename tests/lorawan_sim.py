"""A LoRaWAN 1.0.x end device and a Semtech UDP gateway, written for the tests apart from the
platform's codec (nothing here imports it), so the two can check each other. The frame layout
follows the LoRaWAN 1.0.x specification, sections 4 and 6; the gateway talks GWMP v2 over a real
UDP socket.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC


def aes_encrypt(key: bytes, block: bytes) -> bytes:
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()


def cmac4(key: bytes, message: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(message)
    return c.finalize()[0:4]


def le(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


def keystream_xor(key: bytes, data: bytes, direction: int, dev_addr: int, fcnt: int) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 16):
        a = bytes([1, 0, 0, 0, 0, direction]) + le(dev_addr, 4) + le(fcnt, 4) + bytes([0, i // 16 + 1])
        s = aes_encrypt(key, a)
        out += bytes(x ^ y for x, y in zip(data[i:i + 16], s, strict=False))
    return bytes(out)


@dataclass
class EndDevice:
    dev_eui: int
    join_eui: int = 0
    app_key: bytes = b""
    dev_addr: int = 0
    nwk_s_key: bytes = b""
    app_s_key: bytes = b""
    fcnt_up: int = 0
    used_nonces: list[int] = field(default_factory=list)
    rx2_dr: int = 0
    """The RX2 data rate index and RX1 delay the last join accept told (DLSettings, RxDelay)."""
    rx1_delay: int = 1

    def uplink(self, fport: int, payload: bytes, *, confirmed: bool = False, ack: bool = False,
               fcnt: int | None = None, mic_key: bytes | None = None, f_opts: bytes = b"",
               adr: bool = False, adr_ack_req: bool = False) -> bytes:
        """A data uplink; ``fcnt`` defaults to the next counter (which is then consumed);
        ``f_opts``: MAC commands, in the clear; ``adr``: the network may choose its data rate."""
        if fcnt is None:
            fcnt, self.fcnt_up = self.fcnt_up, self.fcnt_up + 1
        mhdr = 0x80 if confirmed else 0x40
        fctrl = (0x80 if adr else 0) | (0x40 if adr_ack_req else 0) | (0x20 if ack else 0) | len(f_opts)
        body = (bytes([mhdr]) + le(self.dev_addr, 4) + bytes([fctrl]) + le(fcnt & 0xFFFF, 2) + f_opts
                + bytes([fport]) + keystream_xor(self.app_s_key, payload, 0, self.dev_addr, fcnt))
        b0 = bytes([0x49, 0, 0, 0, 0, 0]) + le(self.dev_addr, 4) + le(fcnt, 4) + bytes([0, len(body)])
        return body + cmac4(mic_key or self.nwk_s_key, b0 + body)

    def join_request(self, dev_nonce: int | None = None) -> bytes:
        nonce = int.from_bytes(os.urandom(2), "little") if dev_nonce is None else dev_nonce
        self.used_nonces.append(nonce)
        body = bytes([0x00]) + le(self.join_eui, 8) + le(self.dev_eui, 8) + le(nonce, 2)
        return body + cmac4(self.app_key, body)

    def accept(self, phy: bytes) -> None:
        """Takes a join accept: checks its MIC and derives the session (fcnt restarts)."""
        assert phy[0] >> 5 == 1, "not a join accept"
        clear = aes_encrypt(self.app_key, phy[1:17]) if len(phy) == 17 else b"".join(
            aes_encrypt(self.app_key, phy[i:i + 16]) for i in range(1, len(phy), 16))
        fields, mic = clear[:-4], clear[-4:]
        assert cmac4(self.app_key, phy[:1] + fields) == mic, "join accept MIC"
        app_nonce, net_id = fields[0:3], fields[3:6]
        self.dev_addr = int.from_bytes(fields[6:10], "little")
        self.rx2_dr, self.rx1_delay = fields[10] & 0x0F, fields[11]
        nonce = le(self.used_nonces[-1], 2)
        self.nwk_s_key = aes_encrypt(self.app_key, (b"\x01" + app_nonce + net_id + nonce).ljust(16, b"\0"))
        self.app_s_key = aes_encrypt(self.app_key, (b"\x02" + app_nonce + net_id + nonce).ljust(16, b"\0"))
        self.fcnt_up = 0

    def read_downlink(self, phy: bytes) -> dict[str, Any]:
        """A downlink's fields, after checking its MIC; the payload decrypted."""
        mtype = phy[0] >> 5
        assert mtype in (3, 5), f"not a data downlink: {mtype}"
        dev_addr = int.from_bytes(phy[1:5], "little")
        assert dev_addr == self.dev_addr
        fctrl, fcnt = phy[5], int.from_bytes(phy[6:8], "little")
        body, mic = phy[:-4], phy[-4:]
        b0 = bytes([0x49, 0, 0, 0, 0, 1]) + le(dev_addr, 4) + le(fcnt, 4) + bytes([0, len(body)])
        assert cmac4(self.nwk_s_key, b0 + body) == mic, "downlink MIC"
        opts_end = 8 + (fctrl & 0x0F)
        fport = body[opts_end] if len(body) > opts_end else None
        data = body[opts_end + 1:]
        key = self.nwk_s_key if fport == 0 else self.app_s_key
        return {"confirmed": mtype == 5, "ack": bool(fctrl & 0x20), "fcnt": fcnt, "fport": fport,
                "f_opts": body[8:opts_end],
                "payload": keystream_xor(key, data, 1, dev_addr, fcnt) if data else b""}


class Gateway:
    """A packet forwarder on a real UDP socket: PUSH_DATA/PULL_DATA out, ACKs and PULL_RESP in."""

    def __init__(self, eui: str, port: int, host: str = "127.0.0.1") -> None:
        self.eui = bytes.fromhex(eui)
        self.server = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.tmst = 1_000_000

    def close(self) -> None:
        self.sock.close()

    def _send(self, ident: int, body: bytes = b"") -> bytes:
        token = os.urandom(2)
        self.sock.sendto(bytes([2]) + token + bytes([ident]) + self.eui + body, self.server)
        return token

    def _receive(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recvfrom(65535)[0]
        except TimeoutError:
            return None

    def push(self, *frames: bytes, rssi: float = -60.0, snr: float = 7.5, crc_ok: bool = True,
             timeout: float = 2.0, datr: str = "SF7BW125") -> bool:
        """PUSH_DATA with the frames; True if PUSH_ACK came back with the token."""
        rxpk = []
        for phy in frames:
            self.tmst += 2_000_000
            rxpk.append({"tmst": self.tmst, "chan": 0, "rfch": 0, "freq": 868.1, "stat": 1 if crc_ok else -1,
                         "modu": "LORA", "datr": datr, "codr": "4/5", "rssi": rssi, "lsnr": snr,
                         "size": len(phy), "data": base64.b64encode(phy).decode()})
        token = self._send(0, json.dumps({"rxpk": rxpk}).encode())
        answer = self._receive(timeout)
        return answer is not None and answer[1:3] == token and answer[3] == 1

    def pull(self, timeout: float = 2.0) -> bool:
        token = self._send(2)
        answer = self._receive(timeout)
        return answer is not None and answer[1:3] == token and answer[3] == 4

    def downlink(self, timeout: float = 10.0, error: str = "NONE") -> dict[str, Any] | None:
        """The next PULL_RESP's txpk, or None. It is answered with a TX_ACK carrying ``error``
        (``TOO_LATE``, say, as a forwarder does when the time to send has passed)."""
        give_up = time.monotonic() + timeout
        while (left := give_up - time.monotonic()) > 0:
            packet = self._receive(left)
            if packet is None:
                return None
            if packet[3] == 3:
                self.sock.sendto(bytes([2]) + packet[1:3] + bytes([5]) + self.eui
                                 + json.dumps({"txpk_ack": {"error": error}}).encode(), self.server)
                txpk: dict[str, Any] = json.loads(packet[4:])["txpk"]
                txpk["phy"] = base64.b64decode(txpk["data"])
                return txpk
        return None

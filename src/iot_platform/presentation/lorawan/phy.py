"""LoRaWAN 1.0.x PHYPayloads: parsing, MIC, payload encryption, join accept, session keys.

Written by hand because no maintained Python library covers the network-server side (parsing
uplinks, building join accepts and downlinks); every cryptographic step is `cryptography`'s
AES and AES-CMAC, laid out as in the LoRaWAN 1.0.x specification (sections 4 and 6). Byte order
on the air is little endian; EUIs and DevAddrs are shown most significant byte first, as hex.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

MIC_SIZE = 4


class MType(IntEnum):
    JOIN_REQUEST = 0
    JOIN_ACCEPT = 1
    UNCONFIRMED_UP = 2
    UNCONFIRMED_DOWN = 3
    CONFIRMED_UP = 4
    CONFIRMED_DOWN = 5
    PROPRIETARY = 7


class MalformedFrame(ValueError):
    pass


def _hex(little_endian: bytes) -> str:
    return little_endian[::-1].hex()


def _wire(hex_value: str) -> bytes:
    return bytes.fromhex(hex_value)[::-1]


@dataclass(frozen=True, slots=True)
class DataFrame:
    mtype: MType
    dev_addr: str
    adr: bool
    adr_ack_req: bool
    """Uplink: the device has heard no downlink for ADR_ACK_LIMIT uplinks and asks for one."""
    ack: bool
    """Uplink: the device acknowledges the last confirmed downlink."""
    f_cnt16: int
    f_opts: bytes
    f_port: int | None
    frm_payload: bytes
    """Still encrypted."""
    mic: bytes
    signed: bytes
    """MHDR .. FRMPayload: what the MIC covers."""

    @property
    def uplink(self) -> bool:
        return self.mtype in (MType.UNCONFIRMED_UP, MType.CONFIRMED_UP)

    @property
    def confirmed(self) -> bool:
        return self.mtype in (MType.CONFIRMED_UP, MType.CONFIRMED_DOWN)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    join_eui: str
    dev_eui: str
    dev_nonce: int
    mic: bytes
    signed: bytes


def parse(phy: bytes) -> DataFrame | JoinRequest:
    """Raises ``MalformedFrame`` for anything that is not a well-formed 1.0 uplink or downlink."""
    if len(phy) < 1 + MIC_SIZE:
        raise MalformedFrame(f"{len(phy)} bytes is too short for a PHYPayload")
    mhdr = phy[0]
    if mhdr & 0x03 != 0:
        raise MalformedFrame(f"LoRaWAN major version {mhdr & 0x03} is not R1")
    try:
        mtype = MType(mhdr >> 5)
    except ValueError:
        raise MalformedFrame(f"message type {mhdr >> 5} is reserved") from None
    signed, mic = phy[:-MIC_SIZE], phy[-MIC_SIZE:]
    if mtype is MType.JOIN_REQUEST:
        if len(phy) != 23:
            raise MalformedFrame(f"a join request has 23 bytes, not {len(phy)}")
        (dev_nonce,) = struct.unpack_from("<H", phy, 17)
        return JoinRequest(_hex(phy[1:9]), _hex(phy[9:17]), dev_nonce, mic, signed)
    if mtype in (MType.JOIN_ACCEPT, MType.PROPRIETARY):
        raise MalformedFrame(f"{mtype.name.lower()} frames are not taken from devices")
    if len(signed) < 8:
        raise MalformedFrame("the frame header is cut short")
    fctrl = signed[5]
    (f_cnt16,) = struct.unpack_from("<H", signed, 6)
    opts_end = 8 + (fctrl & 0x0F)
    if len(signed) < opts_end:
        raise MalformedFrame("FOptsLen runs past the frame")
    f_port = signed[opts_end] if len(signed) > opts_end else None
    payload = signed[opts_end + 1:]
    if f_port == 0 and fctrl & 0x0F:
        raise MalformedFrame("MAC commands both in FOpts and on FPort 0")
    return DataFrame(
        mtype=mtype,
        dev_addr=_hex(signed[1:5]),
        adr=bool(fctrl & 0x80),
        adr_ack_req=bool(fctrl & 0x40) and mtype in (MType.UNCONFIRMED_UP, MType.CONFIRMED_UP),
        ack=bool(fctrl & 0x20),
        f_cnt16=f_cnt16,
        f_opts=signed[8:opts_end],
        f_port=f_port,
        frm_payload=payload,
        mic=mic,
        signed=signed,
    )


def _cmac(key: bytes, data: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def _block(prefix: int, uplink: bool, dev_addr: str, f_cnt: int, last: int) -> bytes:
    return struct.pack("<B4xB4sIxB", prefix, 0 if uplink else 1, _wire(dev_addr), f_cnt, last)


def data_mic(nwk_s_key: bytes, signed: bytes, uplink: bool, dev_addr: str, f_cnt: int) -> bytes:
    """The MIC of a data frame under its 32-bit counter (B0 block, section 4.4)."""
    b0 = _block(0x49, uplink, dev_addr, f_cnt, len(signed))
    return _cmac(nwk_s_key, b0 + signed)[:MIC_SIZE]


def crypt_payload(key: bytes, payload: bytes, uplink: bool, dev_addr: str, f_cnt: int) -> bytes:
    """Encrypts or decrypts FRMPayload (the same XOR with the A_i key stream, section 4.3.3)."""
    if not payload:
        return b""
    blocks = (len(payload) + 15) // 16
    stream_in = b"".join(_block(0x01, uplink, dev_addr, f_cnt, i) for i in range(1, blocks + 1))
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    stream = encryptor.update(stream_in) + encryptor.finalize()
    return bytes(a ^ b for a, b in zip(payload, stream, strict=False))


def join_request_mic(app_key: bytes, request: JoinRequest) -> bytes:
    return _cmac(app_key, request.signed)[:MIC_SIZE]


@dataclass(frozen=True, slots=True)
class SessionKeys:
    nwk_s_key: bytes
    app_s_key: bytes


def derive_session_keys(app_key: bytes, app_nonce: bytes, net_id: bytes, dev_nonce: int) -> SessionKeys:
    """NwkSKey and AppSKey of a join (section 6.2.5); nonces and NetID as sent on the air."""
    tail = app_nonce + net_id + struct.pack("<H", dev_nonce)
    encryptor = Cipher(algorithms.AES(app_key), modes.ECB()).encryptor()
    keys = encryptor.update((b"\x01" + tail).ljust(16, b"\0") + (b"\x02" + tail).ljust(16, b"\0"))
    return SessionKeys(nwk_s_key=keys[:16], app_s_key=keys[16:32])


def join_accept(
    app_key: bytes, app_nonce: bytes, net_id: bytes, dev_addr: str, rx1_dr_offset: int = 0,
    rx2_dr: int = 0, rx_delay: int = 1,
) -> bytes:
    """The join accept PHYPayload, encrypted as the device expects (AES decrypt, section 6.2.5)."""
    mhdr = bytes([MType.JOIN_ACCEPT << 5])
    dl_settings = ((rx1_dr_offset & 0x07) << 4) | (rx2_dr & 0x0F)
    body = app_nonce + net_id + _wire(dev_addr) + bytes([dl_settings, rx_delay & 0x0F])
    mic = _cmac(app_key, mhdr + body)[:MIC_SIZE]
    decryptor = Cipher(algorithms.AES(app_key), modes.ECB()).decryptor()
    return mhdr + decryptor.update(body + mic) + decryptor.finalize()


def data_down(
    nwk_s_key: bytes, app_s_key: bytes, dev_addr: str, f_cnt: int, *, confirmed: bool = False,
    ack: bool = False, f_port: int | None = None, payload: bytes = b"", f_opts: bytes = b"",
) -> bytes:
    """A downlink data frame to a device (class A receive window); ``f_opts``: MAC commands,
    in the clear as LoRaWAN 1.0 sends them."""
    if payload and f_port is None:
        raise ValueError("a payload needs an FPort")
    if len(f_opts) > 15 or (f_opts and f_port == 0):
        raise ValueError("FOpts hold at most 15 bytes, and none beside FPort 0")
    mtype = MType.CONFIRMED_DOWN if confirmed else MType.UNCONFIRMED_DOWN
    fctrl = (0x20 if ack else 0) | len(f_opts)
    signed = bytes([mtype << 5]) + _wire(dev_addr) + struct.pack("<BH", fctrl, f_cnt & 0xFFFF) + f_opts
    if f_port is not None:
        key = nwk_s_key if f_port == 0 else app_s_key
        signed += bytes([f_port]) + crypt_payload(key, payload, False, dev_addr, f_cnt)
    return signed + data_mic(nwk_s_key, signed, False, dev_addr, f_cnt)


# -- MAC commands ---------------------------------------------------------------------------

LINK_CHECK = 0x02
LINK_ADR = 0x03
DEVICE_TIME = 0x0D
_UPLINK_MAC_SIZES = {0x02: 0, 0x03: 1, 0x04: 0, 0x05: 1, 0x06: 2, 0x07: 1, 0x08: 0, 0x09: 0, 0x0A: 1, 0x0D: 0}
"""CID -> payload bytes of each MAC command a 1.0.x device sends (LinkCheckReq, LinkADRAns,
DutyCycleAns, RXParamSetupAns, DevStatusAns, NewChannelAns, RXTimingSetupAns, TxParamSetupAns,
DlChannelAns, DeviceTimeReq)."""


@dataclass(frozen=True, slots=True)
class MacCommand:
    cid: int
    payload: bytes


def mac_commands(data: bytes) -> tuple[list[MacCommand], bool]:
    """The MAC commands in FOpts (or a decrypted FPort 0 payload), and whether all of it could
    be read: an unknown CID has no known length, so reading stops there."""
    found: list[MacCommand] = []
    at = 0
    while at < len(data):
        size = _UPLINK_MAC_SIZES.get(data[at])
        if size is None or at + 1 + size > len(data):
            return found, False
        found.append(MacCommand(data[at], data[at + 1:at + 1 + size]))
        at += 1 + size
    return found, True


def link_check_answer(margin_db: int, gateways: int) -> bytes:
    """LinkCheckAns: the link margin above the demodulation floor (dB, 0-254) and how many
    gateways heard the request."""
    return bytes([LINK_CHECK, max(0, min(254, margin_db)), max(0, min(255, gateways))])


def link_adr_request(data_rate: int, tx_power: int, nb_trans: int = 1) -> bytes:
    """LinkADRReq asking for a data rate and TXPower index on every channel the device has
    (EU868 ChMaskCntl 6: all defined channels on, whatever the mask says)."""
    return bytes([LINK_ADR, (data_rate & 0x0F) << 4 | (tx_power & 0x0F), 0, 0, 6 << 4 | (nb_trans & 0x0F)])


def link_adr_accepted(answer: MacCommand) -> bool:
    """Whether a LinkADRAns acknowledges the channel mask, the data rate and the power."""
    return answer.cid == LINK_ADR and len(answer.payload) == 1 and answer.payload[0] & 0x07 == 0x07


GPS_EPOCH_UNIX = 315_964_800
"""1980-01-06T00:00:00Z, where GPS time starts."""
GPS_LEAP_SECONDS = 18
"""GPS time runs ahead of UTC by the leap seconds since 1980: 18 since 2017-01-01 (none since)."""


def gps_seconds(unix_seconds: float) -> float:
    return unix_seconds - GPS_EPOCH_UNIX + GPS_LEAP_SECONDS


def device_time_answer(gps: float) -> bytes:
    """DeviceTimeAns (1.0.3): whole GPS seconds (32 bits) and the fraction in 1/256 s."""
    whole = int(gps)
    return bytes([DEVICE_TIME]) + struct.pack("<IB", whole & 0xFFFFFFFF, int((gps - whole) * 256) & 0xFF)

"""The network server's rules, over fakes: given sessions, when frames are heard, then what is
ingested, refused, joined and sent. Frames come from the tests' own end device."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from iot_platform.application.devices.commands import RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.lorawan.ports import DevNonceUsed, LoRaWANSession, RootKeys
from iot_platform.application.repository import EventSourcedRepository
from iot_platform.application.telemetry.model import Candidate, Outcome, Status
from iot_platform.config import LorawanSettings
from iot_platform.domain.devices import Device, DeviceJoined, Protocol
from iot_platform.domain.lorawan import Activation, LoRaWANProfile
from iot_platform.presentation.lorawan.gwmp import RxInfo
from iot_platform.presentation.lorawan.network_server import NetworkServer
from tests.lorawan_sim import EndDevice
from tests.unit.fakes import InMemoryEventStore

NWK = bytes.fromhex("44024241ed4ce9a68c6a8bc055233fd3")
APP = bytes.fromhex("ec925802ae430ca77fd3dd73cb2cc588")
APP_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
CAYENNE = bytes.fromhex("03670110056700FF")

pytestmark = pytest.mark.asyncio


class Sessions:
    def __init__(self, *sessions: LoRaWANSession) -> None:
        self.by_id = {s.device_id: s for s in sessions}
        self.nonces: set[tuple[str, int]] = set()

    async def add(self, session: LoRaWANSession) -> None:
        self.by_id[session.device_id] = session

    async def remove(self, device_id: str) -> None:
        self.by_id.pop(device_id, None)

    async def by_dev_addr(self, dev_addr: str) -> Sequence[LoRaWANSession]:
        return [s for s in self.by_id.values() if s.dev_addr == dev_addr]

    async def by_dev_eui(self, dev_eui: str) -> LoRaWANSession | None:
        return next((s for s in self.by_id.values() if s.dev_eui == dev_eui), None)

    async def by_device(self, device_id: str) -> LoRaWANSession | None:
        return self.by_id.get(device_id)

    async def accept_uplink(self, device_id: str, f_cnt: int) -> bool:
        session = self.by_id[device_id]
        if session.f_cnt_up is not None and session.f_cnt_up >= f_cnt:
            return False
        self.by_id[device_id] = replace(session, f_cnt_up=f_cnt)
        return True

    async def next_downlink_counter(self, device_id: str) -> int:
        session = self.by_id[device_id]
        self.by_id[device_id] = replace(session, f_cnt_down=session.f_cnt_down + 1)
        return session.f_cnt_down

    async def join(self, device_id: str, dev_nonce: int, dev_addr: str, nwk_s_key: bytes, app_s_key: bytes) -> None:
        if (device_id, dev_nonce) in self.nonces:
            raise DevNonceUsed(str(dev_nonce))
        self.nonces.add((device_id, dev_nonce))
        session = self.by_id[device_id]
        self.by_id[device_id] = replace(session, dev_addr=dev_addr, f_cnt_up=None, f_cnt_down=0,
                                        root=replace(session.root, nwk_s_key=nwk_s_key, app_s_key=app_s_key))

    async def dev_addr_in_use(self, dev_addr: str) -> bool:
        return any(s.dev_addr == dev_addr for s in self.by_id.values())


class Ingest:
    def __init__(self) -> None:
        self.candidates: list[Candidate] = []

    async def ingest(self, candidates: Sequence[Candidate], protocol: str, **_: Any) -> list[Outcome]:
        assert protocol == "lorawan"
        self.candidates.extend(candidates)
        return [Outcome(c.device_id, c.message_id, Status.STORED) for c in candidates]


class Radio:
    """A gateway as the network server sees it: reachable, remembering what it was to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def can_reach(self, gateway_eui: str) -> bool:
        return True

    def send(self, gateway_eui: str, tx: dict[str, Any]) -> bytes:
        self.sent.append((gateway_eui, tx))
        return len(self.sent).to_bytes(2, "big")


def abp_session(f_cnt_up: int | None = None) -> LoRaWANSession:
    return LoRaWANSession("lw-1", "0000000026011bda", Activation.ABP, "cayenne_lpp", None, "26011bda",
                          RootKeys(nwk_s_key=NWK, app_s_key=APP), f_cnt_up, 0)


GW = "aa555a0000000000"


def rx(gateway: str = GW, rssi: float = -60, snr: float = 7.0, ago: float | None = None,
       data_rate: str = "SF7BW125") -> RxInfo:
    """A reception; ``ago``: how many seconds before now the gateway's PUSH_DATA came."""
    heard_at = 0.0 if ago is None else time.monotonic() - ago
    return RxInfo(gateway, 1_000_000, 868_100_000, data_rate, "4/5", rssi, snr, heard_at=heard_at)


def abp_device(fcnt: int = 0) -> EndDevice:
    return EndDevice(dev_eui=0x26011BDA, dev_addr=0x26011BDA, nwk_s_key=NWK, app_s_key=APP, fcnt_up=fcnt)


def server(sessions: Sessions, devices: DeviceCommandHandler | None = None, dedup_ms: int = 0, **settings: Any
           ) -> tuple[NetworkServer, Ingest, list[str], Radio]:
    ingest, outcomes, radio = Ingest(), [], Radio()
    store = InMemoryEventStore()
    ns = NetworkServer(sessions, devices or DeviceCommandHandler(EventSourcedRepository(store, Device, 0)),
                       ingest, LorawanSettings(deduplication_ms=dedup_ms, **settings), outcomes.append)  # type: ignore[arg-type]
    ns.gateway = radio  # type: ignore[assignment]
    return ns, ingest, outcomes, radio


async def test_an_uplink_is_decrypted_decoded_and_ingested_with_its_radio_metadata() -> None:
    sessions = Sessions(abp_session())
    ns, ingest, outcomes, _ = server(sessions)
    await ns.handle(abp_device().uplink(1, CAYENNE), [rx()])
    [candidate] = ingest.candidates
    assert candidate.device_id == "lw-1" and candidate.rejection is None
    assert {k: candidate.metrics[k] for k in ("temperature_3", "temperature_5", "f_cnt", "gateways")} == {
        "temperature_3": 27.2, "temperature_5": 25.5, "f_cnt": 0, "gateways": 1}
    assert outcomes == ["accepted"] and sessions.by_id["lw-1"].f_cnt_up == 0


async def test_copies_heard_by_several_gateways_make_one_reading_with_every_reception() -> None:
    ns, ingest, outcomes, _ = server(Sessions(abp_session()), dedup_ms=50)
    frame = abp_device().uplink(1, CAYENNE)
    ns.heard(rx("aa555a0000000001", -100, -2.0), frame)
    ns.heard(rx("aa555a0000000000", -40, 9.5), frame)
    await asyncio.sleep(0.2)
    [candidate] = ingest.candidates
    assert candidate.tags["gateway"] == "aa555a0000000000" and candidate.metrics["gateways"] == 2
    assert outcomes == ["gathered_copy", "accepted"]


@pytest.mark.parametrize(("last", "fcnt", "outcome"), [(5, 5, "replay"), (5, 3, "counter_behind")])
async def test_replays_and_counters_that_went_back_are_refused(last: int, fcnt: int, outcome: str) -> None:
    ns, ingest, outcomes, _ = server(Sessions(abp_session(f_cnt_up=last)))
    await ns.handle(abp_device().uplink(1, CAYENNE, fcnt=fcnt), [rx()])
    assert ingest.candidates == [] and outcomes == [outcome]


async def test_a_frame_signed_with_another_key_is_a_bad_mic() -> None:
    ns, ingest, outcomes, _ = server(Sessions(abp_session()))
    await ns.handle(abp_device().uplink(1, CAYENNE, mic_key=bytes(16)), [rx()])
    assert ingest.candidates == [] and outcomes == ["bad_mic"]


async def test_the_counter_is_rebuilt_across_the_16_bit_rollover() -> None:
    sessions = Sessions(abp_session(f_cnt_up=0xFFFF))
    ns, ingest, _, _ = server(sessions)
    await ns.handle(abp_device().uplink(1, CAYENNE, fcnt=0x10000), [rx()])
    assert ingest.candidates[0].metrics["f_cnt"] == 0x10000 and sessions.by_id["lw-1"].f_cnt_up == 0x10000


async def test_a_payload_the_codec_cannot_read_is_handed_on_as_undecodable() -> None:
    ns, ingest, _, _ = server(Sessions(abp_session()))
    await ns.handle(abp_device().uplink(1, b"\x03\x67"), [rx()])
    assert ingest.candidates[0].rejection is not None and ingest.candidates[0].metrics == {}


async def otaa_server(**settings: Any) -> tuple[NetworkServer, Ingest, list[str], Radio, InMemoryEventStore, EndDevice]:
    """A registered OTAA device that has not joined yet, its server, and the device itself."""
    store = InMemoryEventStore()
    devices = DeviceCommandHandler(EventSourcedRepository(store, Device, 0))
    await devices.register(RegisterDevice(
        "lw-otaa", "th", protocol=Protocol.LORAWAN,
        lorawan=LoRaWANProfile("0004a30b001c0530", Activation.OTAA, "cayenne_lpp", join_eui="70b3d57ed0000001")))
    sessions = Sessions(LoRaWANSession("lw-otaa", "0004a30b001c0530", Activation.OTAA, "cayenne_lpp",
                                       "70b3d57ed0000001", None, RootKeys(app_key=APP_KEY), None, 0))
    ns, ingest, outcomes, radio = server(sessions, devices, **settings)
    device = EndDevice(dev_eui=0x0004A30B001C0530, join_eui=0x70B3D57ED0000001, app_key=APP_KEY)
    return ns, ingest, outcomes, radio, store, device


async def test_an_otaa_join_records_device_joined_and_sends_an_accept_the_device_can_use() -> None:
    ns, ingest, outcomes, radio, store, device = await otaa_server()
    await ns.handle(device.join_request(dev_nonce=7), [rx()])
    [(_, tx)] = radio.sent
    assert tx["tmst"] == 1_000_000 + 5_000_000
    device.accept(base64.b64decode(tx["data"]))
    joined = [r.event for r in store.events if isinstance(r.event, DeviceJoined)]
    assert [e.dev_addr for e in joined] == [f"{device.dev_addr:08x}"]
    await ns.handle(device.uplink(1, CAYENNE), [rx()])
    assert ingest.candidates[0].metrics["temperature_3"] == 27.2
    await ns.handle(device.join_request(dev_nonce=7), [rx()])
    assert outcomes == ["downlink_rx1", "join_accepted", "accepted", "join_nonce_replay"] and len(radio.sent) == 1


async def test_mac_commands_on_port_0_make_no_reading_and_a_link_check_is_answered() -> None:
    ns, ingest, outcomes, radio = server(Sessions(abp_session()))
    device = abp_device()
    device.app_s_key = NWK  # FPort 0 is encrypted with the NwkSKey
    await ns.handle(device.uplink(0, b"\x02"), [rx(snr=4.0), rx("aa555a0000000001", snr=-1.0)])
    assert ingest.candidates == [] and outcomes[:2] == ["accepted", "mac_commands"]
    [(_, tx)] = radio.sent
    # LinkCheckAns: 4 dB above SF7's -7.5 dB floor is a margin of 12 (rounded), two gateways.
    assert device.read_downlink(base64.b64decode(tx["data"]))["f_opts"] == bytes([0x02, 12, 2])


async def test_a_link_check_in_fopts_beside_a_reading_is_answered_in_the_downlink_fopts() -> None:
    ns, ingest, outcomes, radio = server(Sessions(abp_session()))
    device = abp_device()
    await ns.handle(device.uplink(1, CAYENNE, f_opts=bytes([0x06, 0xFE, 0x14, 0x02])), [rx(snr=-20.0)])
    assert ingest.candidates[0].metrics["temperature_3"] == 27.2
    [(_, tx)] = radio.sent
    down = device.read_downlink(base64.b64decode(tx["data"]))
    assert (down["f_opts"], down["fport"], down["ack"]) == (bytes([0x02, 0, 1]), None, False)


async def test_mac_commands_without_a_link_check_send_nothing_and_unknown_ones_are_counted() -> None:
    ns, _, outcomes, radio = server(Sessions(abp_session()))
    await ns.handle(abp_device().uplink(1, CAYENNE, f_opts=bytes([0x06, 0xFE, 0x14, 0x80, 0x02])), [rx()])
    assert radio.sent == [] and outcomes == ["accepted", "mac_commands", "mac_unreadable"]


# -- receive windows ----------------------------------------------------------------------


async def test_a_downlink_the_gateway_could_not_send_in_rx1_goes_out_again_in_rx2() -> None:
    ns, _, outcomes, radio = server(Sessions(abp_session()))
    device = abp_device()
    await ns.handle(device.uplink(1, CAYENNE, confirmed=True), [rx(ago=0.2)])
    [(_, rx1)] = radio.sent
    assert (rx1["tmst"], rx1["freq"], rx1["datr"]) == (2_000_000, 868.1, "SF7BW125")
    await ns.transmitted(GW, b"\x00\x01", "TOO_LATE")
    [_, (gateway, rx2)] = radio.sent
    assert gateway == "aa555a0000000000"
    assert (rx2["tmst"], rx2["freq"], rx2["datr"], rx2["data"]) == (3_000_000, 869.525, "SF12BW125", rx1["data"])
    assert device.read_downlink(base64.b64decode(rx2["data"]))["ack"] is True
    await ns.transmitted(GW, b"\x00\x02", "NONE")
    assert outcomes == ["accepted", "downlink_rx1", "downlink_sent", "downlink_rx2"]


async def test_an_rx2_the_gateway_also_refuses_is_given_up() -> None:
    ns, _, outcomes, radio = server(Sessions(abp_session()))
    await ns.handle(abp_device().uplink(1, CAYENNE, confirmed=True), [rx()])
    await ns.transmitted(GW, b"\x00\x01", "COLLISION_PACKET")
    await ns.transmitted(GW, b"\x00\x02", "TOO_LATE")
    assert len(radio.sent) == 2 and outcomes[-1] == "downlink_tx_failed"


async def test_an_error_rx2_would_meet_too_is_not_retried() -> None:
    ns, _, outcomes, radio = server(Sessions(abp_session()))
    await ns.handle(abp_device().uplink(1, CAYENNE, confirmed=True), [rx()])
    await ns.transmitted(GW, b"\x00\x01", "TX_POWER")
    assert len(radio.sent) == 1 and outcomes[-1] == "downlink_tx_failed"


async def test_a_downlink_ready_after_rx1_opened_goes_straight_to_rx2() -> None:
    ns, _, outcomes, radio = server(Sessions(abp_session()))
    await ns.handle(abp_device().uplink(1, CAYENNE, confirmed=True), [rx(ago=0.95)])
    [(_, tx)] = radio.sent
    assert (tx["tmst"], tx["freq"]) == (3_000_000, 869.525)
    await ns.transmitted(GW, b"\x00\x01", "TOO_LATE")  # nothing left to fall back on
    assert len(radio.sent) == 1 and outcomes[-2:] == ["downlink_sent", "downlink_tx_failed"]


async def test_a_downlink_ready_after_both_windows_is_not_sent() -> None:
    ns, _, outcomes, radio = server(Sessions(abp_session()))
    await ns.handle(abp_device().uplink(1, CAYENNE, confirmed=True), [rx(ago=1.95)])
    assert radio.sent == [] and outcomes == ["accepted", "downlink_too_late", "downlink_no_gateway"]


async def test_the_join_accept_names_the_configured_rx2_data_rate_and_falls_back_to_it() -> None:
    ns, _, _, radio, _, device = await otaa_server(rx2_data_rate="SF9BW125")
    await ns.handle(device.join_request(dev_nonce=1), [rx(ago=0.2)])
    await ns.transmitted(GW, b"\x00\x01", "TOO_EARLY")
    [(_, rx1), (_, rx2)] = radio.sent
    assert (rx2["tmst"] - rx1["tmst"], rx2["freq"], rx2["datr"]) == (1_000_000, 869.525, "SF9BW125")
    device.accept(base64.b64decode(rx2["data"]))
    assert (device.rx2_dr, device.rx1_delay) == (3, 1)


async def test_a_tx_ack_is_matched_by_its_gateway_as_well_as_its_token() -> None:
    ns, _, _, radio = server(Sessions(abp_session()))
    await ns.handle(abp_device().uplink(1, CAYENNE, confirmed=True), [rx()])
    await ns.transmitted("aa555a0000000001", b"\x00\x01", "TOO_LATE")  # another gateway's token 1
    assert len(radio.sent) == 1
    await ns.transmitted(GW, b"\x00\x01", "TOO_LATE")
    assert len(radio.sent) == 2


# -- adaptive data rate -------------------------------------------------------------------


async def test_adr_asks_a_device_heard_well_at_sf12_for_dr5_and_takes_its_answer() -> None:
    ns, _, outcomes, radio = server(Sessions(abp_session()), adr_history=3)
    device = abp_device()
    for _ in range(2):
        await ns.handle(device.uplink(1, CAYENNE, adr=True), [rx(snr=5.0, data_rate="SF12BW125")])
    assert radio.sent == []  # two uplinks are not yet a history to decide on
    await ns.handle(device.uplink(1, CAYENNE, adr=True), [rx(snr=4.0, data_rate="SF12BW125")])
    [(_, tx)] = radio.sent
    # +5 dB over SF12's -20 dB floor, less the 10 dB margin, is 15 dB: five steps to DR5.
    assert device.read_downlink(base64.b64decode(tx["data"]))["f_opts"] == bytes([0x03, 0x50, 0x00, 0x00, 0x61])
    await ns.handle(device.uplink(1, CAYENNE, adr=True, f_opts=b"\x03\x07"), [rx(snr=2.0, data_rate="SF7BW125")])
    assert outcomes.count("adr_requested") == 1 and "adr_accepted" in outcomes and len(radio.sent) == 1


async def test_a_refused_or_unanswered_link_adr_request_is_counted_and_asked_again_later() -> None:
    ns, _, outcomes, radio = server(Sessions(abp_session()), adr_history=1)
    device = abp_device()
    await ns.handle(device.uplink(1, CAYENNE, adr=True), [rx(snr=5.0, data_rate="SF12BW125")])
    await ns.handle(device.uplink(1, CAYENNE, adr=True, f_opts=b"\x03\x06"), [rx(snr=5.0, data_rate="SF12BW125")])
    assert "adr_refused" in outcomes and len(radio.sent) == 2  # refused (channel mask not taken), asked again
    await ns.handle(device.uplink(1, CAYENNE, adr=True), [rx(snr=5.0, data_rate="SF12BW125")])
    assert "adr_unanswered" in outcomes and outcomes.count("adr_requested") == 3


async def test_without_the_adr_bit_or_with_adr_off_nothing_is_asked() -> None:
    for adr, enabled in ((False, True), (True, False)):
        ns, _, outcomes, radio = server(Sessions(abp_session()), adr_history=1, adr_enabled=enabled)
        await ns.handle(abp_device().uplink(1, CAYENNE, adr=adr), [rx(snr=5.0, data_rate="SF12BW125")])
        assert radio.sent == [] and "adr_requested" not in outcomes


async def test_an_adr_ack_request_gets_a_downlink_even_with_nothing_to_say() -> None:
    ns, _, _, radio = server(Sessions(abp_session()))
    device = abp_device()
    await ns.handle(device.uplink(1, CAYENNE, adr=True, adr_ack_req=True), [rx()])
    [(_, tx)] = radio.sent
    down = device.read_downlink(base64.b64decode(tx["data"]))
    assert (down["f_opts"], down["fport"], down["ack"]) == (b"", None, False)


async def test_a_device_time_request_is_answered_with_the_gateway_s_gps_time() -> None:
    ns, _, _, radio = server(Sessions(abp_session()))
    device = abp_device()
    heard = replace(rx(), gps_time_ms=1_417_000_000_500)  # GPS seconds 1,417,000,000.5
    await ns.handle(device.uplink(1, CAYENNE, f_opts=b"\x0d"), [rx("aa555a0000000001"), heard])
    [(_, tx)] = radio.sent
    assert device.read_downlink(base64.b64decode(tx["data"]))["f_opts"] == (
        b"\x0d" + (1_417_000_000).to_bytes(4, "little") + bytes([128]))


async def test_without_a_gps_fix_the_time_is_the_platform_s_clock_when_the_uplink_came() -> None:
    ns, _, _, radio = server(Sessions(abp_session()))
    device = abp_device()
    # 2026-12-01T00:00:00Z is 1,796,083,200 Unix seconds: GPS 1,480,118,418 with the 18 leap seconds.
    await ns.handle(device.uplink(1, CAYENNE, f_opts=b"\x0d"), [replace(rx(), heard_utc=1_796_083_200.25)])
    [(_, tx)] = radio.sent
    assert device.read_downlink(base64.b64decode(tx["data"]))["f_opts"] == (
        b"\x0d" + (1_480_118_418).to_bytes(4, "little") + bytes([64]))

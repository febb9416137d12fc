"""The platform's LoRaWAN codec against a published vector and against the tests' own end
device (tests/lorawan_sim.py), which shares no code with it."""

from __future__ import annotations

import pytest

from iot_platform.domain.lorawan import MAX_FCNT_GAP, CounterVerdict, counter_candidates
from iot_platform.presentation.lorawan import phy
from iot_platform.presentation.lorawan.codecs import UndecodablePayload, cayenne_lpp, raw
from tests.lorawan_sim import EndDevice

NWK = bytes.fromhex("44024241ed4ce9a68c6a8bc055233fd3")
APP = bytes.fromhex("ec925802ae430ca77fd3dd73cb2cc588")


def test_the_published_lora_packet_vector_verifies_and_decrypts_to_test() -> None:
    # From the lora-packet project's documentation: DevAddr 49be7df1, FCnt 2, FPort 1, "test".
    frame = phy.parse(bytes.fromhex("40F17DBE4900020001954378762B11FF0D"))
    assert isinstance(frame, phy.DataFrame)
    assert (frame.dev_addr, frame.f_cnt16, frame.f_port, frame.confirmed) == ("49be7df1", 2, 1, False)
    assert phy.data_mic(NWK, frame.signed, True, frame.dev_addr, 2) == frame.mic
    assert phy.crypt_payload(APP, frame.frm_payload, True, frame.dev_addr, 2) == b"test"


def test_an_uplink_of_the_test_device_is_read_back_byte_for_byte() -> None:
    device = EndDevice(dev_eui=1, dev_addr=0x26011BDA, nwk_s_key=NWK, app_s_key=APP, fcnt_up=70_000)
    payload = bytes(range(40))  # three key-stream blocks
    frame = phy.parse(device.uplink(7, payload, confirmed=True, ack=True))
    assert isinstance(frame, phy.DataFrame)
    assert (frame.dev_addr, frame.f_cnt16, frame.confirmed, frame.ack) == ("26011bda", 70_000 & 0xFFFF, True, True)
    assert phy.data_mic(NWK, frame.signed, True, frame.dev_addr, 70_000) == frame.mic
    assert phy.data_mic(NWK, frame.signed, True, frame.dev_addr, 70_000 & 0xFFFF) != frame.mic
    assert phy.crypt_payload(APP, frame.frm_payload, True, frame.dev_addr, 70_000) == payload


def test_a_join_accept_built_by_the_platform_gives_the_device_the_same_session_keys() -> None:
    app_key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    device = EndDevice(dev_eui=0x0004A30B001C0530, join_eui=0x70B3D57ED0000001, app_key=app_key)
    request = phy.parse(device.join_request(dev_nonce=0x1234))
    assert isinstance(request, phy.JoinRequest)
    assert (request.dev_eui, request.join_eui, request.dev_nonce) == (
        "0004a30b001c0530", "70b3d57ed0000001", 0x1234)
    assert phy.join_request_mic(app_key, request) == request.mic
    app_nonce, net_id = bytes.fromhex("a1b2c3"), bytes(3)
    device.accept(phy.join_accept(app_key, app_nonce, net_id, "01ab23cd"))
    keys = phy.derive_session_keys(app_key, app_nonce, net_id, 0x1234)
    assert (device.dev_addr, device.nwk_s_key, device.app_s_key) == (0x01AB23CD, keys.nwk_s_key, keys.app_s_key)


def test_a_downlink_built_by_the_platform_is_read_by_the_device() -> None:
    device = EndDevice(dev_eui=1, dev_addr=0x26011BDA, nwk_s_key=NWK, app_s_key=APP)
    down = phy.data_down(NWK, APP, "26011bda", 3, confirmed=True, ack=True, f_port=10, payload=b"\x01\x02")
    assert device.read_downlink(down) == {"confirmed": True, "ack": True, "fcnt": 3, "fport": 10,
                                          "f_opts": b"", "payload": b"\x01\x02"}


def test_mac_answers_ride_in_the_downlink_fopts_in_the_clear() -> None:
    device = EndDevice(dev_eui=1, dev_addr=0x26011BDA, nwk_s_key=NWK, app_s_key=APP)
    down = phy.data_down(NWK, APP, "26011bda", 4, f_opts=phy.link_check_answer(300, 3), f_port=2, payload=b"\x07")
    read = device.read_downlink(down)
    assert (read["f_opts"], read["fport"], read["payload"]) == (bytes([0x02, 254, 3]), 2, b"\x07")
    with pytest.raises(ValueError):
        phy.data_down(NWK, APP, "26011bda", 4, f_opts=bytes(16))


def test_uplink_mac_commands_are_read_by_their_known_sizes() -> None:
    commands, complete = phy.mac_commands(bytes([0x02, 0x06, 0xFE, 0x14, 0x03, 0x07, 0x0D]))
    assert [(c.cid, c.payload) for c in commands] == [(2, b""), (6, b"\xfe\x14"), (3, b"\x07"), (0x0D, b"")]
    assert complete
    assert phy.mac_commands(bytes([0x02, 0x80, 0x02])) == ([phy.MacCommand(2, b"")], False)  # 0x80: proprietary
    assert phy.mac_commands(bytes([0x06, 0xFE]))[1] is False  # cut short


@pytest.mark.parametrize("frame", [b"", b"\x40\x01\x02", bytes([0x41]) + bytes(12), bytes([0xE0]) + bytes(12),
                                   bytes([0x40, 1, 2, 3, 4, 0x0F, 0, 0]) + bytes(4)])
def test_malformed_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(phy.MalformedFrame):
        phy.parse(frame)


def test_the_first_frame_of_a_session_takes_its_counter_as_it_is() -> None:
    assert counter_candidates(None, 5) == [(5, CounterVerdict.NEW)]


def test_counters_are_rebuilt_across_the_16_bit_rollover() -> None:
    assert counter_candidates(0x1FFFE, 0x0003)[0] == (0x20003, CounterVerdict.NEW)
    assert counter_candidates(0x1FFFE, 0xFFFF) == [(0x1FFFF, CounterVerdict.NEW)]


def test_the_last_counter_again_is_a_replay_and_a_lower_one_is_behind() -> None:
    assert counter_candidates(100, 100) == [(100, CounterVerdict.REPLAY)]
    assert counter_candidates(100, 99) == [(99, CounterVerdict.BEHIND)]


def test_frames_too_far_ahead_have_no_candidate() -> None:
    assert counter_candidates(100, 100 + MAX_FCNT_GAP + 1) == []


def test_cayenne_lpp_values_are_named_by_type_and_channel() -> None:
    # The two-temperature and GPS examples of the Cayenne LPP documentation.
    assert cayenne_lpp(1, bytes.fromhex("03670110056700FF")) == {"temperature_3": 27.2, "temperature_5": 25.5}
    assert cayenne_lpp(1, bytes.fromhex("018806765ff2960a0003e8")) == {
        "location_1_latitude": 42.3519, "location_1_longitude": -87.9094, "location_1_altitude": 10.0}
    with pytest.raises(UndecodablePayload):
        cayenne_lpp(1, bytes.fromhex("0367"))


def test_the_raw_codec_keeps_the_bytes_as_hex() -> None:
    assert raw(9, b"\xde\xad") == {"payload_hex": "dead", "f_port": 9}

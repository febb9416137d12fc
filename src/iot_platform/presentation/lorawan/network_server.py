"""The LoRaWAN network server: frames heard by gateways in, readings and downlinks out.

Copies of one frame heard by several gateways are gathered for ``deduplication_ms`` and handled
once, with every gateway's reception kept. A data frame is accepted only if its MIC verifies
under a session on its DevAddr with a frame counter above the last accepted one (replays and
counters that went back are refused); its FRMPayload is then decrypted, decoded by the device's
codec and ingested with the radio metadata. Join requests of OTAA devices are verified under
the AppKey, a used DevNonce is refused, and the join accept goes out through the best gateway.
After an uplink, the device's oldest pending command goes out in its receive window (class A);
confirmed downlinks are delivered when the device's next uplink carries the ACK bit. A
LinkCheckReq or DeviceTimeReq (in FOpts or on FPort 0) is answered in the next downlink's
FOpts, and so is a
device that sets the ADR bit, with a LinkADRReq when its uplinks' SNR leaves room for a faster
data rate or less power (domain/lorawan/adr.py).

Every downlink is aimed at RX1 and falls back to RX2 (a second later, on ``rx2_frequency_hz`` at
``rx2_data_rate``) when RX1 is already past by the time it is ready, or when the gateway's
TX_ACK says it could not send in RX1 (too late, too early, a collision, a frequency it cannot
use). Region parameters are EU868's; other regions' channel plans are not built.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from iot_platform.application.commands.commands import AcknowledgeCommand, CommandMessage
from iot_platform.application.commands.delivery import CommandDelivery
from iot_platform.application.commands.handlers import CommandHandler
from iot_platform.application.devices.commands import RecordJoin
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.errors import ApplicationError
from iot_platform.application.lorawan.ports import DevNonceUsed, LoRaWANDevices, LoRaWANSession
from iot_platform.application.telemetry.ingestion import IngestTelemetry
from iot_platform.application.telemetry.model import Candidate, MetricValue, Rejection
from iot_platform.config import LorawanSettings
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.commands import CommandStatus
from iot_platform.domain.errors import DomainError, InvalidValue
from iot_platform.domain.lorawan import Activation, CounterVerdict, counter_candidates
from iot_platform.domain.lorawan.adr import LinkSettings, adr_decision
from iot_platform.domain.lorawan.region import data_rate_index, link_margin
from iot_platform.presentation.log_limits import OncePerInterval
from iot_platform.presentation.lorawan import phy
from iot_platform.presentation.lorawan.codecs import UndecodablePayload, codec
from iot_platform.presentation.lorawan.gwmp import GatewayServer, RxInfo, txpk

log = logging.getLogger(__name__)
_limited = OncePerInterval(log)
"""Frames anyone in radio range can send: counted each, logged once a minute per kind."""

_ACTOR = EventContext(actor="network-server")
_SESSION_CACHE_SECONDS = 30.0
_LEAD_SECONDS = 0.1
"""How long before a window opens its PULL_RESP must leave: the way to the gateway and its own
scheduling margin. A window closer than this is taken as missed."""
_RX2_WORTH_TRYING = frozenset({"TOO_LATE", "TOO_EARLY", "COLLISION_PACKET", "COLLISION_BEACON", "TX_FREQ"})
"""TX_ACK errors that RX1's timing or channel caused, so RX2 may still work (TX_POWER and
GPS_UNLOCKED would fail there too)."""
_IN_FLIGHT_SECONDS = 60.0
"""How long a PULL_RESP waits for its TX_ACK: a forwarder that never sends one is forgotten."""


@dataclass(frozen=True, slots=True)
class _Window:
    tmst: int
    frequency_hz: int
    data_rate: str
    coding_rate: str
    rf_chain: int
    name: str


@dataclass(slots=True)
class _Adr:
    """A device's ADR state, kept by the process that hears it (a restart starts it afresh)."""

    current: LinkSettings
    snrs: deque[float] = field(default_factory=deque)
    asked: LinkSettings | None = None
    """Asked for in the last downlink; its LinkADRAns is due in the next uplink."""


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A PULL_RESP a gateway has yet to answer with its TX_ACK."""

    gateway_eui: str
    frame: bytes
    fallback: tuple[_Window, ...]
    command: tuple[str, str] | None
    """(device id, command id) of an unconfirmed command: delivered once it went on the air."""
    sent_at: float


@dataclass(frozen=True, slots=True)
class _Downlink:
    f_port: int
    payload: bytes
    confirmed: bool


def _downlink_of(message: CommandMessage) -> _Downlink:
    """A command's LoRaWAN form: ``parameters.payload_hex`` (required), ``fport`` (1-223,
    default 1) and ``confirmed`` (default true)."""
    params = message.parameters
    payload = bytes.fromhex(str(params["payload_hex"]))
    f_port = int(params.get("fport", 1))
    if not 1 <= f_port <= 223:
        raise ValueError("fport must be 1-223")
    if len(payload) > 51:  # the smallest maximum (EU868 DR0); larger ones may not fit
        raise ValueError("payload_hex is over 51 bytes")
    return _Downlink(f_port, payload, bool(params.get("confirmed", True)))


def _heard_gps(receptions: Sequence[RxInfo]) -> float:
    """GPS seconds at the end of an uplink: a gateway's GPS timestamp if one has a fix, else
    this process's clock when the first copy came (late by the way from the gateway)."""
    for reception in receptions:
        if reception.gps_time_ms is not None:
            return reception.gps_time_ms / 1000
    return phy.gps_seconds(min((r.heard_utc for r in receptions if r.heard_utc), default=time.time()))


class NetworkServer:
    def __init__(
        self,
        sessions: LoRaWANDevices,
        devices: DeviceCommandHandler,
        ingest: IngestTelemetry,
        settings: LorawanSettings,
        count: Callable[[str], None],
        commands: CommandDelivery | None = None,
        command_handler: CommandHandler | None = None,
    ) -> None:
        self._sessions = sessions
        self._devices = devices
        self._ingest = ingest
        self._settings = settings
        self._count = count
        self._commands = commands
        self._command_handler = command_handler
        self._net_id = bytes.fromhex(settings.net_id)[::-1]
        self._gathering: dict[bytes, list[RxInfo]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._awaiting_ack: dict[str, str] = {}
        """device id -> the confirmed command sent to it, delivered by its next ACK."""
        self._in_flight: dict[tuple[str, bytes], _InFlight] = {}
        """(gateway EUI, PULL_RESP token) -> what was sent, to retry in RX2 or deliver on its
        TX_ACK; oldest first."""
        self._rx2_dr = data_rate_index(settings.rx2_data_rate)
        self._adr: dict[str, _Adr] = {}
        self.gateway: GatewayServer | None = None
        self._lanes: dict[bytes, tuple[asyncio.Lock, int]] = {}
        """One lane per DevAddr (DevEUI for joins): a device's frames are handled one at a time,
        in the order they were heard, or a later counter would be taken first."""
        self._sessions_cache: dict[str, tuple[float, list[LoRaWANSession]]] = {}

    # -- frames in ------------------------------------------------------------------------
    def heard(self, info: RxInfo, frame: bytes) -> None:
        """One gateway's copy of a frame; the first copy starts the gathering."""
        copies = self._gathering.get(frame)
        if copies is not None:
            copies.append(info)
            self._count("gathered_copy")
            return
        if len(self._tasks) >= self._settings.max_pending_frames:
            self._count("overload")  # bounded memory: a flood is dropped, not queued
            return
        self._gathering[frame] = [info]
        task = asyncio.get_running_loop().create_task(self._gathered(frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _gathered(self, frame: bytes) -> None:
        await asyncio.sleep(self._settings.deduplication_ms / 1000)
        receptions = self._gathering.pop(frame)
        lane = frame[9:17] if frame[:1] == b"\x00" else frame[1:5]
        lock, users = self._lanes.get(lane, (asyncio.Lock(), 0))
        self._lanes[lane] = (lock, users + 1)
        try:
            async with lock:  # asyncio locks are fair: waiters go in the order they came
                await self.handle(frame, receptions)
        except Exception as exc:  # one frame must never stop the server
            _limited("failed", "LoRaWAN frame failed: %s: %s", type(exc).__name__, exc)
            self._count("failed")
        finally:
            lock, users = self._lanes[lane]
            if users == 1:
                del self._lanes[lane]
            else:
                self._lanes[lane] = (lock, users - 1)

    async def handle(self, frame: bytes, receptions: list[RxInfo]) -> None:
        try:
            parsed = phy.parse(frame)
        except phy.MalformedFrame as exc:
            _limited("malformed", "LoRaWAN frame refused: %s", exc)
            self._count("malformed")
            return
        if isinstance(parsed, phy.JoinRequest):
            await self._join(parsed, receptions)
        elif parsed.uplink:
            await self._uplink(parsed, receptions)
        else:
            self._count("not_uplink")

    # -- data uplinks ---------------------------------------------------------------------
    async def _sessions_on(self, dev_addr: str) -> list[LoRaWANSession]:
        """Sessions on an address, cached (with this process's counters kept up to date); the
        store's conditional counter update still decides between processes."""
        now = time.monotonic()
        cached = self._sessions_cache.get(dev_addr)
        if cached is not None and now - cached[0] < _SESSION_CACHE_SECONDS:
            return cached[1]
        sessions = list(await self._sessions.by_dev_addr(dev_addr))
        if sessions:
            self._sessions_cache[dev_addr] = (now, sessions)
        else:
            self._sessions_cache.pop(dev_addr, None)
        return sessions

    def _counted(self, session: LoRaWANSession, f_cnt: int) -> None:
        assert session.dev_addr is not None
        cached = self._sessions_cache.get(session.dev_addr)
        if cached is not None:
            fresh = [replace(s, f_cnt_up=f_cnt) if s.device_id == session.device_id else s for s in cached[1]]
            self._sessions_cache[session.dev_addr] = (cached[0], fresh)

    async def _uplink(self, frame: phy.DataFrame, receptions: list[RxInfo]) -> None:
        sessions = await self._sessions_on(frame.dev_addr)
        if not sessions:
            self._count("unknown_dev_addr")
            return
        match = self._match(frame, sessions)
        if match is None:
            log.info("LoRaWAN frame from %s: the MIC verifies under no session", frame.dev_addr)
            self._count("bad_mic")
            return
        session, f_cnt, verdict = match
        if verdict is not CounterVerdict.NEW:
            log.info("LoRaWAN frame %d from %s refused: %s", f_cnt, session.device_id, verdict.value)
            self._count(verdict.value)
            return
        if not await self._sessions.accept_uplink(session.device_id, f_cnt):
            self._count("counter_taken")  # another process took this counter first
            self._sessions_cache.pop(frame.dev_addr, None)
            return
        self._counted(session, f_cnt)
        self._count("accepted")
        if frame.ack:
            await self._acknowledged(session.device_id)
        mac = frame.f_opts
        if frame.f_port == 0:  # MAC commands only, encrypted with the NwkSKey: no reading
            assert session.nwk_s_key is not None
            mac = phy.crypt_payload(session.nwk_s_key, frame.frm_payload, True, frame.dev_addr, f_cnt)
        elif frame.f_port is not None:
            await self._ingest.ingest([self._candidate(session, frame, f_cnt, receptions)], "lorawan")
        answers = self._answer_mac(session.device_id, mac, receptions) if mac else []
        answers += self._adapt(session.device_id, frame, receptions)
        f_opts = b""
        for answer in answers:  # what FOpts holds (15 bytes, more than the answers to one uplink take)
            if len(f_opts) + len(answer) <= 15:
                f_opts += answer
        await self._downlink(session, frame, receptions, f_opts)

    def _answer_mac(self, device_id: str, data: bytes, receptions: list[RxInfo]) -> list[bytes]:
        """The answers to an uplink's MAC commands, for the next downlink's FOpts: LinkCheckReq
        and DeviceTimeReq are answered and a LinkADRAns taken; the others are read and counted
        but not acted on."""
        commands, complete = phy.mac_commands(data)
        self._count("mac_commands")
        if not complete:
            log.info("MAC commands from %s not all readable: %s", device_id, data.hex())
            self._count("mac_unreadable")
        answers = []
        for command in commands:
            if command.cid == phy.LINK_CHECK:
                best = max(receptions, key=lambda r: (r.snr, r.rssi))
                answers.append(phy.link_check_answer(link_margin(best.snr, best.data_rate), len(receptions)))
            elif command.cid == phy.LINK_ADR:
                self._adr_answered(device_id, command)
            elif command.cid == phy.DEVICE_TIME:
                answers.append(phy.device_time_answer(_heard_gps(receptions)))
        return answers

    # -- adaptive data rate ---------------------------------------------------------------
    def _adapt(self, device_id: str, frame: phy.DataFrame, receptions: list[RxInfo]) -> list[bytes]:
        """A LinkADRReq once the device's last ``adr_history`` uplinks leave room for a faster
        data rate or less power (or call for more power)."""
        if not (self._settings.adr_enabled and frame.adr):
            self._adr.pop(device_id, None)
            return []
        best = max(receptions, key=lambda r: (r.snr, r.rssi))
        try:
            data_rate = data_rate_index(best.data_rate)
        except InvalidValue:
            return []  # not an EU868 LoRa data rate: nothing to decide from
        state = self._adr.get(device_id)
        if state is None:
            state = self._adr[device_id] = _Adr(LinkSettings(data_rate, 0))
        if state.asked is not None:  # the downlink that asked was lost, or ignored
            state.asked = None
            self._count("adr_unanswered")
        state.current = LinkSettings(data_rate, state.current.tx_power)
        state.snrs.append(best.snr)
        if len(state.snrs) < self._settings.adr_history:
            return []
        wanted = adr_decision(list(state.snrs), state.current, self._settings.adr_margin_db)
        state.snrs.popleft()
        if wanted == state.current:
            return []
        state.asked = wanted
        state.snrs.clear()  # the next decision is taken over uplinks at the new settings
        self._count("adr_requested")
        return [phy.link_adr_request(wanted.data_rate, wanted.tx_power)]

    def _adr_answered(self, device_id: str, answer: phy.MacCommand) -> None:
        state = self._adr.get(device_id)
        if state is None or state.asked is None:
            return
        if phy.link_adr_accepted(answer):
            state.current = state.asked
            self._count("adr_accepted")
        else:
            log.info("%s refused LinkADRReq %s: status %s", device_id, state.asked, answer.payload.hex())
            self._count("adr_refused")
        state.asked = None

    @staticmethod
    def _match(
        frame: phy.DataFrame, sessions: Sequence[LoRaWANSession]
    ) -> tuple[LoRaWANSession, int, CounterVerdict] | None:
        for session in sessions:
            if session.nwk_s_key is None:
                continue
            for f_cnt, verdict in counter_candidates(session.f_cnt_up, frame.f_cnt16):
                mic = phy.data_mic(session.nwk_s_key, frame.signed, True, frame.dev_addr, f_cnt)
                if mic == frame.mic:
                    return session, f_cnt, verdict
        return None

    def _candidate(
        self, session: LoRaWANSession, frame: phy.DataFrame, f_cnt: int, receptions: list[RxInfo]
    ) -> Candidate:
        assert session.app_s_key is not None and frame.f_port is not None
        payload = phy.crypt_payload(session.app_s_key, frame.frm_payload, True, frame.dev_addr, f_cnt)
        best = max(receptions, key=lambda r: (r.snr, r.rssi))
        radio: dict[str, MetricValue] = {
            "rssi": best.rssi, "snr": best.snr, "frequency_hz": best.frequency_hz,
            "f_cnt": f_cnt, "gateways": len(receptions),
            "rx_info": json.dumps([r.as_dict() for r in receptions], separators=(",", ":")),
        }
        tags = {"gateway": best.gateway_eui, "data_rate": best.data_rate}
        try:
            metrics: dict[str, MetricValue] = codec(session.codec)(frame.f_port, payload)
        except (UndecodablePayload, LookupError) as exc:
            return Candidate(session.device_id, None, {}, tags, payload_bytes=len(payload),
                             rejection=Rejection.UNDECODABLE, detail=str(exc))
        except Exception as exc:  # a registered codec's own bug: this reading is refused, no more
            return Candidate(session.device_id, None, {}, tags, payload_bytes=len(payload),
                             rejection=Rejection.UNDECODABLE,
                             detail=f"codec {session.codec} failed: {type(exc).__name__}: {exc}")
        return Candidate(session.device_id, None, {**metrics, **radio}, tags,
                         payload_bytes=len(payload))

    # -- joins ----------------------------------------------------------------------------
    async def _join(self, request: phy.JoinRequest, receptions: list[RxInfo]) -> None:
        session = await self._sessions.by_dev_eui(request.dev_eui)
        if (session is None or session.activation is not Activation.OTAA
                or session.join_eui != request.join_eui or session.root.app_key is None):
            log.info("join request from unknown DevEUI %s", request.dev_eui)
            self._count("join_unknown_device")
            return
        app_key = session.root.app_key
        if phy.join_request_mic(app_key, request) != request.mic:
            self._count("join_bad_mic")
            return
        dev_addr = await self._free_dev_addr()
        app_nonce = os.urandom(3)
        keys = phy.derive_session_keys(app_key, app_nonce, self._net_id, request.dev_nonce)
        try:
            await self._sessions.join(session.device_id, request.dev_nonce, dev_addr,
                                      keys.nwk_s_key, keys.app_s_key)
        except DevNonceUsed:
            log.info("join request of %s replays DevNonce %d", session.device_id, request.dev_nonce)
            self._count("join_nonce_replay")
            return
        self._sessions_cache.pop(session.dev_addr or "", None)
        self._adr.pop(session.device_id, None)  # a new session starts at the device's defaults
        try:
            await self._devices.join(RecordJoin(session.device_id, dev_addr))
        except (DomainError, ApplicationError) as exc:  # suspended or decommissioned
            log.info("join of %s refused: %s", session.device_id, exc)
            self._count("join_refused")
            return
        accept = phy.join_accept(app_key, app_nonce, self._net_id, dev_addr,
                                 rx2_dr=self._rx2_dr, rx_delay=self._settings.rx1_delay_seconds)
        if not self._transmit(accept, receptions, self._settings.join_accept_delay_seconds):
            self._count("join_no_gateway")
            return
        self._count("join_accepted")

    async def _free_dev_addr(self) -> str:
        nwk_id = self._net_id[0] & 0x7F  # NetID type 0: its 7 low bits prefix every DevAddr
        while True:
            address = (nwk_id << 25) | int.from_bytes(os.urandom(4)) & 0x1FFFFFF
            dev_addr = f"{address:08x}"
            if not await self._sessions.dev_addr_in_use(dev_addr):
                return dev_addr

    # -- downlinks ------------------------------------------------------------------------
    async def _downlink(
        self, session: LoRaWANSession, frame: phy.DataFrame, receptions: list[RxInfo], mac_answers: bytes
    ) -> None:
        message = None
        if self._commands is not None:
            message = await self._commands.take(session.device_id, "lorawan")
        downlink = None
        if message is not None:
            try:
                downlink = _downlink_of(message)
            except (KeyError, ValueError, TypeError) as exc:
                await self._finish(session.device_id, message.command_id, CommandStatus.FAILED,
                                   {"error": f"not a LoRaWAN command: {exc}"})
                message = None
        if message is None and not frame.confirmed and not mac_answers and not frame.adr_ack_req:
            return
        assert session.nwk_s_key is not None and session.app_s_key is not None
        assert session.dev_addr is not None
        f_cnt = await self._sessions.next_downlink_counter(session.device_id)
        confirmed = downlink is not None and downlink.confirmed
        down = phy.data_down(
            session.nwk_s_key, session.app_s_key, session.dev_addr, f_cnt,
            confirmed=confirmed, ack=frame.confirmed,
            f_port=downlink.f_port if downlink else None,
            payload=downlink.payload if downlink else b"", f_opts=mac_answers,
        )
        unconfirmed = (session.device_id, message.command_id) if message and not confirmed else None
        if not self._transmit(down, receptions, self._settings.rx1_delay_seconds, unconfirmed):
            self._count("downlink_no_gateway")  # a command stays pending for the next uplink
            return
        self._count("downlink_sent")
        if message is not None and confirmed:
            self._awaiting_ack[session.device_id] = message.command_id

    def _transmit(self, frame: bytes, receptions: list[RxInfo], delay_seconds: int,
                  command: tuple[str, str] | None = None) -> bool:
        """Sends through the best gateway that has a downlink path, in RX1 if it is still
        ahead, else in RX2; False if no gateway can take it in either."""
        if self.gateway is None:
            return False
        reachable = [r for r in receptions if self.gateway.can_reach(r.gateway_eui)]
        if not reachable:
            return False
        best = max(reachable, key=lambda r: (r.snr, r.rssi))
        windows = [
            _Window(best.tmst + delay_seconds * 1_000_000, best.frequency_hz, best.data_rate,
                    best.coding_rate, best.rf_chain, "rx1"),
            _Window(best.tmst + (delay_seconds + 1) * 1_000_000, self._settings.rx2_frequency_hz,
                    self._settings.rx2_data_rate, "4/5", 0, "rx2"),
        ]
        if best.heard_at:
            elapsed = time.monotonic() - best.heard_at
            windows = [w for w, opens in zip(windows, (delay_seconds, delay_seconds + 1), strict=True)
                       if elapsed < opens - _LEAD_SECONDS]
        if not windows:
            self._count("downlink_too_late")
            return False
        return self._send(best.gateway_eui, frame, tuple(windows), command)

    def _send(self, gateway_eui: str, frame: bytes, windows: tuple[_Window, ...],
              command: tuple[str, str] | None) -> bool:
        assert self.gateway is not None
        window, *fallback = windows
        tx = txpk(frame, tmst=window.tmst, frequency_hz=window.frequency_hz, data_rate=window.data_rate,
                  coding_rate=window.coding_rate, power=self._settings.downlink_power_dbm,
                  rf_chain=window.rf_chain)
        token = self.gateway.send(gateway_eui, tx)
        if token is None:
            return False
        now = time.monotonic()
        while self._in_flight:
            oldest = next(iter(self._in_flight))
            if now - self._in_flight[oldest].sent_at <= _IN_FLIGHT_SECONDS:
                break
            del self._in_flight[oldest]
        self._in_flight[(gateway_eui, token)] = _InFlight(gateway_eui, frame, tuple(fallback), command, now)
        self._count(f"downlink_{window.name}")
        return True

    async def transmitted(self, gateway_eui: str, token: bytes, error: str) -> None:
        """A gateway's TX_ACK: an unconfirmed command is delivered once it went on the air; a
        downlink RX1 could not carry is tried again in RX2."""
        flight = self._in_flight.pop((gateway_eui, token), None)
        if error in ("NONE", ""):
            if flight is not None and flight.command is not None:
                await self._finish(*flight.command, CommandStatus.DELIVERED)
            return
        if (flight is not None and flight.fallback and error in _RX2_WORTH_TRYING
                and self._send(flight.gateway_eui, flight.frame, flight.fallback, flight.command)):
            log.info("gateway %s could not send in RX1 (%s); RX2 instead", gateway_eui, error)
            return
        log.warning("gateway %s could not send a downlink: %s", gateway_eui, error)
        self._count("downlink_tx_failed")

    async def _acknowledged(self, device_id: str) -> None:
        """An uplink's ACK bit: the confirmed command sent to the device is delivered. The one
        this process sent, or else the last confirmed one the read model has as sent (sent by
        a process since restarted, or by another one)."""
        command_id = self._awaiting_ack.pop(device_id, None)
        if command_id is None and self._commands is not None:
            command_id = await self._commands.last_sent(device_id, confirmed_only=True)
        if command_id is not None:
            await self._finish(device_id, command_id, CommandStatus.DELIVERED)

    async def _finish(self, device_id: str, command_id: str, status: CommandStatus,
                      result: Any = None) -> None:
        if self._command_handler is None:
            return
        try:
            await self._command_handler.acknowledge(
                AcknowledgeCommand(device_id, command_id, status, result, context=_ACTOR))
        except (DomainError, ApplicationError) as exc:  # expired meanwhile, say
            log.info("command %s not marked %s: %s", command_id, status.value, exc)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

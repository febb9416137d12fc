"""What the LoRaWAN network server needs kept: device sessions (keys, counters) and gateways.

Sessions are not event-sourced: their frame counters change with every frame, like telemetry,
and their keys must be stored encrypted, which events (kept forever, copied to Kafka) are not.
The Device aggregate records only the public facts (registration profile, DeviceJoined).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from iot_platform.domain.lorawan import Activation


@dataclass(frozen=True, slots=True)
class RootKeys:
    """What a device is registered with: session keys (ABP) or its AppKey (OTAA)."""

    app_key: bytes | None = None
    nwk_s_key: bytes | None = None
    app_s_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class LoRaWANSession:
    device_id: str
    dev_eui: str
    activation: Activation
    codec: str
    join_eui: str | None
    dev_addr: str | None
    """None for an OTAA device that has not joined yet."""
    root: RootKeys
    f_cnt_up: int | None
    """Last accepted uplink counter of this session; None before its first frame."""
    f_cnt_down: int
    """Next downlink counter."""

    @property
    def nwk_s_key(self) -> bytes | None:
        return self.root.nwk_s_key

    @property
    def app_s_key(self) -> bytes | None:
        return self.root.app_s_key


class DevNonceUsed(Exception):
    """A join request repeated a DevNonce this device already used (a replayed join)."""


class SessionTaken(Exception):
    """The device id, DevEUI or DevAddr already belongs to another LoRaWAN device."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class LoRaWANDevices(Protocol):
    async def add(self, session: LoRaWANSession) -> None:
        """Raises ``SessionTaken`` if the device id, DevEUI or (ABP) DevAddr is in use."""

    async def remove(self, device_id: str) -> None: ...

    async def by_dev_addr(self, dev_addr: str) -> Sequence[LoRaWANSession]:
        """Every session on that address (addresses are not unique across networks)."""

    async def by_dev_eui(self, dev_eui: str) -> LoRaWANSession | None: ...

    async def by_device(self, device_id: str) -> LoRaWANSession | None: ...

    async def accept_uplink(self, device_id: str, f_cnt: int) -> bool:
        """Records ``f_cnt`` as the last uplink counter if it is above the stored one; False if
        another frame got there first (a race between processes)."""

    async def next_downlink_counter(self, device_id: str) -> int:
        """The counter for a new downlink, taken (incremented) atomically."""

    async def join(
        self, device_id: str, dev_nonce: int, dev_addr: str, nwk_s_key: bytes, app_s_key: bytes
    ) -> None:
        """Starts a new session; raises ``DevNonceUsed`` if the nonce was seen before."""

    async def dev_addr_in_use(self, dev_addr: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Gateway:
    gateway_eui: str
    name: str
    registered_at: datetime
    last_seen: datetime | None = None


class Gateways(Protocol):
    async def add(self, gateway: Gateway) -> None:
        """Raises ``SessionTaken`` (field gateway_eui) if it is registered already."""

    async def remove(self, gateway_eui: str) -> bool: ...

    async def get(self, gateway_eui: str) -> Gateway | None: ...

    async def list(self) -> Sequence[Gateway]: ...

    async def seen(self, gateway_eui: str, at: datetime) -> None: ...

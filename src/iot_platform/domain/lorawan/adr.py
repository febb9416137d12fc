"""Adaptive data rate: how fast and how loud a device should send, from how well it is heard.

A device that sets the ADR bit lets the network choose its data rate and transmit power. The
rule is Semtech's recommended one: take the best SNR of its last uplinks, subtract what its data
rate needs and an installation margin, and spend every 3 dB left over on one step: first a
faster data rate (shorter airtime, less battery, more capacity), then less power. A device heard
worse than that gets its power back first. The data rate is never lowered by the network: a
device whose link degrades falls back by itself (ADRACKReq, then ADR_ACK_DELAY).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from iot_platform.domain.lorawan.region import (
    EU868_MAX_ADR_DATA_RATE,
    EU868_MAX_TX_POWER_INDEX,
    demodulation_floor,
)

STEP_DB = 3.0


@dataclass(frozen=True, slots=True)
class LinkSettings:
    data_rate: int
    """The EU868 DR index (0 = SF12BW125 .. 5 = SF7BW125)."""
    tx_power: int
    """The TXPower index (0 = the maximum EIRP; each step 2 dB less)."""


def adr_decision(snrs: Sequence[float], current: LinkSettings, margin_db: float) -> LinkSettings:
    """The settings to ask for after uplinks heard at ``snrs`` (the best gateway's SNR of each)
    with ``current``; ``current`` itself when nothing should change."""
    if not snrs:
        return current
    headroom = max(snrs) - demodulation_floor(current.data_rate) - margin_db
    steps = math.floor(headroom / STEP_DB)
    data_rate, tx_power = current.data_rate, current.tx_power
    while steps > 0 and data_rate < EU868_MAX_ADR_DATA_RATE:
        data_rate, steps = data_rate + 1, steps - 1
    while steps > 0 and tx_power < EU868_MAX_TX_POWER_INDEX:
        tx_power, steps = tx_power + 1, steps - 1
    while steps < 0 and tx_power > 0:
        tx_power, steps = tx_power - 1, steps + 1
    return LinkSettings(data_rate, tx_power)

"""The EU868 regional parameters the network server schedules downlinks by (RP002-1.0.x).

Only EU868 is built: RX1 answers on the uplink's own channel and data rate, RX2 on one fixed
channel and data rate a second later. A device learns the RX2 data rate as a DR index (the join
accept's DLSettings), which is why the names are kept in DR order.
"""

from __future__ import annotations

from iot_platform.domain.errors import InvalidValue

EU868_DATA_RATES: tuple[str, ...] = (
    "SF12BW125", "SF11BW125", "SF10BW125", "SF9BW125", "SF8BW125", "SF7BW125", "SF7BW250",
)
"""DR0 to DR6, the LoRa data rates (DR7 is FSK, which gateways forwarding LoRa do not use)."""

EU868_RX2_FREQUENCY_HZ = 869_525_000
EU868_RX2_DATA_RATE = "SF12BW125"


def data_rate_index(name: str) -> int:
    """The DR index of an EU868 LoRa data rate (``SF9BW125`` -> 3)."""
    try:
        return EU868_DATA_RATES.index(name.upper())
    except ValueError:
        raise InvalidValue(f"{name!r} is not an EU868 LoRa data rate ({', '.join(EU868_DATA_RATES)})",
                           field="data_rate") from None


_DEMODULATION_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
"""The lowest SNR a LoRa receiver still demodulates at each spreading factor."""

EU868_MAX_ADR_DATA_RATE = 5
"""ADR raises a device's data rate up to DR5 (SF7BW125); DR6 takes a 250 kHz channel."""
EU868_MAX_TX_POWER_INDEX = 7
"""TXPower 0 is the maximum EIRP (16 dBm), each step 2 dB less, down to 7 (2 dBm)."""


def demodulation_floor(data_rate: int) -> float:
    """The lowest SNR (dB) at which an EU868 data rate (DR0-DR6) is still received."""
    return _DEMODULATION_FLOOR_DB[12 - min(data_rate, 5)]


def link_margin(snr: float, data_rate: str) -> int:
    """How many dB an uplink was heard above the floor of its spreading factor (LinkCheckAns);
    0 for a data rate that is not LoRa SF7-SF12, as a gateway may report anything."""
    try:
        floor = _DEMODULATION_FLOOR_DB[int(data_rate.upper().removeprefix("SF").split("BW")[0])]
    except (KeyError, ValueError):
        return 0
    return max(0, round(snr - floor))

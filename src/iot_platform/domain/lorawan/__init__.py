"""LoRaWAN 1.0.x rules that hold whatever carries the frames: identifiers, activation, counters."""

from iot_platform.domain.lorawan.counters import (
    MAX_FCNT_GAP,
    CounterVerdict,
    counter_candidates,
)
from iot_platform.domain.lorawan.values import (
    Activation,
    LoRaWANProfile,
    validate_dev_addr,
    validate_eui,
)

__all__ = [
    "MAX_FCNT_GAP",
    "Activation",
    "CounterVerdict",
    "LoRaWANProfile",
    "counter_candidates",
    "validate_dev_addr",
    "validate_eui",
]

"""How a rule decides, reading by reading, whether to raise or resolve an alert for one device.

Pure functions over a small per-(rule, device) state, so the rule engine's behaviour is tested
without clocks or I/O. Times are seconds: the reading's own timestamp for readings (so a replay
or a late batch is judged by when things happened), the engine's clock for ``no_data``.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from iot_platform.domain.alerts.values import MIN_ZSCORE_SAMPLES, Condition, Operator


class Verdict(Enum):
    NOTHING = "nothing"
    RAISE = "raise"
    RESOLVE = "resolve"


@dataclass(slots=True)
class SeriesState:
    """What one rule remembers about one device."""

    last_value: float | None = None
    last_at: float | None = None
    window: deque[float] = field(default_factory=deque)
    true_since: float | None = None
    false_since: float | None = None
    open_alert: str | None = None
    """The id of this rule's open alert for this device, if any."""
    observed: float | None = None
    """The value that last made the condition true (what an alert reports)."""
    judged_at: float | None = None
    """The newest time judged; an older reading arriving late does not move the verdict."""


_COMPARISONS: dict[Operator, Callable[[float, float], bool]] = {
    Operator.GT: operator.gt, Operator.GE: operator.ge, Operator.LT: operator.lt,
    Operator.LE: operator.le, Operator.EQ: operator.eq, Operator.NE: operator.ne,
}


def holds(condition: Condition, value: float, at: float, state: SeriesState) -> bool:
    """Whether the condition is true for this reading; updates the history it depends on."""
    op = condition.op
    threshold = condition.threshold if condition.threshold is not None else 0.0
    compare = _COMPARISONS.get(op)
    if compare is not None:
        return compare(value, threshold)
    if op in (Operator.OUTSIDE, Operator.INSIDE):
        assert condition.min is not None and condition.max is not None
        inside = condition.min <= value <= condition.max
        return inside if op is Operator.INSIDE else not inside
    if op is Operator.RATE_OF_CHANGE:
        previous, previous_at = state.last_value, state.last_at
        state.last_value, state.last_at = value, at
        if previous is None or previous_at is None or at <= previous_at:
            return False
        return abs(value - previous) / (at - previous_at) > threshold
    if op is Operator.ZSCORE:
        window = state.window
        result = False
        if len(window) >= MIN_ZSCORE_SAMPLES:
            mean = math.fsum(window) / len(window)
            variance = math.fsum((v - mean) ** 2 for v in window) / (len(window) - 1)
            std = math.sqrt(variance)
            result = std > 0 and abs(value - mean) / std > threshold
        window.append(value)
        while len(window) > condition.zscore_window:
            window.popleft()
        return result
    if op is Operator.NO_DATA:
        state.last_at = at  # a reading arrived: the device is not silent
        return False
    raise AssertionError(f"unhandled operator {op}")


def evaluate(
    condition: Condition, hold_seconds: float, state: SeriesState, value: float, at: float
) -> Verdict:
    """One reading, judged. Readings older than one already judged are ignored (pipelined
    transports and retries reorder a device's readings; an alert reflects the newest)."""
    if state.judged_at is not None and at < state.judged_at:
        return Verdict.NOTHING
    state.judged_at = at
    true = holds(condition, value, at, state)
    if true:
        state.observed = value
    return judge(state, true, at, hold_seconds)


def silent_for(state: SeriesState, now: float) -> float | None:
    """Seconds since the last reading (``no_data``), or None if none was ever seen."""
    return None if state.last_at is None else now - state.last_at


def judge(state: SeriesState, true: bool, at: float, hold_seconds: float) -> Verdict:
    """Hysteresis: raise once the condition has held for ``hold_seconds``, resolve once it has
    been clear for as long. At most one open alert per state."""
    if true:
        state.false_since = None
        if state.true_since is None or at < state.true_since:
            state.true_since = at
        if state.open_alert is None and at - state.true_since >= hold_seconds:
            return Verdict.RAISE
        return Verdict.NOTHING
    state.true_since = None
    if state.open_alert is None:
        state.false_since = None
        return Verdict.NOTHING
    if state.false_since is None or at < state.false_since:
        state.false_since = at
    if at - state.false_since >= hold_seconds:
        return Verdict.RESOLVE
    return Verdict.NOTHING

"""Frame counters: a frame carries the low 16 bits of its 32-bit counter, and the network
server rebuilds the rest from the last counter it accepted (LoRaWAN 1.0.x, section 4.3.1.5).

The rebuilt value is only a guess until the MIC, which covers all 32 bits, confirms it; so this
module names the candidates in the order to try them and what each would mean, and the network
server keeps the first one whose MIC verifies.
"""

from __future__ import annotations

from enum import StrEnum

MAX_FCNT_GAP = 16384
"""Frames further ahead than this of the last accepted counter are dropped (1.0.x MAX_FCNT_GAP)."""


class CounterVerdict(StrEnum):
    NEW = "new"
    REPLAY = "replay"
    """The counter of the last accepted frame again: a replayed (or re-forwarded) frame."""
    BEHIND = "counter_behind"
    """A counter below the last accepted one: an old frame, or a device whose counter reset."""


def counter_candidates(last: int | None, received: int) -> list[tuple[int, CounterVerdict]]:
    """The 32-bit counters a frame carrying ``received`` (16 bits) may have, most likely first.

    ``last``: the last accepted 32-bit counter of the session, None before its first frame.
    """
    if not 0 <= received <= 0xFFFF:
        raise ValueError("a frame carries 16 bits of its counter")
    if last is None:
        return [(received, CounterVerdict.NEW)]
    same_epoch = (last & ~0xFFFF) | received
    if same_epoch > last:
        return [(same_epoch, CounterVerdict.NEW)] if same_epoch - last <= MAX_FCNT_GAP else []
    verdict = CounterVerdict.REPLAY if same_epoch == last else CounterVerdict.BEHIND
    candidates = [(same_epoch, verdict)]
    rolled = same_epoch + 0x10000
    if rolled - last <= MAX_FCNT_GAP and rolled <= 0xFFFFFFFF:
        candidates.insert(0, (rolled, CounterVerdict.NEW))
    return candidates

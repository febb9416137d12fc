"""How often one caller may do one thing: the port every rate limit of the platform uses.

A limiter keeps a budget per key (a username, a client address, a device id). ``hit`` spends
from it and says how long to wait when it is spent; ``retry_after`` only looks; ``credit``
gives back. Logins spend before the (slow) check, so concurrent guesses cannot all slip past
one look, and get their token back when they succeed; bad bearer credentials (cheap to check)
look first and spend after a failure; readings spend at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RateLimiter(Protocol):
    def retry_after(self, key: str) -> float:
        """0 if ``key`` may act now, else the seconds until it may."""

    def hit(self, key: str, cost: float = 1.0) -> float:
        """Spends ``cost`` of ``key``'s budget and returns 0; or, if the budget holds less,
        spends nothing and returns the seconds until it will hold ``cost``."""

    def credit(self, key: str, cost: float = 1.0) -> None:
        """Gives back what a ``hit`` spent (never beyond the budget's size)."""


class Throttled(Exception):
    """A caller over its budget; ``retry_after`` seconds until it may try again."""

    def __init__(self, what: str, retry_after: float) -> None:
        super().__init__(f"too many {what}; retry in {retry_after:.0f}s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Unlimited:
    """A limiter that never says no (a limit switched off, tests that do not care)."""

    def retry_after(self, key: str) -> float:
        return 0.0

    def hit(self, key: str, cost: float = 1.0) -> float:
        return 0.0

    def credit(self, key: str, cost: float = 1.0) -> None:
        pass

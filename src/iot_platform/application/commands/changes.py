"""In-process news of command changes, so that waiting callers wake at once.

Waiters re-read the read model when woken and also poll it at an interval: another process
may change a command, and that process's news never arrives here.
"""

from __future__ import annotations

import asyncio
import contextlib


class CommandChanges:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def changed(self) -> None:
        """Wakes every current waiter; each re-checks its own condition."""
        self._event.set()
        self._event = asyncio.Event()

    def mark(self) -> asyncio.Event:
        """Taken before reading, then given to ``wait``: a change in between is not missed."""
        return self._event

    async def wait(self, timeout: float, since: asyncio.Event | None = None) -> None:
        """Returns on the next change (after ``since``), or after ``timeout`` seconds."""
        event = since or self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

"""Logging that anyone on the network cannot turn into a flood.

A listener open to the network (GWMP on UDP 1700, CoAP on 5683) hears garbage: every datagram
is counted in a metric, but a log line per datagram would let one sender fill the disk and bury
what matters. ``OncePerInterval`` writes at most one line per kind of problem per interval
(a minute by default), and says how many of that kind it left out since its last line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable


class OncePerInterval:
    """``log(kind, message, *args)``: the first of a kind is written, the next ones within
    ``interval`` seconds only counted; the next line written says how many were left out."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 1000) -> None:
        self._logger = logger
        self._interval = interval
        self._level = level
        self._clock = clock
        self._max_kinds = max_kinds
        self._last: dict[str, tuple[float, int]] = {}
        """kind -> (when its last line was written, how many were left out since)."""

    def __call__(self, kind: str, message: str, *args: object) -> bool:
        """True if a line was written. No traceback ever: the exception's text belongs in
        ``message``. (With the logger at DEBUG, the exception being handled is appended.)"""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last[0] < self._interval:
            self._last[kind] = (last[0], last[1] + 1)
            return False
        if last is None and len(self._last) >= self._max_kinds:  # kinds come from code, but be safe
            self._last.clear()
        skipped = last[1] if last is not None else 0
        suffix = f" ({skipped} more like it in the last {self._interval:.0f} s)" if skipped else ""
        self._last[kind] = (now, 0)
        self._logger.log(self._level, message + suffix, *args,
                         exc_info=sys.exc_info()[0] is not None and self._logger.isEnabledFor(logging.DEBUG))
        return True


class OncePerIntervalFilter(logging.Filter):
    """A filter for a library's logger that writes a line per datagram (aiocoap's "Ignoring
    unparsable message from ..."): records at ``level`` or above pass once per message
    template per ``interval``; lower ones pass untouched."""

    def __init__(self, interval: float = 60.0, level: int = logging.WARNING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._level = level
        self._clock = clock
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._level:
            return True
        kind, now = str(record.msg), self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            return False
        if len(self._last) >= 1000:
            self._last.clear()
        self._last[kind] = now
        return True

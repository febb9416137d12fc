"""The wall clock. The domain reads none (every event is given its time), so the application and
the adapters read it here, and tests can pass another function where a ``clock`` is accepted."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)

"""Errors raised by use cases and ports, as opposed to rules of the model."""

from __future__ import annotations


class ApplicationError(Exception):
    code = "application_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConcurrencyError(ApplicationError):
    """A writer appended to a stream at a version that is no longer current."""

    code = "stale_version"

    def __init__(self, stream_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, not the expected {expected}"
            if actual is not None
            else f"stream {stream_id!r} moved past the expected version {expected}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class NotFound(ApplicationError):
    code = "not_found"


class UnreadableHistory(ApplicationError):
    """An aggregate's stream holds an event this release cannot read: it cannot be changed
    until an upcaster for that event ships (its read model, and everything else, still serve)."""

    code = "unreadable_history"

    def __init__(self, stream_id: str, position: int, event_type: str, error: str) -> None:
        super().__init__(
            f"{stream_id} holds an event this release cannot read ({event_type} at position "
            f"{position}: {error}); it cannot be changed until that event can be read"
        )
        self.stream_id = stream_id
        self.position = position

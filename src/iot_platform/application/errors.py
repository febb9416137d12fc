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

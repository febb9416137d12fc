"""Domain errors: a rule of the model was broken by the command, not by the machinery."""

from __future__ import annotations


class DomainError(Exception):
    """Base for every rule the model enforces; the API maps these to 4xx answers."""

    code = "domain_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidValue(DomainError):
    """A value object refused its input (a latitude of 91, an empty device id...)."""

    code = "invalid_value"


class InvalidTransition(DomainError):
    """The aggregate is in a state that does not allow this command."""

    code = "invalid_transition"


class AlreadyExists(DomainError):
    """A second registration of an identity that is already taken."""

    code = "already_exists"

"""The base of every domain event.

Events are immutable facts named in the past tense. Each class carries a schema version so that
stored events written by an older release can be upcast when read (see the event registry in
infrastructure). Fields are keyword-only so that subclasses may add required fields after the
base's defaulted metadata. ``occurred_at`` has no default: the time comes from whoever causes the
event (the application's clock, or the stored row), so the domain reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar
from uuid import uuid4


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    schema_version: ClassVar[int] = 1

    aggregate_id: str
    occurred_at: datetime
    actor: str = "system"
    correlation_id: str = field(default_factory=lambda: uuid4().hex)

    @classmethod
    def event_type(cls) -> str:
        return cls.__name__

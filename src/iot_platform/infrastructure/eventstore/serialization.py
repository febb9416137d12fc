"""Events to JSON and back, by registered name, upcasting older schema versions on the way in.

Pydantic's TypeAdapter does the dataclass <-> JSON mapping (nested value objects, enums,
datetimes) from the outside, so domain events stay plain dataclasses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from iot_platform.application.ports import UnreadableEvent
from iot_platform.domain.alerts.events import ALERT_EVENTS
from iot_platform.domain.commands.events import COMMAND_EVENTS
from iot_platform.domain.devices.events import DEVICE_EVENTS
from iot_platform.domain.errors import InvalidValue
from iot_platform.domain.events import DomainEvent

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class UnknownEventType(LookupError):
    pass


class EventNotStorable(InvalidValue):
    """An event that would not read back equal to itself; it is refused before it is stored.

    The domain's value objects refuse such values first; this is the guard behind them, so a
    value they miss costs one refused request (a 422) instead of an unreadable event store."""


def _field_of(exc: ValidationError) -> str | None:
    for error in exc.errors():
        names = [str(p) for p in error["loc"] if isinstance(p, str)]
        if names:
            return names[-1]
    return None


class EventSerializer:
    def __init__(self) -> None:
        self._types: dict[str, type[DomainEvent]] = {}
        self._adapters: dict[type[DomainEvent], TypeAdapter[Any]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, *event_types: type[DomainEvent]) -> None:
        for event_type in event_types:
            name = event_type.event_type()
            if self._types.get(name, event_type) is not event_type:
                raise ValueError(f"two event classes are named {name}")
            self._types[name] = event_type
            self._adapters[event_type] = TypeAdapter(event_type)

    def register_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """``upcaster`` turns the JSON of ``from_version`` into that of ``from_version + 1``."""
        self._upcasters[(event_type, from_version)] = upcaster

    def serialize(self, event: DomainEvent) -> str:
        """The event's JSON, checked to read back equal to ``event`` (else ``EventNotStorable``)."""
        adapter = self._adapters[type(event)]
        name = event.event_type()
        try:
            data = adapter.dump_json(event).decode()
        except PydanticSerializationError as exc:
            raise EventNotStorable(f"{name} cannot be written as JSON: {exc}") from None
        try:
            back = adapter.validate_json(data)
        except ValidationError as exc:
            raise EventNotStorable(
                f"{name} would not read back: {exc.errors()[0]['msg']}", field=_field_of(exc)
            ) from None
        if back != event:
            raise EventNotStorable(f"{name} would not read back unchanged")
        return data

    def deserialize(self, event_type: str, schema_version: int, data: str) -> DomainEvent:
        try:
            cls = self._types[event_type]
        except KeyError:
            raise UnknownEventType(f"no event class registered as {event_type!r}") from None
        if schema_version == cls.schema_version:
            event: DomainEvent = self._adapters[cls].validate_json(data)
            return event
        payload = json.loads(data)
        for version in range(schema_version, cls.schema_version):
            try:
                payload = self._upcasters[(event_type, version)](payload)
            except KeyError:
                raise UnknownEventType(
                    f"no upcaster for {event_type} from schema version {version}"
                ) from None
        upcast: DomainEvent = self._adapters[cls].validate_python(payload)
        return upcast

    def to_jsonable(self, event: DomainEvent) -> dict[str, Any]:
        """The event's fields as JSON types, for the history API and the Kafka relay."""
        if isinstance(event, UnreadableEvent):
            return {"unreadable": event.error, "stored_type": event.stored_type,
                    "stored_schema_version": event.stored_schema_version, "data": event.data}
        result: dict[str, Any] = self._adapters[type(event)].dump_python(event, mode="json")
        return result


def build_event_serializer(extra: Iterable[type[DomainEvent]] = ()) -> EventSerializer:
    """The serializer knowing every domain event of the platform."""
    serializer = EventSerializer()
    serializer.register(*DEVICE_EVENTS, *ALERT_EVENTS, *COMMAND_EVENTS, *extra)
    return serializer

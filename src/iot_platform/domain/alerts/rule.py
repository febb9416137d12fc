"""The AlertRule aggregate: a definition that can be created, changed and deleted."""

from __future__ import annotations

from functools import singledispatchmethod
from typing import Any

from iot_platform.domain.aggregate import Aggregate, EventContext
from iot_platform.domain.alerts.events import AlertRuleChanged, AlertRuleCreated, AlertRuleDeleted
from iot_platform.domain.alerts.values import RuleDefinition
from iot_platform.domain.errors import AlreadyExists, InvalidTransition
from iot_platform.domain.events import DomainEvent


class AlertRule(Aggregate):
    stream_type = "alert_rule"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.definition: RuleDefinition | None = None
        self.deleted = False

    @property
    def exists(self) -> bool:
        return self.definition is not None and not self.deleted

    def create(self, definition: RuleDefinition, context: EventContext = EventContext()) -> None:
        if self.definition is not None:
            raise AlreadyExists(f"rule {self.id!r} already exists")
        self._trigger(AlertRuleCreated(definition=definition, **self._meta(context)))

    def change(self, definition: RuleDefinition, context: EventContext = EventContext()) -> None:
        self._require_live()
        if definition != self.definition:
            self._trigger(AlertRuleChanged(definition=definition, **self._meta(context)))

    def delete(self, context: EventContext = EventContext()) -> None:
        self._require_live()
        self._trigger(AlertRuleDeleted(**self._meta(context)))

    def _require_live(self) -> None:
        if self.deleted:
            raise InvalidTransition(f"rule {self.id!r} was deleted")

    # -- state changes: only here -------------------------------------------------------
    @singledispatchmethod
    def _apply(self, event: DomainEvent) -> None:
        raise TypeError(f"AlertRule cannot apply {type(event).__name__}")

    @_apply.register
    def _(self, event: AlertRuleCreated) -> None:
        self.definition = event.definition

    @_apply.register
    def _(self, event: AlertRuleChanged) -> None:
        self.definition = event.definition

    @_apply.register
    def _(self, event: AlertRuleDeleted) -> None:
        self.deleted = True

    def _state(self) -> dict[str, Any]:
        return {
            "definition": None if self.definition is None else self.definition.as_dict(),
            "deleted": self.deleted,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        raw = state["definition"]
        self.definition = None if raw is None else RuleDefinition.from_dict(raw)
        self.deleted = bool(state["deleted"])


"""The rule engine: a consumer of the telemetry stream that raises and resolves alerts.

State per (rule, device) is kept in memory, in a bounded LRU map: evicting an entry forgets only
history (a z-score window, a hold timer), never an open alert, which is kept apart. On start the
engine reloads the rules and the open alerts from the read models, so a restart neither re-raises
an open alert nor forgets one. Rules changed in this process are applied at once; rules changed
by another process are picked up by ``refresh``, which the platform runs periodically.

Readings are judged at their own timestamps; ``no_data`` is judged by the clock, in ``sweep``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from uuid import uuid4

from iot_platform.application.alerts.commands import RaiseAlert, ResolveAlert
from iot_platform.application.alerts.handlers import AlertHandler
from iot_platform.application.alerts.index import RuleIndex
from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.application.alerts.ports import AlertReadModel, Clock
from iot_platform.application.errors import NotFound
from iot_platform.application.telemetry.model import NS_PER_SECOND, Reading
from iot_platform.application.telemetry.ports import DeviceDirectory
from iot_platform.domain.aggregate import EventContext
from iot_platform.domain.alerts import (
    Operator,
    RuleDefinition,
    SeriesState,
    Verdict,
    evaluate,
    judge,
    silent_for,
)
from iot_platform.domain.errors import DomainError

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(rule id, device id)"""

_ENGINE = EventContext(actor="rule-engine")


class RuleEngine:
    name = "rules"

    def __init__(
        self,
        alerts: AlertHandler,
        read_model: AlertReadModel,
        directory: DeviceDirectory,
        clock: Clock,
        max_states: int = 100_000,
    ) -> None:
        self._alerts = alerts
        self._read_model = read_model
        self._directory = directory
        self._clock = clock
        self._max_states = max_states
        self._rules: dict[str, RuleDefinition] = {}
        self._ahead: dict[str, int] = {}
        """Rules changed here, by the version saved, until the read model shows that version."""
        self._index = RuleIndex({})
        self._states: OrderedDict[Key, SeriesState] = OrderedDict()
        self._open: dict[Key, str] = {}
        self._open_keys: dict[str, Key] = {}
        self._lock = asyncio.Lock()
        self.evaluations = 0
        """Readings judged against a rule (for metrics and the benchmark)."""

    # -- rules ----------------------------------------------------------------------------
    def definition(self, rule_id: str) -> RuleDefinition | None:
        return self._rules.get(rule_id)

    async def load(self) -> None:
        """Rules, open alerts and (for ``no_data``) last-seen times from the read models."""
        async with self._lock:
            self._open.clear()
            self._open_keys.clear()
            for alert in await self._read_model.open_alerts():
                self._remember_open((alert.rule_id, alert.device_id), alert.alert_id)
            self._states.clear()
            await self._install({r.rule_id: r.definition for r in await self._read_model.rules()})

    async def refresh(self) -> None:
        """Picks up rules changed by other processes.

        The read model may lag behind changes made here (or be read just before one), so a rule
        changed here is taken from the read model only once it shows that version or a later
        one; until then this process's own definition (or its deletion) stands.
        """
        views = {r.rule_id: r for r in await self._read_model.rules()}
        async with self._lock:
            rules: dict[str, RuleDefinition] = {}
            for rule_id, view in views.items():
                if view.version >= self._ahead.get(rule_id, 0):
                    self._ahead.pop(rule_id, None)
                    rules[rule_id] = view.definition
                elif rule_id in self._rules:  # changed here since: ours is newer
                    rules[rule_id] = self._rules[rule_id]
            for rule_id in [r for r in self._ahead if r not in views]:
                if rule_id in self._rules:  # created here, not projected yet
                    rules[rule_id] = self._rules[rule_id]
                else:  # deleted here, and the read model has caught up
                    del self._ahead[rule_id]
            if rules == self._rules:
                return
            changed = {k for k in rules.keys() | self._rules.keys() if rules.get(k) != self._rules.get(k)}
            self._forget_states(changed)
            await self._install(rules)

    def rule_changed(self, rule_id: str, definition: RuleDefinition | None, version: int) -> None:
        """A rule was created, changed or deleted in this process (a RuleHandler listener)."""
        self._ahead[rule_id] = max(version, self._ahead.get(rule_id, 0))
        rules = dict(self._rules)
        if definition is None:
            rules.pop(rule_id, None)
        else:
            rules[rule_id] = definition
        self._forget_states({rule_id})
        self._rules = rules
        self._index = RuleIndex(rules)
        if any(d.condition.op is Operator.NO_DATA for d in rules.values()):
            asyncio.get_running_loop().create_task(self._seed_presence())
        if definition is None:
            asyncio.get_running_loop().create_task(self._resolve_rule(rule_id))

    async def _install(self, rules: dict[str, RuleDefinition]) -> None:
        self._rules = rules
        self._index = RuleIndex(rules)
        if any(d.condition.op is Operator.NO_DATA for d in rules.values()):
            await self._seed_presence(locked=True)

    def _forget_states(self, rule_ids: set[str]) -> None:
        for key in [k for k in self._states if k[0] in rule_ids]:
            del self._states[key]

    async def _seed_presence(self, *, locked: bool = False) -> None:
        """Devices already silent when a ``no_data`` rule starts are judged from their last-seen."""
        presence = await self._read_model.presence()
        rules = [(rid, d) for rid, d in self._rules.items()
                 if d.enabled and d.condition.op is Operator.NO_DATA]
        for device in presence:
            if device.last_seen is None:
                continue
            for rule_id, definition in rules:
                if definition.selector.matches(device.device_id, device.device_type, device.tags):
                    state = self._state((rule_id, device.device_id))
                    if state.last_at is None or state.last_at < device.last_seen:
                        state.last_at = device.last_seen

    async def _resolve_rule(self, rule_id: str) -> None:
        for key, alert_id in list(self._open.items()):
            if key[0] == rule_id:
                await self._resolve(key, alert_id, "the rule was deleted")

    # -- alerts told by others --------------------------------------------------------------
    def alert_changed(self, notice: AlertNotice) -> None:
        """An AlertHandler listener: a person resolving an alert frees its (rule, device)."""
        if notice.kind != "resolved":
            return
        key = self._open_keys.pop(notice.alert_id, None)
        if key is None:
            return
        self._open.pop(key, None)
        state = self._states.get(key)
        if state is not None:
            state.open_alert = None
            state.true_since = state.false_since = None

    # -- readings ---------------------------------------------------------------------------
    async def handle(self, readings: Sequence[Reading]) -> None:
        index = self._index
        if not index.metrics:
            return
        tags: Mapping[str, Mapping[str, str]] = {}
        if index.uses_tags:
            infos = await self._directory.lookup({r.device_id for r in readings})
            tags = {d: info.tags for d, info in infos.items()}
        now = self._clock.now()
        async with self._lock:
            for reading in readings:
                by_metric = index.rules_for(reading.device_id, reading.device_type,
                                            tags.get(reading.device_id, {}))
                if not by_metric:
                    continue
                device_id = reading.device_id
                at = reading.timestamp_ns / NS_PER_SECOND
                for metric, raw in reading.metrics.items():
                    rules = by_metric.get(metric)
                    if not rules or isinstance(raw, str):
                        continue
                    value = float(raw)
                    self.evaluations += len(rules)
                    # The hot loop: per reading and matching rule, only the state lookup and the
                    # pure verdict; the coroutine that acts is entered only when there is an act.
                    for rule in rules:
                        key = (rule.rule_id, device_id)
                        state = self._state(key)
                        definition = rule.definition
                        condition = definition.condition
                        when = now if condition.op is Operator.NO_DATA else at  # silence: by the clock
                        verdict = evaluate(condition, definition.duration_seconds, state, value, when)
                        if verdict is not Verdict.NOTHING:
                            await self._act(verdict, key, definition, state, when)

    async def sweep(self) -> None:
        """Judges ``no_data`` rules against the clock."""
        now = self._clock.now()
        async with self._lock:
            for key, state in list(self._states.items()):
                definition = self._rules.get(key[0])
                if definition is None or definition.condition.op is not Operator.NO_DATA:
                    continue
                silent = silent_for(state, now)
                if silent is None:
                    continue
                threshold = definition.condition.threshold or 0.0
                true = silent >= threshold
                if true:
                    state.observed = round(silent, 3)
                verdict = judge(state, true, now, definition.duration_seconds)
                await self._act(verdict, key, definition, state, now)

    async def _act(
        self, verdict: Verdict, key: Key, definition: RuleDefinition, state: SeriesState, at: float
    ) -> None:
        if verdict is Verdict.RAISE:
            alert_id = uuid4().hex
            value = state.observed
            shown = "" if value is None else f" (value {value:g})"
            try:
                await self._alerts.raise_alert(
                    RaiseAlert(alert_id, key[0], definition, key[1], value,
                               f"{definition.name}: {definition.condition.describe()}{shown}", at)
                )
            except Exception:  # stays un-raised; the next reading that holds tries again
                log.exception("raising an alert for rule %s on %s failed", *key)
                return
            self._remember_open(key, alert_id)
        elif verdict is Verdict.RESOLVE and state.open_alert is not None:
            await self._resolve(key, state.open_alert, "the condition cleared")

    async def _resolve(self, key: Key, alert_id: str, why: str) -> None:
        try:
            await self._alerts.resolve(ResolveAlert(alert_id, why, _ENGINE), automatic=True)
        except (NotFound, DomainError) as exc:  # already resolved by hand: forget it all the same
            log.info("alert %s was not open: %s", alert_id, exc)
        except Exception:
            log.exception("resolving alert %s failed; will retry on the next reading", alert_id)
            return
        self._open.pop(key, None)
        self._open_keys.pop(alert_id, None)
        state = self._states.get(key)
        if state is not None:
            state.open_alert = None
            state.false_since = None

    # -- state --------------------------------------------------------------------------------
    def _remember_open(self, key: Key, alert_id: str) -> None:
        self._open[key] = alert_id
        self._open_keys[alert_id] = key
        state = self._states.get(key)
        if state is not None:
            state.open_alert = alert_id

    def _state(self, key: Key) -> SeriesState:
        state = self._states.get(key)
        if state is None:
            state = SeriesState(open_alert=self._open.get(key))
            self._states[key] = state
            if len(self._states) > self._max_states:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
        return state

    @property
    def open_alerts(self) -> int:
        return len(self._open)

    @property
    def states(self) -> int:
        return len(self._states)

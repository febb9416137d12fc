"""Which rules a reading must be judged against, without scanning every rule per reading.

Rules are indexed by metric; within a metric, rules naming one device exactly sit in a map by
device id, and the rest (globs, types, tags, no device at all) are filtered once per device
and metric and the answer cached until the rules change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from iot_platform.domain.alerts import RuleDefinition

_CACHE_LIMIT = 200_000


@dataclass(frozen=True, slots=True)
class IndexedRule:
    rule_id: str
    definition: RuleDefinition


class RuleIndex:
    def __init__(self, rules: Mapping[str, RuleDefinition]) -> None:
        self._exact: dict[str, dict[str, list[IndexedRule]]] = {}
        self._general: dict[str, list[IndexedRule]] = {}
        self._cache: dict[tuple[str, str, str], tuple[IndexedRule, ...]] = {}
        self.uses_tags = False
        for rule_id, definition in sorted(rules.items()):
            if not definition.enabled:
                continue
            rule = IndexedRule(rule_id, definition)
            metric = definition.condition.metric
            device = definition.selector.exact_device
            if device is not None:
                self._exact.setdefault(metric, {}).setdefault(device, []).append(rule)
            else:
                self._general.setdefault(metric, []).append(rule)
            self.uses_tags = self.uses_tags or bool(definition.selector.tags)
        self.metrics = frozenset(self._exact) | frozenset(self._general)

    def matching(
        self, device_id: str, device_type: str, tags: Mapping[str, str], metric: str
    ) -> tuple[IndexedRule, ...]:
        if metric not in self.metrics:
            return ()
        key = (device_id, device_type, metric)
        cached = None if self.uses_tags else self._cache.get(key)
        if cached is not None:
            return cached
        candidates = self._exact.get(metric, {}).get(device_id, []) + self._general.get(metric, [])
        found = tuple(
            r for r in candidates if r.definition.selector.matches(device_id, device_type, tags)
        )
        if not self.uses_tags:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

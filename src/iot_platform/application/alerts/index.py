"""Which rules a reading must be judged against, without scanning every rule per reading.

A device's rules are found from buckets, never from the whole rule set: rules naming one device
exactly by its id; glob rules (``sensor-*``) by the literal prefix before their first wildcard, so
a device meets only the globs whose prefix its id starts with; rules with no pattern by their
device type, else by one of their tags; and the few rules that select every device. Only those
candidates are matched in full. The answer, per metric, is cached per device (its id, type and,
when any rule selects by tag, its tags) until the rules change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from iot_platform.domain.alerts import RuleDefinition
from iot_platform.domain.alerts.values import GLOB_CHARACTERS

_CACHE_LIMIT = 200_000
"""Devices whose answers are kept; past it the cache starts over (a new fleet or a scan)."""

ByMetric = Mapping[str, tuple["IndexedRule", ...]]
_NOTHING: ByMetric = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class IndexedRule:
    rule_id: str
    definition: RuleDefinition


def _literal_prefix(pattern: str) -> str:
    for i, char in enumerate(pattern):
        if char in GLOB_CHARACTERS:
            return pattern[:i]
    return pattern


class RuleIndex:
    def __init__(self, rules: Mapping[str, RuleDefinition]) -> None:
        self._exact: dict[str, list[IndexedRule]] = {}
        self._by_prefix: dict[int, dict[str, list[IndexedRule]]] = {}
        self._by_type: dict[str, list[IndexedRule]] = {}
        self._by_tag: dict[tuple[str, str], list[IndexedRule]] = {}
        self._everyone: list[IndexedRule] = []
        self._cache: dict[tuple[str, str, tuple[tuple[str, str], ...]], ByMetric] = {}
        self.uses_tags = False
        metrics: set[str] = set()
        for rule_id, definition in rules.items():
            if not definition.enabled:
                continue
            rule = IndexedRule(rule_id, definition)
            metrics.add(definition.condition.metric)
            selector = definition.selector
            self.uses_tags = self.uses_tags or bool(selector.tags)
            if selector.exact_device is not None:
                self._exact.setdefault(selector.exact_device, []).append(rule)
            elif selector.device_pattern is not None:
                prefix = _literal_prefix(selector.device_pattern)
                self._by_prefix.setdefault(len(prefix), {}).setdefault(prefix, []).append(rule)
            elif selector.device_type is not None:
                self._by_type.setdefault(selector.device_type, []).append(rule)
            elif selector.tags:
                self._by_tag.setdefault(min(selector.tags.items()), []).append(rule)
            else:
                self._everyone.append(rule)
        self._prefix_lengths = sorted(self._by_prefix)
        self.metrics = frozenset(metrics)

    def rules_for(self, device_id: str, device_type: str, tags: Mapping[str, str]) -> ByMetric:
        """The enabled rules that watch this device, by metric."""
        if not self.metrics:
            return _NOTHING
        key = (device_id, device_type, tuple(sorted(tags.items())) if self.uses_tags else ())
        found = self._cache.get(key)
        if found is None:
            found = self._match(device_id, device_type, tags)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def matching(
        self, device_id: str, device_type: str, tags: Mapping[str, str], metric: str
    ) -> tuple[IndexedRule, ...]:
        return self.rules_for(device_id, device_type, tags).get(metric, ())

    def _candidates(self, device_id: str, device_type: str, tags: Mapping[str, str]) -> Iterable[IndexedRule]:
        yield from self._exact.get(device_id, ())
        for length in self._prefix_lengths:
            if length > len(device_id):
                break
            yield from self._by_prefix[length].get(device_id[:length], ())
        yield from self._by_type.get(device_type, ())
        if self._by_tag:
            for item in tags.items():
                yield from self._by_tag.get(item, ())
        yield from self._everyone

    def _match(self, device_id: str, device_type: str, tags: Mapping[str, str]) -> ByMetric:
        grouped: dict[str, list[IndexedRule]] = {}
        for rule in self._candidates(device_id, device_type, tags):
            if rule.definition.selector.matches(device_id, device_type, tags):
                grouped.setdefault(rule.definition.condition.metric, []).append(rule)
        if not grouped:
            return _NOTHING
        return {metric: tuple(sorted(found, key=lambda r: r.rule_id)) for metric, found in grouped.items()}

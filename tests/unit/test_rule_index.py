"""The rule index answers exactly what matching every rule in full would, while looking at few.

Given a rule set with every kind of selector (exact ids, globs with and without a literal prefix,
device types, tags, everyone, disabled rules), for every device of a varied fleet the index's
answer per metric equals the brute-force answer; and a device meets only the rules whose bucket
it falls in, not the whole set.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from unittest import mock

from iot_platform.application.alerts.index import RuleIndex
from iot_platform.domain.alerts import Condition, DeviceSelector, Operator, RuleDefinition
from iot_platform.domain.alerts.values import DeviceSelector as SelectorClass

METRICS = ("temperature", "humidity")
SELECTORS = [
    DeviceSelector("sensor-1"),
    DeviceSelector("sensor-*"),
    DeviceSelector("sensor-1*"),
    DeviceSelector("sens?r-2"),
    DeviceSelector("*-3"),
    DeviceSelector("[st]ensor-*"),
    DeviceSelector("pump-*", device_type="pump"),
    DeviceSelector(device_type="th"),
    DeviceSelector(tags={"floor": "1"}),
    DeviceSelector(tags={"floor": "1", "wing": "east"}),
    DeviceSelector("sensor-*", tags={"wing": "east"}),
    DeviceSelector(),
]
DEVICES = [f"{kind}-{n}" for kind in ("sensor", "tensor", "pump", "x") for n in (1, 2, 3, 12, 21)]
TYPES = ("th", "pump")
TAGS: list[Mapping[str, str]] = [{}, {"floor": "1"}, {"floor": "1", "wing": "east"}, {"wing": "east"}]


def rules(enabled: bool = True) -> dict[str, RuleDefinition]:
    out = {}
    for i, (selector, metric) in enumerate(itertools.product(SELECTORS, METRICS)):
        out[f"r{i:02d}"] = RuleDefinition(f"rule {i}", selector, Condition(metric, Operator.GT, 1.0),
                                          enabled=enabled or i % 3 != 0)
    return out


def brute_force(defs: Mapping[str, RuleDefinition], device: str, kind: str,
                tags: Mapping[str, str], metric: str) -> list[str]:
    return sorted(rid for rid, d in defs.items()
                  if d.enabled and d.condition.metric == metric and d.selector.matches(device, kind, tags))


def test_every_device_gets_exactly_the_rules_that_match_it_in_full() -> None:
    defs = rules(enabled=False)  # a third disabled
    index = RuleIndex(defs)
    for device, kind, tags, metric in itertools.product(DEVICES, TYPES, TAGS, METRICS):
        got = [r.rule_id for r in index.matching(device, kind, tags, metric)]
        assert got == brute_force(defs, device, kind, tags, metric), (device, kind, tags, metric)


def test_a_cached_answer_follows_the_device_tags_when_rules_select_by_tag() -> None:
    index = RuleIndex(rules())
    untagged = {r.rule_id for r in index.matching("x-1", "pump", {}, "temperature")}
    tagged = {r.rule_id for r in index.matching("x-1", "pump", {"floor": "1"}, "temperature")}
    assert tagged - untagged  # the floor rule joins once the device carries the tag
    assert {r.rule_id for r in index.matching("x-1", "pump", {}, "temperature")} == untagged


def test_a_device_meets_only_the_rules_in_its_buckets() -> None:
    """1,000 glob rules each over its own slice of devices: a device is matched against one."""
    defs = {f"slice{k:03d}": RuleDefinition(f"slice {k}", DeviceSelector(f"dev-{k:03d}*"),
                                            Condition("temperature", Operator.GT, 1.0))
            for k in range(1000)}
    index = RuleIndex(defs)
    with mock.patch.object(SelectorClass, "matches", autospec=True, side_effect=SelectorClass.matches) as spy:
        found = index.matching("dev-4217", "th", {}, "temperature")
    assert [r.rule_id for r in found] == ["slice421"]
    assert spy.call_count == 1


def test_no_rules_no_metrics_nothing_matches() -> None:
    index = RuleIndex({})
    assert index.metrics == frozenset()
    assert index.rules_for("sensor-1", "th", {}) == {}

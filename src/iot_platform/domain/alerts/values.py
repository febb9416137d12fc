"""What an alert rule is made of: which devices it watches, what it tests, how loudly it tells.

All validation lives here, so a rule that could never be evaluated is refused when it is made
(the API turns the ``InvalidValue`` into a 422 naming ``field``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from iot_platform.domain.errors import InvalidValue
from iot_platform.domain.validation import (
    as_float,
    require_bool,
    require_int,
    require_number,
    require_str_map,
    require_text,
)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Operator(StrEnum):
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="
    OUTSIDE = "outside"
    INSIDE = "inside"
    RATE_OF_CHANGE = "rate_of_change"
    ZSCORE = "zscore"
    NO_DATA = "no_data"


class Channel(StrEnum):
    SSE = "sse"
    WEBSOCKET = "websocket"
    WEBHOOK = "webhook"
    MQTT = "mqtt"
    KAFKA = "kafka"


THRESHOLD_OPERATORS = frozenset(
    {Operator.GT, Operator.GE, Operator.LT, Operator.LE, Operator.EQ, Operator.NE,
     Operator.RATE_OF_CHANGE, Operator.ZSCORE, Operator.NO_DATA}
)
RANGE_OPERATORS = frozenset({Operator.OUTSIDE, Operator.INSIDE})
GLOB_CHARACTERS = frozenset("*?[")
DEFAULT_ZSCORE_WINDOW = 30
MIN_ZSCORE_SAMPLES = 5


@dataclass(frozen=True)
class DeviceSelector:
    """Devices a rule watches: all of the given criteria must hold; none given means every device."""

    device_pattern: str | None = None
    """A device id, or a glob such as ``sensor-*`` (case-sensitive)."""
    device_type: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_text(self.device_pattern, "device_pattern", optional=True)
        require_text(self.device_type, "device_type", optional=True)
        require_str_map(self.tags, "tags")

    @property
    def exact_device(self) -> str | None:
        """The one device id this selector can match, when the pattern has no wildcard."""
        pattern = self.device_pattern
        if pattern is None or GLOB_CHARACTERS & set(pattern):
            return None
        return pattern

    def matches(self, device_id: str, device_type: str, tags: Mapping[str, str]) -> bool:
        if self.device_type is not None and self.device_type != device_type:
            return False
        if any(tags.get(k) != v for k, v in self.tags.items()):
            return False
        pattern = self.device_pattern
        return pattern is None or fnmatchcase(device_id, pattern)


@dataclass(frozen=True)
class Condition:
    """``metric op threshold`` or ``metric op [min, max]``.

    ``rate_of_change``: the absolute change per second between consecutive readings exceeds
    ``threshold``. ``zscore``: the reading is more than ``threshold`` standard deviations from
    the mean of the device's previous ``window`` readings. ``no_data``: no reading of the metric
    for ``threshold`` seconds.
    """

    metric: str
    op: Operator
    threshold: float | None = None
    min: float | None = None
    max: float | None = None
    window: int | None = None

    def __post_init__(self) -> None:
        require_text(self.metric, "metric")
        if not isinstance(self.op, Operator):
            raise InvalidValue("must be one of " + ", ".join(o.value for o in Operator), field="op")
        for name in ("threshold", "min", "max"):
            bound = getattr(self, name)
            require_number(bound, name, optional=True)
            if bound is not None:
                object.__setattr__(self, name, as_float(bound, name))
        require_int(self.window, "window", optional=True)
        if not self.metric or len(self.metric) > 100:
            raise InvalidValue("must be a metric name of 1 to 100 characters", field="metric")
        if self.op in THRESHOLD_OPERATORS:
            if self.threshold is None or not math.isfinite(self.threshold):
                raise InvalidValue(f"op {self.op.value!r} needs a finite threshold", field="threshold")
            if self.op in (Operator.ZSCORE, Operator.NO_DATA, Operator.RATE_OF_CHANGE) and self.threshold <= 0:
                raise InvalidValue(f"op {self.op.value!r} needs a threshold above 0", field="threshold")
        if self.op in RANGE_OPERATORS:
            for name, bound in (("min", self.min), ("max", self.max)):
                if bound is None or not math.isfinite(bound):
                    raise InvalidValue(f"op {self.op.value!r} needs finite min and max", field=name)
            assert self.min is not None and self.max is not None
            if self.min > self.max:
                raise InvalidValue("must not be above max", field="min")
        if self.window is not None and not MIN_ZSCORE_SAMPLES <= self.window <= 10_000:
            raise InvalidValue(
                f"must be between {MIN_ZSCORE_SAMPLES} and 10000 readings", field="window"
            )

    @property
    def zscore_window(self) -> int:
        return self.window or DEFAULT_ZSCORE_WINDOW

    def describe(self) -> str:
        if self.op in RANGE_OPERATORS:
            return f"{self.metric} {self.op.value} [{self.min}, {self.max}]"
        if self.op is Operator.NO_DATA:
            return f"no {self.metric} for {self.threshold:g}s"
        if self.op is Operator.RATE_OF_CHANGE:
            return f"{self.metric} changing faster than {self.threshold:g}/s"
        if self.op is Operator.ZSCORE:
            return f"{self.metric} z-score above {self.threshold:g}"
        return f"{self.metric} {self.op.value} {self.threshold:g}"


@dataclass(frozen=True)
class RuleDefinition:
    """Everything a rule says; a change replaces the whole definition (one event, one truth)."""

    name: str
    selector: DeviceSelector
    condition: Condition
    duration_seconds: float = 0.0
    severity: Severity = Severity.WARNING
    channels: tuple[Channel, ...] = (Channel.SSE,)
    webhook_url: str | None = None
    mqtt_topic: str | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        require_text(self.name, "name")
        require_number(self.duration_seconds, "duration_seconds")
        require_bool(self.enabled, "enabled")
        if not isinstance(self.severity, Severity):
            raise InvalidValue("must be info, warning or critical", field="severity")
        if not isinstance(self.channels, tuple) or not all(isinstance(c, Channel) for c in self.channels):
            raise InvalidValue("must be a list of " + ", ".join(c.value for c in Channel),
                               field="notification_channels")
        require_text(self.webhook_url, "webhook_url", optional=True)
        require_text(self.mqtt_topic, "mqtt_topic", optional=True)
        if not isinstance(self.selector, DeviceSelector):
            raise InvalidValue("must be a device selector", field="selector")
        if not isinstance(self.condition, Condition):
            raise InvalidValue("must be a condition", field="condition")
        if not self.name.strip() or len(self.name) > 200:
            raise InvalidValue("must be 1 to 200 characters", field="name")
        if not math.isfinite(self.duration_seconds) or not 0 <= self.duration_seconds <= 86_400 * 7:
            raise InvalidValue("must be between 0 and 604800 seconds", field="duration_seconds")
        if Channel.WEBHOOK in self.channels:
            url = self.webhook_url or ""
            if not url.startswith(("http://", "https://")):
                raise InvalidValue("the webhook channel needs an http(s) URL", field="webhook_url")
        if Channel.MQTT in self.channels:
            topic = self.mqtt_topic or ""
            if not topic or "+" in topic or "#" in topic:
                raise InvalidValue("the mqtt channel needs a topic without wildcards", field="mqtt_topic")

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types, for snapshots."""
        data = asdict(self)
        data["selector"]["tags"] = dict(self.selector.tags)
        data["condition"]["op"] = self.condition.op.value
        data["severity"] = self.severity.value
        data["channels"] = [c.value for c in self.channels]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleDefinition:
        condition = dict(data["condition"])
        condition["op"] = Operator(condition["op"])
        return cls(
            name=data["name"],
            selector=DeviceSelector(**data["selector"]),
            condition=Condition(**condition),
            duration_seconds=data["duration_seconds"],
            severity=Severity(data["severity"]),
            channels=tuple(Channel(c) for c in data["channels"]),
            webhook_url=data["webhook_url"],
            mqtt_topic=data["mqtt_topic"],
            enabled=data["enabled"],
        )

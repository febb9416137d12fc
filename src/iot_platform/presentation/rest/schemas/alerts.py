"""Request and response bodies of the rule and alert routes.

The rule body is the one telemetry tools already send (``op`` of ``> >= < <= == != outside
inside rate_of_change zscore no_data``), and the minimal form ``{"device_id", "metric", "op",
"threshold"}`` is accepted too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from iot_platform.application.alerts.views import AlertView, RuleView
from iot_platform.presentation.rest.schemas.fields import refuse_null, unset

Op = Literal[">", ">=", "<", "<=", "==", "!=", "outside", "inside", "rate_of_change", "zscore", "no_data"]
SeverityName = Literal["info", "warning", "critical"]
ChannelName = Literal["sse", "websocket", "webhook", "mqtt", "kafka"]


class _RuleFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_pattern: str | None = Field(None, min_length=1, max_length=200,
                                       description="a device id or a glob such as sensor-*")
    device_type: str | None = Field(None, min_length=1, max_length=100)
    tags: dict[str, str] | None = None
    threshold: float | None = Field(None, allow_inf_nan=False)
    min: float | None = Field(None, allow_inf_nan=False)
    max: float | None = Field(None, allow_inf_nan=False)
    window: int | None = Field(None, ge=5, le=10_000, description="zscore: readings in the window")
    duration_seconds: float = unset(ge=0, le=604_800, allow_inf_nan=False,
                                              description="how long the condition must hold (default 0)")
    severity: SeverityName = unset(description="default warning")
    notification_channels: list[ChannelName] = unset(description="default [sse]")
    webhook_url: str | None = Field(None, max_length=2000)
    mqtt_topic: str | None = Field(None, max_length=300)
    enabled: bool = unset(description="default true")

    _not_null = refuse_null("duration_seconds", "severity", "notification_channels", "enabled")


class RuleCreate(_RuleFields):
    _named = refuse_null("name")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "name": "hot lobby", "device_pattern": "sensor-*", "device_type": None, "tags": {},
                "metric": "temperature", "op": ">", "threshold": 30, "min": None, "max": None,
                "duration_seconds": 0, "severity": "critical", "notification_channels": ["sse"],
            }
        },
    )

    name: str = unset(min_length=1, max_length=200,
                                description="default: the condition and the devices watched")
    device_id: str | None = Field(None, min_length=1, max_length=128,
                                  description="minimal form: the one device watched")
    metric: str = Field(min_length=1, max_length=100)
    op: Op


class RuleUpdate(_RuleFields):
    """Fields left out stay as they are."""

    name: str = unset(min_length=1, max_length=200)
    metric: str = unset(min_length=1, max_length=100)
    op: Op = unset()
    expected_version: int | None = Field(None, ge=1)

    _named = refuse_null("name", "metric", "op")


class RulePublic(BaseModel):
    id: str
    name: str
    device_pattern: str | None
    device_type: str | None
    tags: dict[str, str]
    metric: str
    op: str
    threshold: float | None
    min: float | None
    max: float | None
    window: int | None
    duration_seconds: float
    severity: str
    notification_channels: list[str]
    webhook_url: str | None
    mqtt_topic: str | None
    enabled: bool
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, view: RuleView) -> RulePublic:
        d = view.definition
        return cls(
            id=view.rule_id, name=d.name,
            device_pattern=d.selector.device_pattern, device_type=d.selector.device_type,
            tags=dict(d.selector.tags), metric=d.condition.metric, op=d.condition.op.value,
            threshold=d.condition.threshold, min=d.condition.min, max=d.condition.max,
            window=d.condition.window, duration_seconds=d.duration_seconds,
            severity=d.severity.value, notification_channels=[c.value for c in d.channels],
            webhook_url=d.webhook_url, mqtt_topic=d.mqtt_topic, enabled=d.enabled,
            version=view.version, created_at=view.created_at, updated_at=view.updated_at,
        )


class RuleList(BaseModel):
    items: list[RulePublic]
    count: int


class AlertPublic(BaseModel):
    id: str
    rule_id: str
    rule_name: str
    device_id: str
    metric: str
    severity: str
    status: str
    value: float | None
    message: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    note: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    version: int

    @classmethod
    def of(cls, view: AlertView) -> AlertPublic:
        return cls(
            id=view.alert_id, rule_id=view.rule_id, rule_name=view.rule_name,
            device_id=view.device_id, metric=view.metric, severity=view.severity.value,
            status=view.status.value, value=view.value, message=view.message,
            raised_at=view.raised_at, acknowledged_at=view.acknowledged_at,
            acknowledged_by=view.acknowledged_by, note=view.note, resolved_at=view.resolved_at,
            resolved_by=view.resolved_by, resolution=view.resolution, version=view.version,
        )


class AlertList(BaseModel):
    items: list[AlertPublic]
    count: int


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000)


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: str | None = Field(None, max_length=2000, description="why it is resolved")

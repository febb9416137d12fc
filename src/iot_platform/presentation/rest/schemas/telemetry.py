"""Bodies of the telemetry routes."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from iot_platform.application.telemetry.model import MetricValue, Outcome


class TelemetryEvent(BaseModel):
    """One reading. ``event_id``/``timeStamp`` (the form other telemetry APIs use) are accepted
    for ``message_id``/``timestamp``; tags may be an object or a list of "key:value"."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "example": {
                "device_id": "sensor-001",
                "message_id": "m-0001",
                "timestamp": "2026-01-01T12:00:00Z",
                "metrics": {"temperature": 23.5, "humidity": 45.2},
                "tags": {"room": "101"},
            }
        },
    )

    device_id: str = Field(min_length=1, max_length=128)
    message_id: str | int | None = Field(
        None, validation_alias=AliasChoices("message_id", "event_id")
    )
    timestamp: str | int | float | None = Field(
        None, validation_alias=AliasChoices("timestamp", "timeStamp", "ts")
    )
    metrics: dict[str, Any]
    tags: dict[str, Any] | list[str] | None = None


class BatchEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[TelemetryEvent]


class EventResult(BaseModel):
    event_id: str | None
    """The event's message_id, under the name existing clients read."""
    device_id: str
    status: str
    reason: str | None = None
    detail: str | None = None

    @classmethod
    def of(cls, outcome: Outcome) -> EventResult:
        return cls(
            event_id=outcome.message_id,
            device_id=outcome.device_id,
            status=outcome.status.value,
            reason=outcome.reason.value if outcome.reason else None,
            detail=outcome.detail,
        )


class ReadingOut(BaseModel):
    timestamp: str
    timestamp_ns: int
    metrics: dict[str, MetricValue]
    tags: dict[str, str]


class DeviceReadings(BaseModel):
    device_id: str
    readings: list[ReadingOut]


class TaggedReading(ReadingOut):
    device_id: str


class TagSearchResult(BaseModel):
    tag: str
    readings: list[TaggedReading]


class LatestValue(BaseModel):
    value: MetricValue
    timestamp: str
    timestamp_ns: int


class DeviceLatestOut(BaseModel):
    device_id: str
    last_seen: str | None
    metrics: dict[str, LatestValue]


class BucketOut(BaseModel):
    start: str
    start_ns: int
    count: int | None = None
    sum: float | None = None
    avg: float | None = None
    min: float | None = None
    max: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class AggregatedOut(BaseModel):
    metric: str
    interval: str
    resolution: str
    devices: dict[str, Any]
    buckets: list[BucketOut]

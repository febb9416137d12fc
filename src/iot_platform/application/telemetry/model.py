"""What the telemetry path carries. Readings are not domain events: they go to the time-series
store, and only the facts they cause (a device activated) become events.

Timestamps are integer nanoseconds since the Unix epoch (UTC) everywhere inside the platform, so
no precision is lost between a device, InfluxDB and the embedded store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

MetricValue = float | int | bool | str

NS_PER_SECOND = 1_000_000_000
NS_PER_HOUR = 3600 * NS_PER_SECOND
NS_PER_DAY = 24 * NS_PER_HOUR

EARLIEST_NS = -9_214_560_000_000_000_000
"""1678-01-01T00:00:00Z. The stores keep signed 64-bit nanoseconds (InfluxDB's range is
1677-09-21 to 2262-04-11, SQLite's INTEGER the same); a time outside the whole years inside
that range is refused before it reaches them (which failed with an overflow, a 500)."""
LATEST_NS = 9_214_646_400_000_000_000
"""2262-01-01T00:00:00Z, the end of the range queries may name (see ``EARLIEST_NS``)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One device's metrics at one instant, as accepted by ingestion."""

    device_id: str
    timestamp_ns: int
    metrics: Mapping[str, MetricValue]
    tags: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None
    device_type: str = ""
    protocol: str = "http"


@dataclass(frozen=True, slots=True)
class StoredReading:
    """A reading as the time-series store gives it back (one timestamp, its metrics)."""

    device_id: str
    timestamp_ns: int
    metrics: dict[str, MetricValue]
    tags: dict[str, str]


class Resolution(StrEnum):
    RAW = "raw"
    HOURLY = "hourly"
    DAILY = "daily"


@dataclass(frozen=True, slots=True)
class RawQuery:
    device_id: str
    start_ns: int
    end_ns: int
    """Exclusive."""
    metrics: tuple[str, ...] = ()
    """Empty: every metric."""
    limit: int = 1000
    descending: bool = False


@dataclass(frozen=True, slots=True)
class AggregateQuery:
    """Numeric aggregates of one metric in fixed buckets, over one device or a group.

    ``device_ids`` and ``device_type`` narrow the devices (both None: every device). Booleans
    count as 0/1; strings are not aggregated. Buckets start at multiples of ``interval_ns``
    since the epoch. Percentiles are asked only at raw resolution.
    """

    metric: str
    start_ns: int
    end_ns: int
    interval_ns: int
    resolution: Resolution = Resolution.RAW
    device_ids: tuple[str, ...] | None = None
    device_type: str | None = None
    percentiles: bool = False


@dataclass(frozen=True, slots=True)
class Bucket:
    start_ns: int
    count: int
    sum: float
    min: float
    max: float
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class TagQuery:
    key: str
    value: str
    start_ns: int
    end_ns: int
    limit: int = 1000


class Status(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class Rejection(StrEnum):
    """Why a reading was refused; the label of the rejected-readings counter."""

    UNDECODABLE = "undecodable"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NESTING_TOO_DEEP = "nesting_too_deep"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_SUSPENDED = "device_suspended"
    DEVICE_DECOMMISSIONED = "device_decommissioned"
    THROTTLED = "throttled"
    """The device sent more than its budget (``rate_limits.device_readings``)."""
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    INVALID_TIMESTAMP = "invalid_timestamp"
    NON_FINITE_NUMBER = "non_finite_number"
    INVALID_METRIC_NAME = "invalid_metric_name"
    INVALID_METRIC_VALUE = "invalid_metric_value"
    NO_METRICS = "no_metrics"
    TOO_MANY_METRICS = "too_many_metrics"
    INVALID_TAGS = "invalid_tags"
    IDENTITY_MISMATCH = "identity_mismatch"
    UNSUPPORTED_FORMAT = "unsupported_format"
    """A content format the protocol adapter does not read (CoAP 4.15)."""
    UNAUTHENTICATED = "unauthenticated"
    """No credential, or one that is not valid, where the listener asks for one (CoAP 4.01)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A reading as a protocol adapter decoded it, not yet checked.

    ``rejection`` is set when the adapter could not even decode it (the use case still counts
    and reports it, so every protocol's refusals land in one place).
    """

    device_id: str
    timestamp_ns: int | None
    metrics: Mapping[str, object]
    tags: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None
    payload_bytes: int = 0
    rejection: Rejection | None = None
    detail: str | None = None
    identity: str | None = None
    """Who the transport says sent it (a broker's stamp); a reading for another device is refused."""


@dataclass(frozen=True, slots=True)
class Outcome:
    device_id: str
    message_id: str | None
    status: Status
    reason: Rejection | None = None
    detail: str | None = None

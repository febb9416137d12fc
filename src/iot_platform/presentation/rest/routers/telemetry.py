"""Telemetry routes: HTTP ingestion, device history and latest values, aggregates, tag search."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response, status
from fastapi.responses import JSONResponse

from iot_platform.application.devices.queries import DeviceSearch
from iot_platform.application.errors import NotFound
from iot_platform.application.services import DeviceServices, TelemetryServices
from iot_platform.application.telemetry.model import (
    EARLIEST_NS,
    NS_PER_DAY,
    Candidate,
    Rejection,
    Resolution,
    Status,
)
from iot_platform.application.telemetry.queries import BASIC_FUNCTIONS, InvalidQuery, check_time
from iot_platform.config import Settings
from iot_platform.presentation.mqtt.contract import candidate_from_body, undecodable
from iot_platform.presentation.rest.bodies import BoundedJsonRoute
from iot_platform.presentation.rest.deps import DevicesDep, SettingsDep, TelemetryDep
from iot_platform.presentation.rest.errors import FieldError, error_body
from iot_platform.presentation.rest.schemas.telemetry import (
    AggregatedOut,
    BatchEnvelope,
    BucketOut,
    DeviceLatestOut,
    DeviceReadings,
    EventResult,
    LatestValue,
    ReadingOut,
    TaggedReading,
    TagSearchResult,
    TelemetryEvent,
)
from iot_platform.presentation.rest.security import Principal, require
from iot_platform.presentation.wire import (
    WireError,
    format_timestamp,
    parse_interval,
    parse_timestamp,
)

router = APIRouter(tags=["telemetry"], route_class=BoundedJsonRoute)

Writer = Annotated[Principal, Depends(require("telemetry:write"))]
Reader = Annotated[Principal, Depends(require("telemetry:read"))]

_REJECTION_STATUS = {
    Rejection.UNKNOWN_DEVICE: 404,
    Rejection.DEVICE_SUSPENDED: 409,
    Rejection.DEVICE_DECOMMISSIONED: 409,
    Rejection.PAYLOAD_TOO_LARGE: 413,
    Rejection.IDENTITY_MISMATCH: 403,
    Rejection.THROTTLED: 429,
}


def _candidate(event: TelemetryEvent) -> Candidate:
    body = event.model_dump(exclude_none=True)
    # The event's own size, not the request's: a batch is judged event by event.
    size = len(str(body))
    try:
        return candidate_from_body(body, event.device_id, size)
    except WireError as exc:
        return undecodable(event.device_id, size, exc)


async def _ingest(
    telemetry: TelemetryServices, settings: Settings, candidates: list[Candidate], who: Principal
) -> list[EventResult] | JSONResponse:
    """A device's own credential may write only its own readings (others are refused 403)."""
    try:
        outcomes = await asyncio.wait_for(
            telemetry.ingest.ingest(candidates, "http", authenticated_device=who.device_id),
            settings.telemetry.http_store_timeout_seconds,
        )
    except TimeoutError:
        return JSONResponse(
            status_code=503,
            content=error_body("store_unavailable", "readings could not be stored in time; retry"),
            headers={"Retry-After": "5"},
        )
    return [EventResult.of(o) for o in outcomes]


@router.post("/api/telemetry", status_code=status.HTTP_201_CREATED, response_model=EventResult)
async def ingest_event(
    event: TelemetryEvent, response: Response, telemetry: TelemetryDep, settings: SettingsDep, who: Writer
) -> EventResult | JSONResponse:
    """Stores one reading: 201 stored, 200 duplicate, or an error naming the reason."""
    results = await _ingest(telemetry, settings, [_candidate(event)], who)
    if isinstance(results, JSONResponse):
        return results
    (result,) = results
    if result.status == Status.DUPLICATE:
        response.status_code = status.HTTP_200_OK
    elif result.status == Status.REJECTED:
        reason = Rejection(result.reason or Rejection.UNDECODABLE)
        return JSONResponse(
            status_code=_REJECTION_STATUS.get(reason, 422),
            content=error_body(reason.value, result.detail or reason.value, {"device_id": result.device_id}),
            headers={"Retry-After": "1"} if reason is Rejection.THROTTLED else None,
        )
    return result


@router.post("/api/telemetry/batch", response_model=list[EventResult])
async def ingest_batch(
    telemetry: TelemetryDep,
    settings: SettingsDep,
    who: Writer,
    body: Annotated[list[TelemetryEvent] | BatchEnvelope, Body()],
) -> list[EventResult] | JSONResponse:
    """Stores many readings; each answers stored, duplicate or rejected (with its reason).
    The body is a JSON array of events, or ``{"events": [...]}``."""
    events = body.events if isinstance(body, BatchEnvelope) else body
    limit = settings.telemetry.max_batch_events
    if len(events) > limit:
        raise FieldError("events", f"at most {limit} events per batch")
    return await _ingest(telemetry, settings, [_candidate(e) for e in events], who)


def _time(value: str | None, field: str, default: int) -> int:
    if value is None:
        return default
    try:
        return parse_timestamp(value)
    except WireError as exc:
        raise FieldError(field, str(exc)) from None


def _range(start: str | None, end: str | None, default_span: int = NS_PER_DAY) -> tuple[int, int]:
    end_ns = _time(end, "to", time.time_ns() + 1)
    check_time("to", end_ns)
    start_ns = _time(start, "from", max(end_ns - default_span, EARLIEST_NS))
    if start_ns >= end_ns:
        raise FieldError("from", "must be before to")
    return start_ns, end_ns


def _reading(timestamp_ns: int, metrics: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    return {
        "timestamp": format_timestamp(timestamp_ns),
        "timestamp_ns": timestamp_ns,
        "metrics": metrics,
        "tags": tags,
    }


def _metrics_param(metric: list[str]) -> tuple[str, ...]:
    return tuple(name for item in metric for name in item.split(",") if name)


async def _known_device(devices: DeviceServices, device_id: str) -> None:
    if await devices.registry.get(device_id) is None:
        raise NotFound(f"device {device_id!r} is not registered")


@router.get("/api/devices/{device_id}/data", response_model=DeviceReadings)
async def device_data(
    device_id: str,
    telemetry: TelemetryDep,
    devices: DevicesDep,
    _: Reader,
    from_: Annotated[str | None, Query(alias="from", description="RFC 3339 or epoch ms; default: to - 24h")] = None,
    to: Annotated[str | None, Query(description="RFC 3339 or epoch ms; default: now")] = None,
    metric: Annotated[list[str], Query(description="only these metrics (repeat or comma-separate)")] = [],  # noqa: B006
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
) -> DeviceReadings:
    await _known_device(devices, device_id)
    start_ns, end_ns = _range(from_, to)
    readings = await telemetry.queries.history(
        device_id, start_ns, end_ns, _metrics_param(metric), limit, order == "desc"
    )
    return DeviceReadings(
        device_id=device_id,
        readings=[ReadingOut(**_reading(r.timestamp_ns, r.metrics, r.tags)) for r in readings],
    )


@router.get("/api/devices/{device_id}/data/latest", response_model=DeviceLatestOut)
async def device_latest(
    device_id: str, telemetry: TelemetryDep, devices: DevicesDep, _: Reader
) -> DeviceLatestOut:
    await _known_device(devices, device_id)
    latest = await telemetry.latest.latest(device_id)
    if latest is None:
        return DeviceLatestOut(device_id=device_id, last_seen=None, metrics={})
    return DeviceLatestOut(
        device_id=device_id,
        last_seen=latest.last_seen.isoformat().replace("+00:00", "Z"),
        metrics={
            name: LatestValue(value=value, timestamp=format_timestamp(ts), timestamp_ns=ts)
            for name, (value, ts) in sorted(latest.metrics.items())
        },
    )


def _tag(tag: str, field: str = "tag") -> tuple[str, str]:
    key, sep, value = tag.partition(":")
    if not sep or not key:
        raise FieldError(field, f"{tag!r} must be key:value")
    return key, value


@router.get("/api/analytics/aggregated", response_model=AggregatedOut, response_model_exclude_unset=True)
async def aggregated(
    telemetry: TelemetryDep,
    devices: DevicesDep,
    _: Reader,
    metric: Annotated[str, Query(min_length=1)],
    interval: Annotated[str, Query(description="10s, 1m, 1h, 1d...")] = "1h",
    fn: Annotated[str, Query(description="comma list of count,sum,avg,min,max,p50,p90,p99")] = ",".join(BASIC_FUNCTIONS),
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    device_id: str | None = None,
    device_type: str | None = None,
    tag: Annotated[str | None, Query(description="device tag key:value (the registry's tags)")] = None,
    resolution: Annotated[str, Query(pattern="^(auto|raw|hourly|daily)$")] = "auto",
) -> AggregatedOut:
    """Time buckets of one metric for one device (``device_id``) or a group (``device_type``,
    ``tag``; neither: the whole fleet). ``resolution=auto`` reads raw data for short ranges and
    the hourly or daily rollups for long ones."""
    try:
        interval_ns = parse_interval(interval)
    except WireError as exc:
        raise FieldError("interval", str(exc)) from None
    start_ns, end_ns = _range(from_, to)
    functions = tuple(f.strip() for f in fn.split(",") if f.strip())
    device_ids: tuple[str, ...] | None = None
    selection: dict[str, Any] = {}
    if device_id is not None:
        device_ids = (device_id,)
        selection["device_id"] = device_id
    if tag is not None:
        key, value = _tag(tag)
        page = await devices.registry.search(
            DeviceSearch(tags={key: value}, device_type=device_type, include_decommissioned=True, limit=1000)
        )
        tagged = tuple(v.device_id for v in page.items)
        device_ids = tagged if device_ids is None else tuple(d for d in device_ids if d in tagged)
        selection["tag"] = tag
    if device_type is not None:
        selection["device_type"] = device_type
    try:
        result = await telemetry.queries.aggregate(
            metric,
            start_ns,
            end_ns,
            interval_ns,
            functions,
            None if resolution == "auto" else Resolution(resolution),
            device_ids,
            device_type,
        )
    except InvalidQuery as exc:
        raise FieldError(exc.field, exc.message) from None
    wanted = set(result.functions)
    return AggregatedOut(
        metric=metric,
        interval=interval,
        resolution=result.resolution.value,
        devices=selection or {"all": True},
        buckets=[
            BucketOut(
                start=format_timestamp(b.start_ns),
                start_ns=b.start_ns,
                **{
                    name: value
                    for name, value in {
                        "count": b.count, "sum": b.sum, "avg": b.avg, "min": b.min, "max": b.max,
                        "p50": b.p50, "p90": b.p90, "p99": b.p99,
                    }.items()
                    if name in wanted
                },
            )
            for b in result.buckets
        ],
    )


@router.get("/api/telemetry/search", response_model=TagSearchResult)
async def search_by_tag(
    telemetry: TelemetryDep,
    _: Reader,
    tag: Annotated[str, Query(description="a reading tag, key:value")],
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> TagSearchResult:
    key, value = _tag(tag)
    start_ns, end_ns = _range(from_, to)
    readings = await telemetry.queries.search_by_tag(key, value, start_ns, end_ns, limit)
    return TagSearchResult(
        tag=tag,
        readings=[
            TaggedReading(device_id=r.device_id, **_reading(r.timestamp_ns, r.metrics, r.tags))
            for r in readings
        ],
    )

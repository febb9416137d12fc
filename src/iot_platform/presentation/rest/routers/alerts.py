"""Alert rule and alert routes, and the SSE stream of alert notices."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import uuid4

from fastapi import APIRouter, Depends, Query, Request, Response, status
from sse_starlette import EventSourceResponse

from iot_platform.application.alerts.commands import (
    AcknowledgeAlert,
    ChangeRule,
    CreateRule,
    DeleteRule,
    ResolveAlert,
)
from iot_platform.application.alerts.handlers import minimal_definition
from iot_platform.application.alerts.views import AlertSearch
from iot_platform.application.errors import NotFound
from iot_platform.application.realtime import AlertFilter, LiveFeed, Subscription
from iot_platform.domain.alerts import AlertStatus, Severity
from iot_platform.presentation.rest.deps import AlertsDep, FeedDep, IfMatchDep, event_context
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.schemas.alerts import (
    Acknowledgement,
    AlertList,
    AlertPublic,
    Resolution,
    RuleCreate,
    RuleList,
    RulePublic,
    RuleUpdate,
)
from iot_platform.presentation.rest.security import Principal, require

rules = APIRouter(prefix="/api/analytics/rules", tags=["alert rules"])
alerts = APIRouter(prefix="/api/alerts", tags=["alerts"])

Reader = Annotated[Principal, Depends(require("alerts:read"))]
Writer = Annotated[Principal, Depends(require("alerts:write"))]


async def _rule(alerting: AlertsDep, rule_id: str, response: Response) -> RulePublic:
    view = await alerting.views.rule(rule_id)
    if view is None:
        raise NotFound(f"rule {rule_id!r} does not exist")
    response.headers["ETag"] = f'"{view.version}"'
    return RulePublic.of(view)


@rules.post("", status_code=status.HTTP_201_CREATED, response_model=RulePublic)
async def create_rule(
    body: RuleCreate, request: Request, response: Response, alerting: AlertsDep, who: Writer
) -> RulePublic:
    if body.device_id is not None and body.device_pattern is not None:
        raise FieldError("device_id", "give device_id or device_pattern, not both")
    rule_id = uuid4().hex
    await alerting.rules.create(
        CreateRule(rule_id, minimal_definition(body.model_dump()), event_context(request, who))
    )
    response.headers["Location"] = f"/api/analytics/rules/{rule_id}"
    return await _rule(alerting, rule_id, response)


@rules.get("", response_model=RuleList)
async def list_rules(
    alerting: AlertsDep, _: Reader, enabled: bool | None = None, metric: str | None = None
) -> RuleList:
    views = await alerting.views.rules()
    items = [
        RulePublic.of(v) for v in views
        if (enabled is None or v.definition.enabled == enabled)
        and (metric is None or v.definition.condition.metric == metric)
    ]
    return RuleList(items=items, count=len(items))


@rules.get("/{rule_id}", response_model=RulePublic)
async def get_rule(rule_id: str, response: Response, alerting: AlertsDep, _: Reader) -> RulePublic:
    return await _rule(alerting, rule_id, response)


@rules.patch("/{rule_id}", response_model=RulePublic)
async def change_rule(
    rule_id: str,
    body: RuleUpdate,
    request: Request,
    response: Response,
    alerting: AlertsDep,
    if_match: IfMatchDep,
    who: Writer,
) -> RulePublic:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    body_version = changes.pop("expected_version", None)
    if if_match is not None and body_version is not None and if_match != body_version:
        raise FieldError("expected_version", "differs from the If-Match header")
    if "tags" in changes and changes["tags"] is None:
        changes["tags"] = {}
    await alerting.rules.change(
        ChangeRule(rule_id, changes, if_match or body_version, event_context(request, who))
    )
    return await _rule(alerting, rule_id, response)


@rules.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(
    rule_id: str, request: Request, alerting: AlertsDep, if_match: IfMatchDep, who: Writer
) -> Response:
    """Deleting a rule resolves its open alerts."""
    await alerting.rules.delete(DeleteRule(rule_id, if_match, event_context(request, who)))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- alerts -----------------------------------------------------------------------------------

def _filter(severity: list[Severity], device_id: str | None, rule_id: str | None) -> AlertFilter:
    return AlertFilter(frozenset(s.value for s in severity), device_id, rule_id)


async def sse(feed: LiveFeed, subscription: Subscription, request: Request) -> AsyncIterator[dict[str, str]]:
    """Server-sent events from a live-feed subscription, until the client leaves or is dropped."""
    try:
        yield {"event": "ready", "data": "{}"}
        while True:
            message = await subscription.next()
            if message is None:
                yield {"event": "dropped", "data": json.dumps({"reason": "the client fell behind"})}
                return
            kind, payload = message
            yield {"event": kind, "data": json.dumps(payload)}
    finally:
        feed.unsubscribe(subscription)


@alerts.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "alert notices"}},
)
async def stream_alerts(
    request: Request,
    feed: FeedDep,
    _: Reader,
    severity: Annotated[list[Severity], Query()] = [],  # noqa: B006
    device_id: str | None = None,
    rule_id: str | None = None,
) -> EventSourceResponse:
    """Every alert raised, acknowledged or resolved from now on, as `event: alert` messages.

    A client that falls more than `analytics.stream_buffer` messages behind is dropped (its
    stream ends with `event: dropped`); reconnect to carry on.
    """
    subscription = feed.subscribe(alerts=_filter(severity, device_id, rule_id))
    return EventSourceResponse(sse(feed, subscription, request), ping=15)


@alerts.get("", response_model=AlertList)
async def search_alerts(
    alerting: AlertsDep,
    _: Reader,
    status_: Annotated[str | None, Query(alias="status", description="raised, acknowledged, resolved or open")] = None,
    severity: Severity | None = None,
    device_id: str | None = None,
    rule_id: str | None = None,
    from_: Annotated[datetime | None, Query(alias="from")] = None,
    to: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> AlertList:
    wanted: AlertStatus | None = None
    if status_ is not None and status_ != "open":
        try:
            wanted = AlertStatus(status_)
        except ValueError:
            raise FieldError("status", "must be raised, acknowledged, resolved or open") from None
    for name, moment in (("from", from_), ("to", to)):
        if moment is not None and moment.tzinfo is None:
            raise FieldError(name, "needs a time zone, e.g. 2026-01-01T00:00:00Z")
        if moment is not None and not _SEARCHABLE[0] <= moment <= _SEARCHABLE[1]:
            # e.g. 0001-01-01T00:00:00+01:00, which is before year 1 in UTC: the store's
            # conversion to UTC overflowed (a 500).
            raise FieldError(name, "must be between 1678-01-01T00:00:00Z and 2262-01-01T00:00:00Z")
    views = await alerting.views.alerts(
        AlertSearch(
            status=wanted, open_only=status_ == "open", severity=severity, device_id=device_id,
            rule_id=rule_id, raised_from=from_, raised_to=to, limit=limit, offset=offset,
        )
    )
    return AlertList(items=[AlertPublic.of(v) for v in views], count=len(views))


_SEARCHABLE = (datetime(1678, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC))
"""The times every query of the API takes (see ``EARLIEST_NS``)."""


async def _alert(alerting: AlertsDep, alert_id: str) -> AlertPublic:
    view = await alerting.views.alert(alert_id)
    if view is None:
        raise NotFound(f"alert {alert_id!r} does not exist")
    return AlertPublic.of(view)


@alerts.get("/{alert_id}", response_model=AlertPublic)
async def get_alert(alert_id: str, alerting: AlertsDep, _: Reader) -> AlertPublic:
    return await _alert(alerting, alert_id)


@alerts.post("/{alert_id}/acknowledge", response_model=AlertPublic)
async def acknowledge_alert(
    alert_id: str, request: Request, alerting: AlertsDep, who: Writer,
    body: Acknowledgement | None = None,
) -> AlertPublic:
    note = body.note if body is not None else None
    await alerting.alerts.acknowledge(
        AcknowledgeAlert(alert_id, note, event_context(request, who))
    )
    return await _alert(alerting, alert_id)


@alerts.post("/{alert_id}/resolve", response_model=AlertPublic)
async def resolve_alert(
    alert_id: str, request: Request, alerting: AlertsDep, who: Writer,
    body: Resolution | None = None,
) -> AlertPublic:
    resolution = body.resolution if body is not None else None
    await alerting.alerts.resolve(
        ResolveAlert(alert_id, resolution, event_context(request, who))
    )
    return await _alert(alerting, alert_id)

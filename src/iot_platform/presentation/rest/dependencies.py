"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated
from uuid import uuid4

from fastapi import Depends, Header, Request

from iot_platform.composition import Platform
from iot_platform.domain.aggregate import EventContext
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.security import Principal


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def event_context(request: Request, principal: Principal) -> EventContext:
    correlation = getattr(request.state, "correlation_id", None) or uuid4().hex
    return EventContext(actor=principal.subject, correlation_id=correlation)


def parse_if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    """``If-Match: "3"`` (the ETag of a GET) -> expected version 3."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise FieldError("If-Match", "must be an ETag returned by this API, like \"3\"")
    return int(tag)


IfMatchDep = Annotated[int | None, Depends(parse_if_match)]

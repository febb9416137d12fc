"""JSON request bodies read under the payload limits before FastAPI parses them.

FastAPI parses bodies with the standard library's ``json``, which has no depth limit: a body
nested 1,000 levels deep raised ``RecursionError`` inside it (a 400 that named nothing, at a
depth that depended on the stack). A route of ``BoundedJsonRoute`` first reads its body with
``presentation.payloads.decode_json`` (pydantic-core, bounded) and answers 422 naming
``body`` when it is nested deeper than ``telemetry.max_nesting_depth`` (plus the two levels of
an event in a batch envelope), or is not JSON at all (FastAPI answered 422 for most malformed
JSON but 400 naming nothing for an integer of over 4,300 digits), counting it as a rejected
reading of the route's protocol.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from iot_platform.presentation.payloads import PayloadLimits, PayloadRejected, decode_json
from iot_platform.presentation.rest.errors import FieldError
from iot_platform.presentation.rest.state import services_of, settings_of

ENVELOPE_LEVELS = 2
"""``{"events": [{...}]}``: the levels a batch adds above one reading's own."""


class BoundedJsonRoute(APIRoute):
    protocol = "http"

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def bounded(request: Request) -> Response:
            body = await request.body()  # cached: FastAPI reads the same bytes after this
            if body and "json" in request.headers.get("content-type", "json"):
                telemetry = settings_of(request.app.state).telemetry
                limits = PayloadLimits(max_bytes=sys.maxsize, max_items=sys.maxsize,
                                       max_depth=telemetry.max_nesting_depth + ENVELOPE_LEVELS)
                try:
                    decode_json(body, limits)
                except PayloadRejected as exc:
                    services_of(request.app.state).metrics.rejected(self.protocol, exc.reason)
                    raise FieldError("body", str(exc)) from None
            return await handler(request)

        return bounded

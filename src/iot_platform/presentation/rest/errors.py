"""One error shape for every failure: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from iot_platform.application.devices.queries import InvalidCursor
from iot_platform.application.errors import ConcurrencyError, NotFound, UnreadableHistory
from iot_platform.application.telemetry.queries import InvalidQuery
from iot_platform.domain.errors import AlreadyExists, DomainError, InvalidTransition, InvalidValue


class FieldError(Exception):
    """A request value that passed the schema but not its meaning (e.g. ``near=abc``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _field_name(loc: tuple[Any, ...]) -> str:
    # ("body", "location", "latitude") -> "location.latitude"; ("query", "limit") -> "limit"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def _unprocessable(field: str, message: str, details: Any = None) -> JSONResponse:
    details = details if details is not None else [{"field": field, "message": message}]
    return JSONResponse(
        status_code=422, content=error_body("validation_error", f"{field}: {message}", details)
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": _field_name(tuple(e["loc"])), "message": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        first = details[0] if details else {"field": "body", "message": "invalid"}
        return _unprocessable(first["field"], first["message"], details)

    @app.exception_handler(FieldError)
    async def _field(_: Request, exc: FieldError) -> JSONResponse:
        return _unprocessable(exc.field, exc.message)

    @app.exception_handler(InvalidQuery)
    async def _query(_: Request, exc: InvalidQuery) -> JSONResponse:
        return _unprocessable(exc.field, exc.message)

    @app.exception_handler(InvalidCursor)
    async def _cursor(_: Request, exc: InvalidCursor) -> JSONResponse:
        return _unprocessable("cursor", str(exc))

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        if isinstance(exc, InvalidValue):
            return _unprocessable(exc.field or "body", exc.message)
        status = 409 if isinstance(exc, AlreadyExists | InvalidTransition) else 400
        details = {"field": exc.field} if exc.field else None
        return JSONResponse(status_code=status, content=error_body(exc.code, exc.message, details))

    @app.exception_handler(ConcurrencyError)
    async def _stale(_: Request, exc: ConcurrencyError) -> JSONResponse:
        return JSONResponse(
            status_code=409,
            content=error_body(
                exc.code, exc.message, {"expected_version": exc.expected, "actual_version": exc.actual}
            ),
        )

    @app.exception_handler(UnreadableHistory)
    async def _unreadable(_: Request, exc: UnreadableHistory) -> JSONResponse:
        return JSONResponse(status_code=409, content=error_body(exc.code, exc.message, {"position": exc.position}))

    @app.exception_handler(NotFound)
    async def _missing(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content=error_body(exc.code, exc.message))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 429: "too_many_requests"}
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
            headers=getattr(exc, "headers", None),
        )

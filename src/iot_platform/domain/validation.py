"""Type checks shared by value objects, so a value that could not be stored and read back
(a ``None`` where a flag belongs, a NaN, a lone surrogate, a NUL, JSON nested without end) is
refused with ``InvalidValue`` naming the field when it is made, not found when it is read.

Adapters (REST schemas) check types first; these are the domain's own guard for every other path
(CLI, protocol adapters, tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from iot_platform.domain.errors import InvalidValue

MAX_JSON_DEPTH = 32
"""Nesting allowed in free-form JSON (command parameters and results, device metadata)."""


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text everywhere (PostgreSQL refuses NUL; JSON refuses
    lone surrogates), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def require_text(value: object, field: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidValue("must be a string" + ("" if optional else ", not null"), field=field)
    problem = text_problem(value)
    if problem:
        raise InvalidValue(problem, field=field)


def require_bool(value: object, field: str) -> None:
    if not isinstance(value, bool):
        raise InvalidValue("must be true or false", field=field)


def require_number(value: object, field: str, *, optional: bool = False) -> None:
    """A finite int or float (a bool is not a number here)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue("must be a number" + ("" if optional else ", not null"), field=field)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidValue("must be a finite number", field=field)


def as_float(value: int | float, field: str) -> float:
    """A number kept as a double. Events are stored as JSON and a float field reads back as a
    double, so an int beyond 2**53 would not read back as itself: it becomes the nearest double
    here, and one beyond the double range is refused."""
    try:
        number = float(value)
    except OverflowError:
        raise InvalidValue("must be a finite number", field=field) from None
    if not math.isfinite(number):
        raise InvalidValue("must be a finite number", field=field)
    return number


def require_int(value: object, field: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue("must be an integer", field=field)


def require_str_map(value: object, field: str) -> None:
    if not isinstance(value, Mapping):
        raise InvalidValue("must be an object of strings", field=field)
    for key, item in value.items():
        require_text(key, field)
        require_text(item, f"{field}.{key}")


def require_json(value: object, field: str, *, depth: int = MAX_JSON_DEPTH) -> None:
    """Free-form JSON: null, true/false, finite numbers, text, lists and objects with text keys,
    nested at most ``depth`` deep (so any JSON codec can write and read it back)."""
    _json(value, field, depth)


def _json(value: Any, field: str, depth: int) -> None:
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue("must not hold NaN or infinite numbers", field=field)
        return
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise InvalidValue(problem, field=field)
        return
    if depth <= 0 and isinstance(value, list | tuple | Mapping):
        raise InvalidValue(f"is nested more than {MAX_JSON_DEPTH} levels deep", field=field)
    if isinstance(value, list | tuple):
        for item in value:
            _json(item, field, depth - 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValue("must have text keys", field=field)
            problem = text_problem(key)
            if problem:
                raise InvalidValue(problem, field=field)
            _json(item, field, depth - 1)
        return
    raise InvalidValue(f"must be JSON, not {type(value).__name__}", field=field)

"""Body fields that are optional to send but must not be ``null``.

A PATCH body leaves out what stays as it is; ``null`` is not "leave it": for a field with no
"nothing" value (a rule's ``enabled``, ``severity``, ``name``...) it is a mistake, answered with
422 naming the field before any command reaches the domain. The OpenAPI document says so too:
such a field's type has no ``null`` and no default.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def unset(**constraints: Any) -> Any:
    """The default of a field declared ``name: T = unset(...)``: left out, it is None in Python
    (never validated: pydantic does not validate defaults); sent, it must be a T, never null.
    The schema shows no ``default: null``, which would contradict the type."""
    return Field(None, json_schema_extra=_no_default, **constraints)


def refuse_null(*fields: str) -> Any:
    """A validator refusing an explicit ``null`` for ``fields`` (left out is fine)."""

    def check(cls: type, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null (leave the field out to keep it as it is)")
        return value

    return field_validator(*fields, mode="before")(classmethod(check))

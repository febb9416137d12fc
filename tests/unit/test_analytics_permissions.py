"""Who may read fleet analytics: every role that reads telemetry."""

from __future__ import annotations

import pytest

from iot_platform.presentation.rest.security import Principal


@pytest.mark.parametrize("role", ["admin", "fleet_manager", "viewer"])
def test_analytics_read_is_granted_to_every_reading_role(role: str) -> None:
    assert Principal("someone", frozenset({role})).may("analytics:read")


def test_no_role_no_analytics() -> None:
    assert not Principal("someone", frozenset({"device"})).may("analytics:read")

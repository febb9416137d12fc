"""What the app factory leaves on ``app.state`` for everything below it to read.

Kept apart from ``deps`` because security and body checks read it too, and ``deps`` imports
security.
"""

from __future__ import annotations

from typing import Any

from iot_platform.application.services import Services
from iot_platform.config import Settings


def services_of(state: Any) -> Services:
    """The application's ``Services`` (also for websockets and ASGI mounts, which have no Request)."""
    services: Services = state.services
    return services


def settings_of(state: Any) -> Settings:
    settings: Settings = state.settings
    return settings

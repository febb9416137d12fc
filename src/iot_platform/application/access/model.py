"""Roles and what each may do. Every REST route names one permission; a role grants a set.

``device`` is a device's own credential: it may write its telemetry and take and acknowledge
its commands, and only for the device it was made for. It is always bound to exactly one device
and holds no other role (``check_device_binding``), whether it is an API key, a user or a token
minted for that user; a device credential that names no device (one stored before this rule)
acts for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

SELF = frozenset({"self:read"})
"""Every caller may ask who it is."""
READ = SELF | {"devices:read", "telemetry:read", "alerts:read", "analytics:read", "commands:read",
               "firmware:read", "metrics:read"}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({"*"}),
    "fleet_manager": READ | {"devices:write", "telemetry:write", "alerts:write", "commands:write",
                             "commands:receive"},
    "firmware_engineer": READ | {"firmware:write"},
    "viewer": READ,
    "device": SELF | {"telemetry:write", "commands:receive"},
}
ROLES = tuple(ROLE_PERMISSIONS)


class UnknownRole(ValueError):
    pass


def check_roles(roles: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if not roles:
        raise UnknownRole("at least one role is needed")
    for role in roles:
        if role not in ROLE_PERMISSIONS:
            raise UnknownRole(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return tuple(dict.fromkeys(roles))


class DeviceBinding(ValueError):
    """A ``device`` role without its one device, or mixed with other roles; ``field`` names
    what to change."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def check_device_binding(roles: tuple[str, ...], device_id: str | None) -> None:
    """The device role goes with exactly one device and nothing else: combined with another
    role, which would the device id confine? (Ambiguous, so refused.)"""
    if "device" not in roles:
        return
    if len(roles) > 1:
        raise DeviceBinding("the device role stands alone: a device credential holds no other role", "roles")
    if not device_id:
        raise DeviceBinding("a credential with the device role names its device (device_id)", "device_id")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``device_id`` confines a device credential to its device."""

    subject: str
    roles: frozenset[str]
    device_id: str | None = None

    @property
    def unbound_device(self) -> bool:
        """A device credential without its device: it may ask who it is, nothing else."""
        return "device" in self.roles and self.device_id is None

    def may(self, permission: str) -> bool:
        if self.unbound_device:
            return permission in SELF
        granted = set().union(*(ROLE_PERMISSIONS.get(r, frozenset()) for r in self.roles))
        return "*" in granted or permission in granted

    def may_act_for(self, device_id: str) -> bool:
        if self.device_id is not None:
            return self.device_id == device_id
        return "device" not in self.roles


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    roles: tuple[str, ...]
    secret_hash: str
    created_at: datetime
    created_by: str
    device_id: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str
    roles: tuple[str, ...]
    created_at: datetime
    device_id: str | None = None
    """With the device role: the one device the user (a device signing in) acts for."""

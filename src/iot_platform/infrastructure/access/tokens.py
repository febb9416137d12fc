"""Bearer tokens: JWTs (PyJWT, HS256) signed with a key derived from the platform's
encryption key (``SecretBox.derive``), so every process of one platform accepts the others'."""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

from iot_platform.application.access.model import Principal

_ISSUER = "iot-platform"


class JwtSigner:
    def __init__(self, signing_key: Callable[[], bytes]) -> None:
        self._source = signing_key
        self._key: bytes | None = None

    def _signing_key(self) -> bytes:
        if self._key is None:
            self._key = self._source()
        return self._key

    def issue(self, principal: Principal, ttl_seconds: int) -> str:
        now = int(time.time())
        claims: dict[str, object] = {"iss": _ISSUER, "sub": principal.subject, "iat": now,
                                     "exp": now + ttl_seconds, "roles": sorted(principal.roles)}
        if principal.device_id is not None:
            claims["device_id"] = principal.device_id
        return jwt.encode(claims, self._signing_key(), algorithm="HS256")

    def verify(self, token: str) -> Principal | None:
        try:
            claims = jwt.decode(token, self._signing_key(), algorithms=["HS256"], issuer=_ISSUER,
                                options={"require": ["exp", "sub", "iss"]})
        except jwt.PyJWTError:
            return None
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            return None
        device_id = claims.get("device_id")
        return Principal(str(claims["sub"]), frozenset(roles), device_id if isinstance(device_id, str) else None)

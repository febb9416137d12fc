"""Password hashing (scrypt) off the event loop, in a small pool of its own.

One scrypt takes tens of milliseconds of CPU and 16 MiB of memory; on the event loop, 100
concurrent logins stalled every other request for seconds. ``hashlib.scrypt`` releases the GIL,
so hashes run on ``max_concurrent`` threads while the loop serves everything else, and a burst
of logins queues there (bounded memory) instead of in front of /health.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from concurrent.futures import ThreadPoolExecutor

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
        salt_bytes = bytes.fromhex(salt)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode(), salt=salt_bytes, dklen=32, **_SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


class ScryptPasswords:
    """The ``PasswordHasher`` port: scrypt on a bounded thread pool."""

    def __init__(self, max_concurrent: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="password-hash")

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, hash_password, password)

    async def verify(self, password: str, stored: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._pool, password_matches, password, stored)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

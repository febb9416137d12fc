"""Sealing secrets at rest (AES-256-GCM from `cryptography`) under the platform's key.

Each sealed value is bound to what it belongs to (``context``, e.g. a device id) as associated
data, so a sealed blob copied onto another row does not open.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from iot_platform.infrastructure.files import private_directory

_VERSION = "v1:"


class SecretUnreadable(Exception):
    """A sealed value does not open under this key (wrong key, or it was tampered with)."""


class SecretBox:
    def __init__(self, key: bytes | Callable[[], bytes]) -> None:
        """``key``, or what gives it on first use (so a key file is made only when needed)."""
        self._key = key
        self._cipher: AESGCM | None = None

    def _root(self) -> bytes:
        if not isinstance(self._key, bytes):
            self._key = self._key()
        if len(self._key) != 32:
            raise ValueError("the encryption key is 32 bytes")
        return self._key

    @property
    def _aead(self) -> AESGCM:
        if self._cipher is None:
            self._cipher = AESGCM(self._root())
        return self._cipher

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key for one purpose (HKDF-SHA256), so the root key is used for sealing only."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(self._root())

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return _VERSION + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> bytes:
        if not sealed.startswith(_VERSION):
            raise SecretUnreadable("unknown sealing format")
        raw = base64.b64decode(sealed[len(_VERSION):])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except InvalidTag:
            raise SecretUnreadable("a sealed secret does not open under the platform's key") from None

    @classmethod
    def from_config(cls, key_hex: str, key_file: str) -> SecretBox:
        """The configured key, or the key file's, which is created (mode 0600) on first use."""
        if key_hex:
            return cls(bytes.fromhex(key_hex))
        return cls(lambda: _key_file(Path(key_file)))


def _key_file(path: Path) -> bytes:
    if not path.exists():
        private_directory(path.parent)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of this platform made it just now
            pass
        else:
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_hex(32) + "\n")
    return bytes.fromhex(path.read_text().strip())

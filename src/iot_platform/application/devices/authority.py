"""The device CA's first-run setup: made on the first start, or required when imported.

Every process that serves devices or people publishes the CRL at start, so a revocation made
while it was down holds from its first connection on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class AuthorityKeys(Protocol):
    """The device CA's certificate and key, kept by the platform."""

    def exists(self) -> bool: ...

    def init(self, force: bool = False) -> None: ...

    async def publish_crl(self) -> object: ...


async def ensure_authority(keys: AuthorityKeys, *, imported: bool, cert_path: str) -> None:
    """The embedded default makes its device CA on first start; an imported one must exist
    (``RuntimeError`` naming the setting and the fix otherwise). Then the CRL is published."""
    if not keys.exists():
        if imported:
            raise RuntimeError("security.certificate_authority is imported but no CA is at "
                               f"{cert_path}: run iot-platform ca import")
        keys.init()
        log.info("device CA created under %s", Path(cert_path).parent)
    await keys.publish_crl()

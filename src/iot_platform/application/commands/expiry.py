"""Expires commands whose time to live ran out, at an interval, until cancelled."""

from __future__ import annotations

import asyncio
import logging

from iot_platform.application.commands.handlers import CommandHandler

log = logging.getLogger(__name__)


class ExpirySweeper:
    def __init__(self, handler: CommandHandler, interval: float) -> None:
        self._handler = handler
        self._interval = interval

    async def run(self) -> None:
        while True:
            try:
                expired = await self._handler.expire_due()
                if expired:
                    log.info("expired %d device commands", expired)
            except Exception:  # the next sweep tries again; expiry is idempotent
                log.exception("expiring device commands failed")
            await asyncio.sleep(self._interval)

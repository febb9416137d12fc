"""The LoRaWAN front: the UDP endpoint for gateways, wired to the network server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from iot_platform.application.lorawan.ports import Gateways
from iot_platform.application.observability import GatewayMetrics
from iot_platform.presentation.lorawan.gwmp import GatewayServer
from iot_platform.presentation.lorawan.network_server import NetworkServer

log = logging.getLogger(__name__)

_SEEN_EVERY_SECONDS = 30.0


class LoRaWANListener:
    def __init__(
        self, host: str, port: int, server: NetworkServer, gateways: Gateways,
        metrics: GatewayMetrics, cache_seconds: float,
    ) -> None:
        self._address = (host, port)
        self._server = server
        self._gateways = gateways
        self._metrics = metrics
        self._cache_seconds = cache_seconds
        self._known: dict[str, tuple[bool, float]] = {}
        self._seen: dict[str, float] = {}
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: GatewayServer | None = None

    @property
    def port(self) -> int:
        assert self._transport is not None
        port: int = self._transport.get_extra_info("sockname")[1]
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        count = self._metrics.lorawan_packets.labels
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: GatewayServer(self._is_known, self._server.heard, self._server.transmitted,
                                      lambda kind: count(kind).inc(),
                                      lambda reason: self._metrics.gwmp_rejected.labels(reason).inc()),
                local_addr=self._address,
            )
        except OSError as exc:
            raise RuntimeError(
                f"the LoRaWAN listener cannot bind UDP {self._address[0]}:{self._address[1]} ({exc}): "
                "set lorawan.port to a free port, or lorawan.enabled: false"
            ) from exc
        self._transport, self._protocol = transport, protocol
        self._server.gateway = protocol

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._protocol is not None:
            await self._protocol.drain()
        await self._server.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def forget(self, gateway_eui: str) -> None:
        """A gateway registered or removed here is known (or not) at once."""
        self._known.pop(gateway_eui, None)

    async def _is_known(self, gateway_eui: str) -> bool:
        """Answered from the cache whenever there is an entry, so no gateway's packets wait on
        the database (a late copy would miss its frame's deduplication window); a stale entry
        is refreshed in the background, and ``seen`` is written the same way."""
        now = time.monotonic()
        cached = self._known.get(gateway_eui)
        if cached is None:
            known = await self._gateways.get(gateway_eui) is not None
            self._known[gateway_eui] = (known, now)
        else:
            known = cached[0]
            if now - cached[1] >= self._cache_seconds and gateway_eui not in self._refreshing:
                self._refreshing.add(gateway_eui)
                self._background(self._refresh(gateway_eui))
        if known and now - self._seen.get(gateway_eui, -_SEEN_EVERY_SECONDS) >= _SEEN_EVERY_SECONDS:
            self._seen[gateway_eui] = now
            self._background(self._gateways.seen(gateway_eui, datetime.now(UTC)))
        return known

    async def _refresh(self, gateway_eui: str) -> None:
        try:
            known = await self._gateways.get(gateway_eui) is not None
            self._known[gateway_eui] = (known, time.monotonic())
        finally:
            self._refreshing.discard(gateway_eui)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("gateway registry call failed: %s", task.exception())

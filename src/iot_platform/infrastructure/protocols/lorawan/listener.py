"""The LoRaWAN front: the UDP endpoint for gateways, wired to the network server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from iot_platform.application.lorawan.ports import Gateways
from iot_platform.infrastructure.observability import PlatformMetrics
from iot_platform.infrastructure.protocols.lorawan.gwmp import GatewayServer
from iot_platform.infrastructure.protocols.lorawan.network_server import NetworkServer

_SEEN_EVERY_SECONDS = 30.0


class LoRaWANListener:
    def __init__(
        self, host: str, port: int, server: NetworkServer, gateways: Gateways,
        metrics: PlatformMetrics, cache_seconds: float,
    ) -> None:
        self._address = (host, port)
        self._server = server
        self._gateways = gateways
        self._metrics = metrics
        self._cache_seconds = cache_seconds
        self._known: dict[str, tuple[bool, float]] = {}
        self._seen: dict[str, float] = {}
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
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: GatewayServer(self._is_known, self._server.heard, self._server.transmitted,
                                  lambda kind: count(kind).inc()),
            local_addr=self._address,
        )
        self._transport, self._protocol = transport, protocol
        self._server.gateway = protocol

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._protocol is not None:
            await self._protocol.drain()
        await self._server.stop()

    def forget(self, gateway_eui: str) -> None:
        """A gateway registered or removed here is known (or not) at once."""
        self._known.pop(gateway_eui, None)

    async def _is_known(self, gateway_eui: str) -> bool:
        now = time.monotonic()
        cached = self._known.get(gateway_eui)
        if cached is not None and now - cached[1] < self._cache_seconds:
            known = cached[0]
        else:
            known = await self._gateways.get(gateway_eui) is not None
            self._known[gateway_eui] = (known, now)
        if known and now - self._seen.get(gateway_eui, -_SEEN_EVERY_SECONDS) >= _SEEN_EVERY_SECONDS:
            self._seen[gateway_eui] = now
            await self._gateways.seen(gateway_eui, datetime.now(UTC))
        return known

"""A reusable MQTT publishing client: one connection, kept up with back-off, for QoS 1 sends.

Separate from the ingestion subscriber on purpose: that client withholds PUBACKs until
messages are stored and may be reconnecting to have them redelivered; publishing must neither
wait for nor disturb that. Device commands use it, and so can any other outgoing channel
(alert notifications over MQTT).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiomqtt

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    """Not connected within the timeout, or the broker did not acknowledge the message."""


class MqttPublisher:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        mqtt5: bool = False,
        username: str | None = None,
        password: str | None = None,
        keep_alive: int = 60,
        timeout: float = 5.0,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
        tls: aiomqtt.TLSParameters | None = None,
    ) -> None:
        self._tls = tls
        self._host = host
        self._port = port
        self._client_id = client_id
        self._mqtt5 = mqtt5
        self._username = username
        self._password = password
        self._keep_alive = keep_alive
        self._timeout = timeout
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Starts connecting in the background; ``publish`` waits for the connection."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mqtt-publisher-{self._client_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Returns once the broker acknowledged the message (QoS 1) or it was written (QoS 0)."""
        try:
            await asyncio.wait_for(self._connected.wait(), self._timeout)
        except TimeoutError:
            raise PublishFailed(f"not connected to {self._host}:{self._port}") from None
        client = self._client
        if client is None:
            raise PublishFailed("connection lost")
        try:
            await client.publish(topic, payload, qos=qos, timeout=self._timeout)
        except aiomqtt.MqttError as exc:
            raise PublishFailed(str(exc)) from exc

    async def _run(self) -> None:
        delay = self._reconnect_initial
        while True:
            try:
                async with aiomqtt.Client(
                    hostname=self._host,
                    port=self._port,
                    identifier=self._client_id,
                    username=self._username,
                    password=self._password,
                    protocol=(
                        aiomqtt.ProtocolVersion.V5 if self._mqtt5 else aiomqtt.ProtocolVersion.V311
                    ),
                    keepalive=self._keep_alive,
                    tls_params=self._tls,
                ) as client:
                    self._client = client
                    self._connected.set()
                    delay = self._reconnect_initial
                    log.info("publisher %s connected to %s:%d", self._client_id, self._host, self._port)
                    # Nothing is subscribed; the iterator ends only by raising on disconnection.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                log.warning("publisher %s lost %s:%d (%s); reconnecting in %.1fs",
                            self._client_id, self._host, self._port, exc, delay)
            finally:
                self._connected.clear()
                self._client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_max)

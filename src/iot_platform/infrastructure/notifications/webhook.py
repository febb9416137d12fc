"""The webhook alert channel: POSTs each notice as JSON to the rule's URL.

Sending is queued and done by one background worker, so a slow or dead endpoint never blocks the
rule engine or ingestion; each POST is retried with exponential back-off (tenacity) on network
errors and 5xx/429 answers, then given up and counted. The queue is bounded: when it is full, the
newest notice is dropped and counted rather than memory growing without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.domain.alerts import Channel, RuleDefinition

log = logging.getLogger(__name__)


class _Retryable(Exception):
    pass


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TransportError)


class WebhookChannel:
    def __init__(
        self,
        *,
        timeout: float = 5.0,
        attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        queue_size: int = 10_000,
    ) -> None:
        self._timeout = timeout
        self._attempts = attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._queue: asyncio.Queue[tuple[str, AlertNotice]] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def send(self, notice: AlertNotice, rule: RuleDefinition | None) -> None:
        if rule is None or Channel.WEBHOOK not in rule.channels or not rule.webhook_url:
            return
        try:
            self._queue.put_nowait((rule.webhook_url, notice))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook queue full: notice of alert %s dropped", notice.alert_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self, timeout: float = 5.0) -> None:
        """Sends what is queued for at most ``timeout`` seconds, then stops."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            while True:
                url, notice = await self._queue.get()
                try:
                    await self._post(client, url, notice)
                finally:
                    self._queue.task_done()

    async def _post(self, client: httpx.AsyncClient, url: str, notice: AlertNotice) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff_initial, max=self._backoff_max),
            retry=retry_if_exception(_retryable),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await client.post(url, json=notice.as_json())
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _Retryable(f"HTTP {response.status_code}")
                    if response.status_code >= 400:
                        self.failed += 1
                        log.warning("webhook %s refused alert %s: HTTP %d",
                                    _host(url), notice.alert_id, response.status_code)
                        return
            self.delivered += 1
        except RetryError as exc:
            self.failed += 1
            log.warning("webhook %s gave up on alert %s after %d attempts: %s", _host(url),
                        notice.alert_id, self._attempts, exc.last_attempt.exception())


def _host(url: str) -> str:
    """Only the host is logged: webhook URLs often carry a secret token in their path."""
    return httpx.URL(url).host

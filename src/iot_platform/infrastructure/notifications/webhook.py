"""The webhook alert channel: POSTs each notice as JSON to the rule's ``webhook_url``.

Each POST is retried with exponential back-off (tenacity) on network errors and 5xx/429 answers,
then given up and counted; a 4xx is the endpoint refusing the notice and is not retried.
"""

from __future__ import annotations

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from iot_platform.application.alerts.notices import AlertNotice
from iot_platform.domain.alerts import Channel, RuleDefinition
from iot_platform.infrastructure.notifications.queued import QueuedChannel


class _Retryable(Exception):
    pass


class WebhookRefused(Exception):
    pass


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TransportError)


def _host(url: str) -> str:
    """Only the host is logged: webhook URLs often carry a secret token in their path."""
    return httpx.URL(url).host


class WebhookChannel(QueuedChannel[str]):
    name = "webhook"

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        queue_size: int = 10_000,
    ) -> None:
        super().__init__(queue_size)
        self._attempts = attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._client = httpx.AsyncClient(timeout=timeout)

    def route(self, notice: AlertNotice, rule: RuleDefinition | None) -> str | None:
        if rule is None or Channel.WEBHOOK not in rule.channels or not rule.webhook_url:
            return None
        return rule.webhook_url

    async def deliver(self, target: str, notice: AlertNotice) -> None:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._backoff_initial, max=self._backoff_max),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._client.post(target, json=notice.as_json())
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _Retryable(f"HTTP {response.status_code}")
                    if response.status_code >= 400:
                        raise WebhookRefused(f"HTTP {response.status_code}")
        except (_Retryable, WebhookRefused, httpx.TransportError) as exc:
            # Re-raised without the URL: it may hold a secret token.
            raise WebhookRefused(f"{_host(target)}: {type(exc).__name__} {exc}") from None

    async def close(self) -> None:
        await self._client.aclose()

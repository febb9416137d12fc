"""The producer every Kafka adapter here shares the settings of: idempotent, acks from every
in-sync replica (a retried send is never written twice, and one producer's records keep their
order in a partition), gzip-compressed batches."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError


class LazyProducer:
    """Started on first use, so a broker that is down at start-up fails sends, not start-up;
    a failed start is tried again by the next use."""

    def __init__(self, brokers: str) -> None:
        self._brokers = brokers
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def get(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._brokers, enable_idempotence=True, acks="all",
                    compression_type="gzip", linger_ms=5, max_batch_size=256 * 1024,
                )
                try:
                    await producer.start()
                except BaseException:
                    with contextlib.suppress(KafkaError):
                        await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(KafkaError):
                await self._producer.stop()
            self._producer = None

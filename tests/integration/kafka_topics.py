"""Reading a topic back in tests, outside any consumer group."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer


async def read_records(brokers: list[str], topic: str, count: int) -> list[Any]:
    """The topic's first ``count`` records, from every partition."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=",".join(brokers), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        found: list[Any] = []
        while len(found) < count:
            batch = await consumer.getmany(timeout_ms=1000)
            found += [m for ms in batch.values() for m in ms]
        return found
    finally:
        await consumer.stop()

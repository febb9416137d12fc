"""Projections fed from the domain-events topic instead of polling the event store.

Events are applied in global position order, each exactly once: a repeat (the relay publishes
again what it had not yet marked) is at or below the projections' checkpoint and is dropped;
an event that arrives ahead of one still missing is held until the gap fills. Offsets are
committed only when nothing is held, so a stopped feed never skips an event; the checkpoints
in the database, not the offsets, say what was applied. A gap that does not fill (the topic's
retention dropped events this database never saw, or the database is new beside an old topic)
is closed from the event store, the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer

from iot_platform.application.ports import RecordedEvent
from iot_platform.infrastructure.eventstore.serialization import EventSerializer, UnknownEventType
from iot_platform.infrastructure.projections.runner import ProjectionRunner
from iot_platform.infrastructure.streaming.kafka_events import decode_event

log = logging.getLogger(__name__)


class KafkaProjectionFeed:
    name = "projections"

    def __init__(
        self,
        brokers: list[str],
        topic: str,
        group: str,
        runner: ProjectionRunner,
        serializer: EventSerializer,
        gap_timeout: float = 5.0,
    ) -> None:
        self._brokers = ",".join(brokers)
        self._topic = topic
        self._group = group
        self._runner = runner
        self._serializer = serializer
        self._gap_timeout = gap_timeout
        self._held: dict[int, RecordedEvent] = {}
        self._gap_since: float | None = None
        self.applied = 0
        self.repeats = 0
        self.undecodable = 0

    async def run(self) -> None:
        """Follows the topic until cancelled; a broker that is away is retried."""
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                self._topic, bootstrap_servers=self._brokers, group_id=self._group,
                enable_auto_commit=False, auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
                delay = 0.5
                while True:
                    records = await consumer.getmany(timeout_ms=500, max_records=1000)
                    for messages in records.values():
                        for message in messages:
                            self._hold(message.value)
                    if await self._apply_ready() and not self._held:
                        await consumer.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka or the read-model database: never fatal, retried
                log.warning("domain-events feed failed (%s: %s); retrying in %.1fs",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                await consumer.stop()

    def _hold(self, value: bytes | None) -> None:
        try:
            recorded = decode_event(self._serializer, value or b"")
        except (ValueError, UnknownEventType) as exc:
            # Not an event this release can read; the store still has it (see _apply_ready).
            self.undecodable += 1
            log.warning("domain-events feed: skipped a record that is not an event: %s", exc)
            return
        if recorded.position in self._held:
            self.repeats += 1
        self._held[recorded.position] = recorded

    async def _apply_ready(self) -> bool:
        """Applies the held events that continue the checkpoints; True if any progress."""
        if not self._held:
            return True
        reached = await self._runner.position()
        for position in [p for p in self._held if p <= reached]:
            del self._held[position]
            self.repeats += 1
        ready: list[RecordedEvent] = []
        while reached + len(ready) + 1 in self._held:
            ready.append(self._held.pop(reached + len(ready) + 1))
        if ready:
            self._gap_since = None
            await self._runner.apply(ready)
            self.applied += len(ready)
            return True
        if not self._held:
            return True
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        elif now - self._gap_since > self._gap_timeout:
            log.warning("domain-events feed: positions %d to %d never arrived; reading them from "
                        "the event store", reached + 1, min(self._held) - 1)
            await self._runner.catch_up()
            self._gap_since = None
            return await self._apply_ready()
        return False

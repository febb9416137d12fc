"""Domain events on Kafka: the outbox relay's publisher and the envelope consumers decode.

A record's key is the aggregate id (one aggregate's events stay in one partition, in order);
its value is a JSON envelope (position, stream, version, event type and schema version, and the
event's fields, readable by any client such as kcat); its headers repeat what a consumer routes
on without parsing: event type, schema version, global position, correlation id.

The topic is created with one partition when missing: the read side applies events in global
position order, which one partition gives for free; domain events are few (registrations,
alerts, commands), so one partition is not what limits a deployment.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from iot_platform.application.ports import RecordedEvent, UnreadableEvent
from iot_platform.infrastructure.eventstore.serialization import EventSerializer
from iot_platform.infrastructure.streaming.kafka_producer import LazyProducer

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


async def ensure_topic(brokers: str, topic: str, partitions: int) -> None:
    """Creates ``topic`` unless it exists (replicated up to 3 times, as the cluster allows)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        replicas = max(1, min(3, len(cluster["brokers"])))
        response = await admin.create_topics([NewTopic(topic, partitions, replicas)])
        for name, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise KafkaError(f"creating topic {name}: error {code} {message}")
    finally:
        await admin.close()


def encode_event(serializer: EventSerializer, recorded: RecordedEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one recorded event."""
    event = recorded.event
    if isinstance(event, UnreadableEvent):
        # Relayed as it was stored: a consumer that can read it (a newer release) will.
        try:
            data: Any = json.loads(event.data)
        except ValueError:
            data = event.data
        envelope = {
            "position": recorded.position, "stream_type": recorded.stream_type,
            "aggregate_id": recorded.aggregate_id, "version": recorded.version,
            "event_type": event.stored_type, "schema_version": event.stored_schema_version,
            "recorded_at": recorded.recorded_at.isoformat(), "data": data,
        }
        headers = [("event_type", event.stored_type.encode()),
                   ("schema_version", str(event.stored_schema_version).encode()),
                   ("position", str(recorded.position).encode()),
                   ("correlation_id", event.correlation_id.encode())]
        return recorded.aggregate_id.encode(), json.dumps(envelope).encode(), headers
    envelope = {
        "position": recorded.position,
        "stream_type": recorded.stream_type,
        "aggregate_id": recorded.aggregate_id,
        "version": recorded.version,
        "event_type": event.event_type(),
        "schema_version": event.schema_version,
        "recorded_at": recorded.recorded_at.isoformat(),
        "data": serializer.to_jsonable(event),
    }
    headers = [
        ("event_type", event.event_type().encode()),
        ("schema_version", str(event.schema_version).encode()),
        ("position", str(recorded.position).encode()),
        ("correlation_id", event.correlation_id.encode()),
    ]
    return recorded.aggregate_id.encode(), json.dumps(envelope).encode(), headers


def decode_event(serializer: EventSerializer, value: bytes) -> RecordedEvent:
    """The recorded event in an envelope; raises ``ValueError`` (or ``UnknownEventType``) if it
    is not one."""
    try:
        envelope: dict[str, Any] = json.loads(value)
        return RecordedEvent(
            position=int(envelope["position"]),
            stream_type=str(envelope["stream_type"]),
            aggregate_id=str(envelope["aggregate_id"]),
            version=int(envelope["version"]),
            event=serializer.deserialize(
                envelope["event_type"], int(envelope["schema_version"]), json.dumps(envelope["data"])
            ),
            recorded_at=datetime.fromisoformat(envelope["recorded_at"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a domain event envelope: {exc!r}") from exc


class KafkaDomainEventPublisher:
    """Publishes with the shared idempotent producer (see kafka_producer), creating the topic
    with its one partition first."""

    def __init__(self, brokers: list[str], topic: str, serializer: EventSerializer) -> None:
        self._brokers = ",".join(brokers)
        self.topic = topic
        self._serializer = serializer
        self._producer = LazyProducer(self._brokers)
        self._topic_ready = False

    async def publish(self, events: Sequence[RecordedEvent]) -> None:
        if not self._topic_ready:
            await ensure_topic(self._brokers, self.topic, partitions=1)
            self._topic_ready = True
        producer = await self._producer.get()
        pending = []
        for recorded in events:
            key, value, headers = encode_event(self._serializer, recorded)
            pending.append(await producer.send(self.topic, value, key=key, headers=headers))
        await asyncio.gather(*pending)

    async def close(self) -> None:
        await self._producer.close()

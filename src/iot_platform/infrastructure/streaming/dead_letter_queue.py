"""Reading and re-driving the dead-letter topic (``iot-platform dlq list|replay``).

``list`` reads the topic from its start to its current end, outside any consumer group, so
looking changes nothing. ``replay`` sends each dead letter back to the topic it came from (its
value and key as they were) and then commits its place in the replay consumer group, so a
letter is replayed once however often the command runs; a letter that fails again comes back
as a new letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: str
    headers: dict[str, str]
    value: bytes

    @property
    def reason(self) -> str:
        return self.headers.get("reason", "")

    @property
    def source(self) -> str:
        h = self.headers
        if "mqtt_topic" in h:  # a device's MQTT message (never replayed: no Kafka source)
            return f"mqtt:{h['mqtt_topic']}"
        return f"{h.get('source_topic', '?')}[{h.get('source_partition', '?')}]@{h.get('source_offset', '?')}"


def _letter(record: Any) -> DeadLetter:  # an aiokafka ConsumerRecord (untyped here)
    headers = {k: v.decode(errors="replace") for k, v in record.headers}
    return DeadLetter(record.partition, record.offset, (record.key or b"").decode(errors="replace"),
                      headers, record.value or b"")


async def _partitions(brokers: str, topic: str) -> list[TopicPartition]:
    """The topic's partitions; none if it does not exist (nothing was ever dead-lettered)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=brokers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def _read_to_end(consumer: AIOKafkaConsumer, topic: str, limit: int | None) -> list[DeadLetter]:
    """Everything between the consumer's positions and the topic's end as of now."""
    ends = await consumer.end_offsets(list(consumer.assignment()))
    letters: list[DeadLetter] = []
    async def behind() -> bool:
        return any([await consumer.position(tp) < end for tp, end in ends.items()])

    while await behind():
        fetched = await consumer.getmany(timeout_ms=1000)
        for tp, records in fetched.items():
            letters += [_letter(r) for r in records if r.offset < ends[tp]]
        if limit is not None and len(letters) >= limit:
            return letters[:limit]
    return letters


async def list_dead_letters(brokers: list[str], topic: str, limit: int | None = None) -> list[DeadLetter]:
    assigned = await _partitions(",".join(brokers), topic)
    if not assigned:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=",".join(brokers), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        return await _read_to_end(consumer, topic, limit)
    finally:
        await consumer.stop()


async def replay_dead_letters(
    brokers: list[str], topic: str, group: str, reason: str | None = None
) -> tuple[int, int]:
    """(replayed, skipped for another reason) of the letters not replayed before."""
    joined = ",".join(brokers)
    assigned = await _partitions(joined, topic)
    if not assigned:
        return 0, 0
    consumer = AIOKafkaConsumer(bootstrap_servers=joined, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=joined, enable_idempotence=True, acks="all")
    await consumer.start()
    await producer.start()
    try:
        consumer.assign(assigned)
        committed = {tp: await consumer.committed(tp) for tp in assigned}
        for tp, offset in committed.items():
            if offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        replayed = skipped = 0
        for letter in await _read_to_end(consumer, topic, None):
            if reason is not None and letter.reason != reason:
                skipped += 1
                continue
            source = letter.headers.get("source_topic")
            if source:
                await producer.send_and_wait(source, letter.value, key=letter.key.encode() or None)
                replayed += 1
        await consumer.commit()
        return replayed, skipped
    finally:
        await producer.stop()
        await consumer.stop()

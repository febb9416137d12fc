"""Reading and re-driving the dead-letter topic (``iot-platform dlq list|replay``).

``list`` reads the topic from its start to its current end, outside any consumer group, so
looking changes nothing. ``replay`` sends each dead letter back to the topic it came from (its
value and key as they were) and then commits its place in the replay consumer group, so a
letter is replayed once however often the command runs; a letter that fails again comes back
as a new letter.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


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
        return f"{h.get('source_topic', '?')}[{h.get('source_partition', '?')}]@{h.get('source_offset', '?')}"


def _letter(record: object) -> DeadLetter:
    headers = {k: v.decode(errors="replace") for k, v in getattr(record, "headers", ())}
    key = getattr(record, "key", None) or b""
    return DeadLetter(getattr(record, "partition"), getattr(record, "offset"), key.decode(errors="replace"),
                      headers, getattr(record, "value", None) or b"")


async def _read_to_end(consumer: AIOKafkaConsumer, topic: str, limit: int | None) -> list[DeadLetter]:
    """Everything between the consumer's positions and the topic's end as of now."""
    partitions = consumer.partitions_for_topic(topic) or set()
    ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
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
    consumer = AIOKafkaConsumer(bootstrap_servers=",".join(brokers), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            return []
        assigned = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
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
    consumer = AIOKafkaConsumer(bootstrap_servers=joined, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    producer = AIOKafkaProducer(bootstrap_servers=joined, enable_idempotence=True, acks="all")
    await consumer.start()
    await producer.start()
    try:
        if topic not in await consumer.topics():
            return 0, 0
        assigned = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
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

"""The operator's commands that act on stores rather than through use cases: the schema's
migrations, the dead-letter topic, the process's file modes. The CLI reaches them here, so that
it, like the rest of presentation, names no adapter.
"""

from __future__ import annotations

from iot_platform.config import Settings
from iot_platform.infrastructure.files import private_by_default
from iot_platform.infrastructure.persistence import migrate
from iot_platform.infrastructure.persistence.database import create_engine
from iot_platform.infrastructure.projections.runner import NotStalled
from iot_platform.infrastructure.streaming.dead_letter_queue import (
    DeadLetter,
    list_dead_letters,
    replay_dead_letters,
)

__all__ = [
    "DeadLetter",
    "NotStalled",
    "database_revision",
    "dead_letters",
    "private_by_default",
    "replay",
    "upgrade_database",
]


async def upgrade_database(settings: Settings, revision: str) -> str | None:
    """Applies migrations up to ``revision``; the revision the database is then at."""
    engine = create_engine(settings.eventstore.url)
    try:
        await migrate.upgrade(engine, revision)
        return await migrate.current_revision(engine)
    finally:
        await engine.dispose()


async def database_revision(settings: Settings) -> tuple[str | None, str]:
    """(the database's revision or None when empty, the newest revision this release has)."""
    engine = create_engine(settings.eventstore.url)
    try:
        return await migrate.current_revision(engine), migrate.head_revision()
    finally:
        await engine.dispose()


async def dead_letters(settings: Settings, limit: int | None) -> list[DeadLetter]:
    streaming = settings.streaming
    return await list_dead_letters(streaming.brokers, streaming.topics.dead_letter, limit)


async def replay(settings: Settings, reason: str | None) -> tuple[int, int]:
    """(replayed, skipped for another reason) of the dead letters not replayed before."""
    streaming = settings.streaming
    return await replay_dead_letters(
        streaming.brokers, streaming.topics.dead_letter, f"{streaming.consumer_group}-dlq-replay", reason
    )

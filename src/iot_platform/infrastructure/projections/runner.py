"""Runs SQL projections from the event store's global order, each with its own checkpoint.

A batch of events and the checkpoint that follows it are written in one transaction, so a crash
at any point leaves the read model exactly at its checkpoint and the next run resumes there.
The checkpoint is advanced by compare-and-set: if two processes run the same projection, the
slower one's batch rolls back instead of being applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iot_platform.application.ports import EventStore, RecordedEvent
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import projection_checkpoints

log = logging.getLogger(__name__)


class SqlProjection(Protocol):
    """A read model kept in SQL tables. ``apply`` must only touch ``tables``."""

    name: str
    tables: Sequence[Table]

    async def apply(self, conn: AsyncConnection, recorded: RecordedEvent) -> None: ...


class _CheckpointMoved(Exception):
    pass


class ProjectionRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        projections: Sequence[SqlProjection],
        batch_size: int = 500,
        poll_interval: float = 0.5,
    ) -> None:
        self._engine = engine
        self._reader = reader(engine)
        self._store = store
        self._projections = list(projections)
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._advanced = asyncio.Condition()
        self._position = 0
        self._checkpoints_exist = False

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._projections]

    def wake(self, _position: int = 0) -> None:
        """Called after an in-process append so the loop need not wait for its next poll."""
        self._wake.set()

    async def checkpoint(self, name: str) -> int:
        return await self._checkpoint_row(name) or 0

    async def position(self) -> int:
        """The position every projection has reached (one query, however many projections)."""
        if not self._projections:
            return await self._store.last_position()
        names = [p.name for p in self._projections]
        async with self._reader.connect() as conn:
            rows = (await conn.execute(
                select(projection_checkpoints.c.position).where(projection_checkpoints.c.name.in_(names))
            )).all()
        if len(rows) < len(names):  # a projection that has no checkpoint yet is at 0
            return 0
        return min(int(r[0]) for r in rows)

    async def catch_up(self) -> int:
        """Applies everything appended so far; returns how many events were applied.

        Projections at the same checkpoint (the usual case) share one read of each batch; each
        still applies it in its own transaction, so one failing read model holds back only itself.
        """
        await self._ensure_checkpoints()
        applied = 0
        pending = list(self._projections)
        while pending:
            batches: dict[int, list[RecordedEvent]] = {}
            still = []
            for projection in pending:
                count = await self._step(projection, batches)
                applied += count
                if count >= self._batch_size:
                    still.append(projection)
            pending = still
        self._position = await self.position()
        async with self._advanced:
            self._advanced.notify_all()
        return applied

    async def _step(self, projection: SqlProjection, batches: dict[int, list[RecordedEvent]]) -> int:
        checkpoint = await self.checkpoint(projection.name)
        batch = batches.get(checkpoint)
        if batch is None:
            batch = batches[checkpoint] = await self._store.read_all(checkpoint, self._batch_size)
        if not batch:
            return 0
        return await self._apply(projection, checkpoint, batch)

    async def _apply(self, projection: SqlProjection, checkpoint: int, batch: Sequence[RecordedEvent]) -> int:
        """Applies a batch that continues ``checkpoint`` and moves the checkpoint, atomically."""
        try:
            async with self._engine.begin() as conn:
                for recorded in batch:
                    await projection.apply(conn, recorded)
                await self._advance(conn, projection.name, checkpoint, batch[-1].position)
        except (_CheckpointMoved, IntegrityError):
            # A rival runner applied this batch first (its rows clash with ours, or it moved
            # the checkpoint). Anything else that clashes is a real error.
            if await self.checkpoint(projection.name) == checkpoint:
                raise
            log.info("projection %s was advanced by another runner", projection.name)
            return 0
        return len(batch)

    @staticmethod
    async def _advance(conn: AsyncConnection, name: str, old: int, new: int) -> None:
        moved = await conn.execute(
            update(projection_checkpoints)
            .where(projection_checkpoints.c.name == name)
            .where(projection_checkpoints.c.position == old)
            .values(position=new)
        )
        if moved.rowcount != 1:
            raise _CheckpointMoved()

    async def _ensure_checkpoints(self) -> None:
        if self._checkpoints_exist:
            return
        for projection in self._projections:
            if await self._checkpoint_row(projection.name) is None:
                # Another process may create it first; either way it exists afterwards.
                with contextlib.suppress(IntegrityError):
                    async with self._engine.begin() as conn:
                        await conn.execute(
                            insert(projection_checkpoints).values(name=projection.name, position=0)
                        )
        self._checkpoints_exist = True

    async def _checkpoint_row(self, name: str) -> int | None:
        async with self._reader.connect() as conn:
            value = await conn.scalar(
                select(projection_checkpoints.c.position).where(
                    projection_checkpoints.c.name == name
                )
            )
        return None if value is None else int(value)

    async def run(self) -> None:
        """Follows the store until cancelled. Errors are logged and retried, never fatal."""
        while True:
            try:
                applied = await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("projection run failed; retrying")
                applied = 0
            if applied == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval)
                self._wake.clear()

    async def apply(self, events: Sequence[RecordedEvent]) -> int:
        """Applies events fed from elsewhere (the domain-events topic) instead of read here.

        ``events`` are in position order without gaps. Each projection takes those after its
        own checkpoint, if they continue it; a projection they do not reach (a gap before
        them) is left as it is, for ``catch_up`` from the store. Returns the highest position
        every projection has now reached.
        """
        await self._ensure_checkpoints()
        for projection in self._projections:
            checkpoint = await self.checkpoint(projection.name)
            batch = [e for e in events if e.position > checkpoint]
            if batch and batch[0].position == checkpoint + 1:
                await self._apply(projection, checkpoint, batch)
        self._position = await self.position()
        async with self._advanced:
            self._advanced.notify_all()
        return self._position

    async def wait_for(self, position: int, timeout: float) -> bool:
        """True once every projection has reached ``position``; False after ``timeout``."""
        if self._position >= position:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = False
        while True:
            # This process's runner keeps ``_position`` current and wakes its waiters; without a
            # wake-up, another process may be running the projections: ask the database.
            if not woken:
                self._position = max(self._position, await self.position())
            if self._position >= position:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            woken = False
            with contextlib.suppress(TimeoutError):
                async with self._advanced:
                    await asyncio.wait_for(self._advanced.wait(), min(remaining, 0.05))
                    woken = True

    async def rebuild(self, names: Sequence[str] | None = None) -> int:
        """Empties the projections' tables, resets their checkpoints, and replays every event.

        Returns how many events were replayed (every projection reads each of them once), not
        the sum over projections."""
        chosen = [p for p in self._projections if names is None or p.name in names]
        async with self._engine.begin() as conn:
            for projection in chosen:
                for table in reversed(projection.tables):
                    await conn.execute(delete(table))
                await conn.execute(
                    update(projection_checkpoints)
                    .where(projection_checkpoints.c.name == projection.name)
                    .values(position=0)
                )
        self._position = 0
        await self.catch_up()
        return await self._store.last_position() if chosen else 0

"""Runs SQL projections from the event store's global order, each with its own checkpoint.

A batch of events and the checkpoint that follows it are written in one transaction, so a crash
at any point leaves the read model exactly at its checkpoint and the next run resumes there.
The checkpoint is advanced by compare-and-set: if two processes run the same projection, the
slower one's batch rolls back instead of being applied twice.

An event a projection cannot apply (or that the store could not read) stalls that projection
alone, just before it: the failure is recorded in ``projection_failures`` and logged, the other
projections go on, and the stalled one retries every ``retry_interval`` seconds, so it resumes
by itself once the event applies (after an upcaster or a fix ships). An operator can skip the
event instead (``skip``, the ``iot-platform projections skip`` command), which is recorded too.
Read-your-writes does not wait for a stalled projection (``position`` leaves it out): a command
answers at once, and that read model answers as it was until it resumes; ``/ready`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Table, and_, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from iot_platform.application.clock import utcnow
from iot_platform.application.ports import EventStore, RecordedEvent, UnreadableEvent
from iot_platform.infrastructure.persistence.database import reader
from iot_platform.infrastructure.persistence.schema import projection_checkpoints, projection_failures

log = logging.getLogger(__name__)


class SqlProjection(Protocol):
    """A read model kept in SQL tables. ``apply`` must only touch ``tables``."""

    name: str
    tables: Sequence[Table]
    # Optionally ``stream_types: frozenset[str]``: the streams it reads, so an unreadable
    # event of any other stream does not stall it.

    async def apply(self, conn: AsyncConnection, recorded: RecordedEvent) -> None: ...


class _CheckpointMoved(Exception):
    pass


class _Rival(Exception):
    """Another runner applied the batch first."""


_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError, ConnectionError, TimeoutError, OSError)
"""The database (not the event) failed: retried by ``run`` and never recorded as a stall."""


@dataclass(frozen=True)
class Stall:
    """A projection stopped just before ``position``, which it could not apply."""

    projection: str
    position: int
    stream_id: str
    event_type: str
    error: str
    since: datetime
    attempts: int


class NotStalled(LookupError):
    """``skip`` was asked for an event the projection is not stalled on."""


def _stream_types(projection: SqlProjection) -> frozenset[str] | None:
    """The stream types a projection reads, when it says (``stream_types``); None: every one."""
    return getattr(projection, "stream_types", None)


def _describe(exc: Exception) -> str:
    """The error's type and first line; for a database error, the driver's (never the SQL
    statement or its parameters, which hold event data and end up in /ready and the logs)."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}"[:500]


def _event_type(recorded: RecordedEvent) -> str:
    event = recorded.event
    return event.stored_type if isinstance(event, UnreadableEvent) else event.event_type()


class ProjectionRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        store: EventStore,
        projections: Sequence[SqlProjection],
        batch_size: int = 500,
        poll_interval: float = 0.5,
        retry_interval: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
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
        self._retry_interval = retry_interval
        self._monotonic = monotonic
        self._stalls: dict[str, Stall] = {}
        self._retry_at: dict[str, float] = {}
        self._pending_resolutions: list[tuple[str, int]] = []
        self.failures: Counter[str] = Counter()
        """Failed attempts to apply an event, per projection (for metrics)."""

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._projections]

    def wake(self, _position: int = 0) -> None:
        """Called after an in-process append so the loop need not wait for its next poll."""
        self._wake.set()

    async def checkpoint(self, name: str) -> int:
        return await self._checkpoint_row(name) or 0

    @property
    def stalls(self) -> dict[str, Stall]:
        """The projections this runner holds stalled, by name."""
        return dict(self._stalls)

    async def position(self) -> int:
        """The position every projection that is not stalled has reached (one query).

        A stalled projection (an open row in ``projection_failures``, whichever process runs
        it) is left out, so read-your-writes never waits behind it."""
        names = [p.name for p in self._projections]
        stalled = select(projection_failures.c.projection).where(projection_failures.c.resolved_at.is_(None))
        async with self._reader.connect() as conn:
            rows = (await conn.execute(
                select(projection_checkpoints.c.name, projection_checkpoints.c.position)
                .where(projection_checkpoints.c.name.in_(names))
            )).all()
            held = set((await conn.execute(stalled)).scalars()) if names else set()
        live = [n for n in names if n not in held]
        if not live:
            return await self._store.last_position()
        at = {str(name): int(position) for name, position in rows}
        return min(at.get(n, 0) for n in live)  # a projection with no checkpoint yet is at 0

    async def stalled(self) -> list[Stall]:
        """Every stalled projection recorded in the database, whichever process runs it."""
        f = projection_failures.c
        names = [p.name for p in self._projections]
        async with self._reader.connect() as conn:
            rows = (await conn.execute(
                select(projection_failures).where(f.resolved_at.is_(None)).where(f.projection.in_(names))
                .order_by(f.projection, f.position)
            )).mappings().all()
        return [Stall(r["projection"], int(r["position"]), r["stream_id"], r["event_type"], r["error"],
                      r["first_failed_at"], int(r["attempts"])) for r in rows]

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
        await self._record_resolutions()
        self._position = await self.position()
        async with self._advanced:
            self._advanced.notify_all()
        return applied

    def _waiting(self, name: str, checkpoint: int) -> bool:
        """True while ``name`` is stalled at ``checkpoint`` and its next retry is not due. A
        checkpoint moved by someone else (an operator's skip) ends the stall."""
        stall = self._stalls.get(name)
        if stall is None:
            return False
        if checkpoint != stall.position - 1:
            log.info("projection %s moved to %d, off position %d (skipped or rebuilt); resuming",
                     name, checkpoint, stall.position)
            del self._stalls[name]
            self._pending_resolutions.append((name, checkpoint))
            return False
        return self._monotonic() < self._retry_at.get(name, 0.0)

    async def _step(self, projection: SqlProjection, batches: dict[int, list[RecordedEvent]]) -> int:
        checkpoint = await self.checkpoint(projection.name)
        if self._waiting(projection.name, checkpoint):
            return 0
        batch = batches.get(checkpoint)
        if batch is None:
            batch = batches[checkpoint] = await self._store.read_all(checkpoint, self._batch_size)
        if not batch:
            return 0
        return await self._apply(projection, checkpoint, batch)

    async def _apply(self, projection: SqlProjection, checkpoint: int, batch: Sequence[RecordedEvent]) -> int:
        """Applies a batch that continues ``checkpoint`` and moves the checkpoint, atomically.

        An unreadable event of a stream the projection reads, or an event whose application
        fails (not the database: that is retried as it is), stalls the projection just before
        it; the events before it are applied. Returns how many events were applied."""
        wanted = _stream_types(projection)
        for index, recorded in enumerate(batch):
            event = recorded.event
            if isinstance(event, UnreadableEvent) and (wanted is None or recorded.stream_type in wanted):
                applied = await self._apply(projection, checkpoint, batch[:index]) if index else 0
                if applied == index:
                    await self._stall(projection.name, recorded, f"unreadable: {event.error}")
                return applied
        try:
            await self._apply_batch(projection, checkpoint, batch)
        except _TRANSIENT:
            raise
        except _Rival:
            return 0
        except Exception:
            if len(batch) == 1:
                raise
            # Find the event at fault: one event per transaction, up to it.
            applied, reached = 0, checkpoint
            for recorded in batch:
                try:
                    await self._apply_batch(projection, reached, [recorded])
                except _TRANSIENT:
                    raise
                except _Rival:
                    return applied
                except Exception as exc:
                    await self._stall(projection.name, recorded, _describe(exc))
                    return applied
                applied, reached = applied + 1, recorded.position
            return applied
        self._resumed(projection.name, batch[-1].position)
        return len(batch)

    async def _apply_batch(self, projection: SqlProjection, checkpoint: int, batch: Sequence[RecordedEvent]) -> None:
        try:
            async with self._engine.begin() as conn:
                for recorded in batch:
                    await projection.apply(conn, recorded)
                await self._advance(conn, projection.name, checkpoint, batch[-1].position)
        except (_CheckpointMoved, IntegrityError) as exc:
            # A rival runner applied this batch first (its rows clash with ours, or it moved
            # the checkpoint). Anything else that clashes is this event's fault.
            if await self.checkpoint(projection.name) == checkpoint:
                raise
            log.info("projection %s was advanced by another runner", projection.name)
            raise _Rival() from exc
        if len(batch) == 1 and projection.name in self._stalls:
            self._resumed(projection.name, batch[0].position)

    def _resumed(self, name: str, reached: int) -> None:
        stall = self._stalls.get(name)
        if stall is not None and reached >= stall.position:
            del self._stalls[name]
            self._retry_at.pop(name, None)
            log.warning("projection %s resumed: position %d (%s) applied after %d failed attempts",
                        name, stall.position, stall.event_type, stall.attempts)
            self._pending_resolutions.append((name, stall.position))

    async def _stall(self, name: str, recorded: RecordedEvent, error: str) -> None:
        """Records that ``name`` cannot apply ``recorded`` (a new row, or one more attempt)."""
        error = error[:2000]
        now = utcnow()
        f = projection_failures.c
        event_type = _event_type(recorded)
        self.failures[name] += 1
        async with self._engine.begin() as conn:
            row = (await conn.execute(
                select(f.id, f.attempts, f.first_failed_at).where(f.projection == name)
                .where(f.position == recorded.position).where(f.resolved_at.is_(None))
            )).first()
            if row is None:
                await conn.execute(insert(projection_failures).values(
                    projection=name, position=recorded.position, stream_id=recorded.stream_id,
                    stream_version=recorded.version, event_type=event_type, error=error,
                    attempts=1, first_failed_at=now, last_failed_at=now,
                ))
                attempts, since = 1, now
            else:
                attempts, since = int(row.attempts) + 1, row.first_failed_at
                await conn.execute(update(projection_failures).where(f.id == row.id)
                                   .values(attempts=attempts, last_failed_at=now, error=error))
        known = self._stalls.get(name)
        self._stalls[name] = Stall(name, recorded.position, recorded.stream_id, event_type, error, since, attempts)
        self._retry_at[name] = self._monotonic() + self._retry_interval
        if known is None or known.position != recorded.position:
            log.error("projection %s stalled at position %d (%s of %s v%d): %s; the other projections "
                      "go on; retrying every %gs, or skip it: iot-platform projections skip %s %d",
                      name, recorded.position, event_type, recorded.stream_id, recorded.version, error,
                      self._retry_interval, name, recorded.position)
        else:
            log.warning("projection %s still cannot apply position %d (attempt %d): %s",
                        name, recorded.position, attempts, error)

    async def _record_resolutions(self) -> None:
        while self._pending_resolutions:
            name, position = self._pending_resolutions.pop()
            f = projection_failures.c
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(projection_failures)
                    .where(and_(f.projection == name, f.position <= position, f.resolved_at.is_(None)))
                    .values(resolved_at=utcnow(), resolution="applied", resolved_by="projection runner")
                )

    async def skip(self, name: str, position: int, by: str, note: str | None = None) -> Stall:
        """Moves ``name`` past the event at ``position`` it is stalled on, without applying it,
        and records who skipped it, when and why. Raises ``NotStalled`` unless that projection
        is recorded as stalled at exactly that position."""
        if name not in self.names:
            raise NotStalled(f"no projection named {name!r}; projections: {', '.join(self.names)}")
        f = projection_failures.c
        async with self._engine.begin() as conn:
            row = (await conn.execute(
                select(projection_failures).where(f.projection == name).where(f.position == position)
                .where(f.resolved_at.is_(None))
            )).mappings().first()
            if row is None:
                open_ = (await conn.execute(
                    select(f.position).where(f.projection == name).where(f.resolved_at.is_(None))
                )).scalars().all()
                where = f"it is stalled at {open_[0]}" if open_ else "it is not stalled"
                raise NotStalled(f"projection {name} is not stalled at position {position}: {where}")
            try:
                await self._advance(conn, name, position - 1, position)
            except _CheckpointMoved:
                raise NotStalled(f"projection {name} is not just before position {position} "
                                 f"(its checkpoint moved); nothing skipped") from None
            await conn.execute(
                update(projection_failures).where(f.id == row["id"])
                .values(resolved_at=utcnow(), resolution="skipped", resolved_by=by[:200], note=note)
            )
        log.warning("projection %s: event at position %d (%s of %s) skipped by %s%s; it was never applied",
                    name, position, row["event_type"], row["stream_id"], by, f" ({note})" if note else "")
        return Stall(name, position, row["stream_id"], row["event_type"], row["error"],
                     row["first_failed_at"], int(row["attempts"]))

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
        # Stalls recorded before this start are retried at once: the release that was
        # missing an upcaster may be this one.
        for stall in await self.stalled():
            self._stalls[stall.projection] = stall
            self._retry_at[stall.projection] = 0.0
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
            if self._waiting(projection.name, checkpoint):
                continue
            batch = [e for e in events if e.position > checkpoint]
            if batch and batch[0].position == checkpoint + 1:
                await self._apply(projection, checkpoint, batch)
        await self._record_resolutions()
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

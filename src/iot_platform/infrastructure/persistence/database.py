"""Engine factory for SQLite (aiosqlite) and PostgreSQL (asyncpg).

SQLite needs three things the driver does not do by default: WAL (readers never block the
writer), ``BEGIN IMMEDIATE`` for writing transactions (they take the write lock when they start,
so two writers queue on busy_timeout instead of failing with "database is locked" half-way;
reads go through ``reader()`` and open none), and the ``haversine_km`` function that
PostgreSQL gets from the migration.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from iot_platform.infrastructure.files import private_sqlite

EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance; the same formula as the PostgreSQL function in the migration."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def async_url(url: str) -> URL:
    """Accepts plain ``sqlite:///`` and ``postgresql://`` URLs and picks the async driver."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise ValueError(f"unsupported database {backend!r}")
    return parsed


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_async_engine(parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_engine(url: URL) -> AsyncEngine:
    if url.database and url.database != ":memory:":
        private_sqlite(Path(url.database))
    engine = create_async_engine(url)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that "begin" below decides.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        dbapi_connection.create_function("haversine_km", 4, haversine_km, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(_READ_ONLY, False):
            # No transaction at all: each SELECT reads a consistent WAL snapshot of its own,
            # which is all a reader of immutable, contiguously appended events needs.
            return
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_READ_ONLY = "iot_read_only"


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, for connections that only read.

    On SQLite they open no transaction, so they never wait for the write lock; everything else
    begins IMMEDIATE. Forgetting this on a read costs only waiting. Never write through it. On
    PostgreSQL the option means nothing.
    """
    return engine.execution_options(**{_READ_ONLY: True})

"""Fixtures shared by every layer of tests.

Real services come from ``tools/services.sh`` (``make test`` starts them and exports
``IOT_TEST_*``). Without them a test that needs one is skipped on a developer machine and FAILS
under CI=true: CI must never pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from iot_platform.config import CONVENTIONAL_ENV
from iot_platform.infrastructure.persistence import migrate
from iot_platform.infrastructure.persistence.database import create_engine

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(variable: str, what: str) -> str:
    value = os.environ.get(variable)
    if not value:
        message = f"{what} is not available: {variable} is unset (run: eval $(tools/services.sh env))"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return value


@pytest.fixture(autouse=True)
def _clean_platform_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another's (or the shell's) platform settings."""
    for name in list(os.environ):
        if name.startswith("IOT_") and not name.startswith("IOT_TEST_") or name in CONVENTIONAL_ENV:
            monkeypatch.delenv(name)
    monkeypatch.delenv("IOT_CONFIG", raising=False)
    yield


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The services' test database, or under pytest-xdist one database per worker: every
    PostgreSQL test wipes its database first, so two workers must never share one."""
    url = require_service("IOT_TEST_POSTGRES_URL", "PostgreSQL")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    with ThreadPoolExecutor(1) as thread:  # an async fixture may ask first, inside its running loop
        return thread.submit(asyncio.run, worker_database(url, worker)).result()


async def worker_database(url: str, worker: str) -> str:
    """``url`` with its database renamed ``<database>_<worker>``, created on first use."""
    parsed = make_url(url)
    name = f"{parsed.database}_{worker}"
    engine = create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            exists = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return parsed.set(database=name).render_as_string(hide_password=False)


async def reset_postgres(url: str) -> None:
    """An empty public schema: every PostgreSQL test starts from nothing."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def platform_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The event store of a platform a test starts (a process in e2e, in process in tests/api):
    each test runs once per store, on an empty database under the platform's ``data/``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'iot.db'}"
    url = str(request.getfixturevalue("postgres_url"))
    asyncio.run(reset_postgres(url))
    return url


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each contract test runs once per backend, on an empty database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'iot.db'}"
    url = request.getfixturevalue("postgres_url")
    await reset_postgres(url)
    return str(url)


@pytest_asyncio.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    await migrate.upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import reset_postgres
from tests.e2e.platform_process import RunningPlatform, running_platform


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def e2e_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'iot.db'}"
    url = str(request.getfixturevalue("postgres_url"))
    asyncio.run(reset_postgres(url))
    return url


@pytest.fixture
def platform(tmp_path: Path, e2e_database_url: str) -> Iterator[RunningPlatform]:
    with running_platform(tmp_path, e2e_database_url) as running:
        yield running


@pytest.fixture
def api(platform: RunningPlatform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as client:
        yield client

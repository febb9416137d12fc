from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform_process import RunningPlatform, running_platform


@pytest.fixture
def platform(tmp_path: Path, platform_database_url: str) -> Iterator[RunningPlatform]:
    with running_platform(tmp_path, platform_database_url) as running:
        yield running


@pytest.fixture
def api(platform: RunningPlatform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as client:
        yield client

"""What the platform writes under ``data/`` is readable by its own user only.

The databases hold API-key and password hashes and all device data; ``data/secrets`` and
``data/pki`` hold keys. Under the usual umask (022) they came out 0644, readable by every
account on the machine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.e2e.platform_process import running_platform
from tests.e2e.test_telemetry import register

pytestmark = pytest.mark.e2e


def test_every_file_under_data_is_0600_and_every_directory_0700(tmp_path: Path) -> None:
    # Given the usual umask and a platform started on its embedded defaults (SQLite stores,
    # its own CA, a generated encryption key), which has stored a reading (WAL files exist)
    previous = os.umask(0o022)
    try:
        with running_platform(tmp_path, f"sqlite:///{tmp_path / 'data' / 'iot-platform.db'}") as platform:
            with httpx.Client(base_url=f"{platform.base_url}/api", headers=platform.headers, timeout=30) as api:
                register(api, "d1")
                stored = api.post("/telemetry", json={"device_id": "d1", "metrics": {"t": 1.0}})
                assert stored.status_code == 201, stored.text
                assert api.get("/devices/d1/data/latest").status_code == 200
            # When we look at what it wrote, while it runs (the WAL and shared-memory files exist)
            modes = {path.relative_to(tmp_path): stat.S_IMODE(path.stat().st_mode)
                     for path in [tmp_path / "data", *(tmp_path / "data").rglob("*")]}
    finally:
        os.umask(previous)
    # Then nobody but the platform's own user may read any of it
    assert any(name.name.endswith("-wal") for name in modes), modes
    assert {"data/iot-platform.db", "data/timeseries.db", "data/secrets/encryption.key",
            "data/pki/ca.key"} <= {str(p) for p in modes}, modes
    loose = {str(p): oct(m) for p, m in modes.items()
             if m != (0o700 if (tmp_path / p).is_dir() else 0o600)}
    assert not loose, f"readable by others: {loose}"

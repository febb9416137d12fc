"""A database made before the platform kept its files private (or by a laxer process) is
narrowed to 0600 when it is opened, with its WAL and shared-memory files."""

from __future__ import annotations

import stat
from pathlib import Path

from iot_platform.infrastructure.files import private_sqlite


def test_an_existing_world_readable_database_and_its_wal_are_narrowed(tmp_path: Path) -> None:
    # Given a database directory and files left 0755/0644 by an earlier version
    directory = tmp_path / "data"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    for name in ("iot.db", "iot.db-wal", "iot.db-shm"):
        (directory / name).write_bytes(b"")
        (directory / name).chmod(0o644)
    # When the platform opens it
    private_sqlite(directory / "iot.db")
    # Then each is its owner's alone
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {
        "iot.db": 0o600, "iot.db-wal": 0o600, "iot.db-shm": 0o600}


def test_a_new_database_file_is_created_0600(tmp_path: Path) -> None:
    private_sqlite(tmp_path / "new" / "iot.db")
    assert stat.S_IMODE((tmp_path / "new" / "iot.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700

"""What the platform writes to disk is its own: files 0600, directories 0700.

The databases hold key and password hashes and every device's data; the secrets directory and
the CA hold keys. ``private_by_default`` sets the process umask (every command of the CLI
calls it first), so whatever any library creates later is private; ``private_sqlite`` also
tightens a database made before that (or by a process with a laxer umask), with its WAL and
shared-memory files, which SQLite creates with the database file's own mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def private_by_default() -> None:
    os.umask(PRIVATE_UMASK)


def private_directory(path: Path) -> None:
    """``path`` and its missing parents made 0700; an existing ``path`` is narrowed to 0700
    (its parents, which may be the operator's own, are left as they are)."""
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    _narrow(path, DIRECTORY_MODE)


def private_sqlite(database: Path) -> None:
    """Creates the database file 0600 before SQLite opens it, or narrows an existing one."""
    private_directory(database.parent)
    descriptor = os.open(database, os.O_RDWR | os.O_CREAT, FILE_MODE)
    os.close(descriptor)
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")):
        _narrow(path, FILE_MODE)


def _narrow(path: Path, mode: int) -> None:
    try:
        current = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if current & ~mode:
        path.chmod(current & mode)

"""Checks that need no request, run before a run sends its first one.

A damaged database, a folder that cannot be written or a full disk would otherwise be found only
after the day's quota was spent. Each check raises one :class:`~freemodels.errors.StorageError` line
naming the path and what to do.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from freemodels import storage
from freemodels.errors import StorageError, environment_error
from freemodels.settings import Settings

MB = 1024 * 1024


def check_writable(folder: Path) -> None:
    """``folder`` exists (it is created) and a file can be written in it."""
    if folder.exists() and not folder.is_dir():
        raise StorageError(f"{folder} is a file, not a folder; point the setting at a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check.{os.getpid()}.{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise environment_error(exc, folder) from exc


def check_free_space(folder: Path, *, min_free_mb: int) -> None:
    """The file system of ``folder`` has at least ``min_free_mb`` MB free."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise environment_error(exc, folder) from exc
    if free < min_free_mb * MB:
        raise StorageError(
            f"only {free / MB:.1f} MB free at {folder}, a run needs {min_free_mb} MB; free some space "
            "(or lower DISCOVERY_MIN_FREE_DISK_MB)"
        )


def check_database(path: Path) -> None:
    """The DuckDB file opens for writing, is migrated, and every table reads."""
    try:
        con = storage.connect(path)
    except OSError as exc:
        raise environment_error(exc, path) from exc
    try:
        storage.check_health(con, path)
    finally:
        con.close()


def check_environment(settings: Settings, *, docs: bool = True) -> None:
    """Every check above for a run with these settings (in the order a user would fix them)."""
    check_writable(settings.data_dir)
    check_writable(settings.runs_dir)
    if docs:
        check_writable(settings.docs_dir)
    check_free_space(settings.data_dir, min_free_mb=settings.min_free_disk_mb)
    check_database(settings.database)

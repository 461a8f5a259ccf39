"""Checks that need no request, run before a run sends its first one.

A damaged database, a folder that cannot be written, a full disk or a host that cannot be reached
would otherwise be found only after the day's quota was spent (or after Prefect started). Each check
raises one line (:class:`~freemodels.errors.StorageError`, :class:`~freemodels.errors.SourceError`)
naming the path or host and what to do.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import urllib.request
from pathlib import Path

import httpx

from freemodels import storage
from freemodels.errors import SourceError, StorageError, environment_error
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


def check_reachable(url: str, *, timeout_s: float) -> None:
    """The host of ``url`` resolves and accepts a TCP connection (no request is sent).

    A missing network, a wrong host name or a refused port is then one line in a second, before
    anything else starts. Behind a proxy (``HTTPS_PROXY`` and the like) the host is reached through
    it, so the check is left to the first request.
    """
    target = httpx.URL(url)
    host = target.host
    if not host or urllib.request.getproxies():
        return
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise SourceError(f"cannot resolve {host} (DNS): no network, or a wrong host name in {url}") from None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except TimeoutError:
        raise SourceError(f"{host} did not accept a connection within {timeout_s:g} s ({url})") from None
    except OSError as exc:
        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            raise SourceError(f"no network route to {host} ({url})") from None
        raise SourceError(f"cannot connect to {host} ({url}): connection refused or no network") from None


def check_environment(settings: Settings, *, docs: bool = True) -> None:
    """Every check above for a run with these settings (in the order a user would fix them)."""
    check_writable(settings.data_dir)
    check_writable(settings.runs_dir)
    if docs:
        check_writable(settings.docs_dir)
    check_free_space(settings.data_dir, min_free_mb=settings.min_free_disk_mb)
    check_database(settings.database)

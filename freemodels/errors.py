"""The project's own exceptions.

Every error a user can cause (a bad catalog file, a bad setting, a locked database, ...) is raised as a
subclass of :class:`DiscoveryError`. The CLI turns these into one clear line and a non-zero exit; code in
between never catches ``Exception``. A message often quotes what a server or a file said, so every
message passes the redaction point (:func:`freemodels.secrets.untrusted`) when the error is created: a
key a server echoed never reaches a log, the run record or a Prefect state through an error.

Tree::

    DiscoveryError
    ├── ConfigError            a setting or command-line value is invalid
    ├── CatalogError           a catalog could not be read or parsed
    ├── ScenarioError          a sandbox scenario file is invalid
    ├── StorageError           the DuckDB file or Parquet files cannot be used
    │   └── DatabaseLockedError  another run holds the database
    ├── RunNotFoundError       no run matches (e.g. nothing to resume)
    ├── SourceError            the model source (OpenRouter, sandbox, base URL) cannot be reached
    └── RunFailed              a run stopped; it is recorded as failed and can be resumed

:func:`environment_error` turns an ``OSError`` of the machine (disk full, permission denied, a
read-only file system) into one clear :class:`StorageError` naming the path and what to do.
"""

from __future__ import annotations

import errno
from pathlib import Path

from freemodels.secrets import untrusted


class DiscoveryError(Exception):
    """Base class of every error this project raises on purpose (its message redacted)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(untrusted(str(message)), *args)


class ConfigError(DiscoveryError):
    """A setting or command-line value is invalid."""


class CatalogError(DiscoveryError):
    """A catalog could not be read or parsed."""


class ScenarioError(DiscoveryError):
    """A sandbox scenario file is invalid."""


class StorageError(DiscoveryError):
    """The DuckDB file or the Parquet files cannot be used."""


class DatabaseLockedError(StorageError):
    """Another run holds the database."""


class RunNotFoundError(DiscoveryError):
    """No run matches the request."""


class SourceError(DiscoveryError):
    """The model source cannot be reached or answered with something unusable.

    ``transient`` marks what may pass by itself (a 5xx answer, a timeout); an unreachable host, a
    refused connection, a DNS or TLS failure or a 4xx answer will not, and are not retried.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RunFailed(DiscoveryError):
    """A run stopped on an error; its status is ``failed`` and ``discovery run --resume`` continues it."""

    def __init__(self, reason: str, *, run_id: str) -> None:
        super().__init__(reason)
        self.reason: str = self.args[0]
        self.run_id = run_id


_ERRNO_WORDS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("disk full", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space"),
    errno.EACCES: ("permission denied", "fix the folder's permissions"),
    errno.EPERM: ("permission denied", "fix the folder's permissions"),
    errno.EROFS: ("read-only file system", "use a writable folder"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a path component is not a folder", "check the path"),
    errno.EISDIR: ("is a folder", "check the path"),
    errno.EIO: ("input/output error", "check the disk"),
}


def environment_error(exc: OSError, path: Path | str | None = None) -> StorageError:
    """One line for an ``OSError`` of the machine: the cause, the path, and what to do about it."""
    where = path if path is not None else exc.filename
    cause, fix = _ERRNO_WORDS.get(exc.errno or -1, (exc.strerror or type(exc).__name__, "check it"))
    target = f" at {where}" if where is not None else ""
    return StorageError(f"{cause}{target}; {fix}")

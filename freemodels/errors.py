"""The project's own exceptions.

Every error a user can cause (a bad catalog file, a bad setting, a locked database, ...) is raised as a
subclass of :class:`DiscoveryError`. The CLI turns these into one clear line and a non-zero exit; code in
between never catches ``Exception``.

Tree::

    DiscoveryError
    ├── ConfigError            a setting or command-line value is invalid
    ├── CatalogError           a catalog could not be read or parsed
    ├── ScenarioError          a sandbox scenario file is invalid
    ├── StorageError           the DuckDB file or Parquet files cannot be used
    │   └── DatabaseLockedError  another run holds the database
    ├── RunNotFoundError       no run matches (e.g. nothing to resume)
    └── SourceError            the model source (OpenRouter, sandbox, base URL) cannot be reached
"""

from __future__ import annotations


class DiscoveryError(Exception):
    """Base class of every error this project raises on purpose."""


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
    """The model source cannot be reached or answered with something unusable."""

"""Glue between the CLI and the flow: run a discovery, render reports, list runs.

Prefect is configured here, at the edge, before it is imported: analytics off (the tool must run with
no internet), and quieter server logs. A ``PREFECT_API_URL`` set by the user (a running Prefect server)
is respected; without one, Prefect starts a temporary local server for the run.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    # The temporary server's first start creates its database; on a busy 2-core machine that can take
    # longer than Prefect's default of 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def configure_prefect() -> None:
    """Offline-friendly Prefect defaults; values the user set win."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


def run_discovery(**parameters: object):  # -> RunSummary (imported lazily)
    """Run the ``discovery`` flow in this process and return its summary."""
    configure_prefect()
    from flows.discovery import RunParameters, discovery, preflight

    clean = {k: v for k, v in parameters.items() if v is not None and v is not False}
    preflight(RunParameters(**clean))  # type: ignore[arg-type]
    return asyncio.run(discovery(**clean))  # type: ignore[arg-type]


def render_reports(*, run_id: str | None, data_dir: str | None, docs_dir: str | None) -> list[Path]:
    """Render docs/ again from the database."""
    from freemodels import storage
    from freemodels.errors import RunNotFoundError
    from freemodels.settings import load_settings
    from tasks.render import render_and_write

    settings = load_settings(data_dir=data_dir, docs_dir=docs_dir)
    if not settings.database.exists():
        raise RunNotFoundError(f"no database at {settings.database}; run `discovery run` first")
    con = storage.connect(settings.database, read_only=True)
    try:
        chosen = run_id or storage.latest_run_id(con)
        if chosen is None:
            raise RunNotFoundError(f"no completed run in {settings.database}")
        return render_and_write(con, chosen, settings.docs_dir)
    finally:
        con.close()


def list_runs_table(*, data_dir: str | None) -> str:
    """The stored runs as a plain-text table."""
    from freemodels import storage
    from freemodels.errors import RunNotFoundError
    from freemodels.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    if not settings.database.exists():
        raise RunNotFoundError(f"no database at {settings.database}; run `discovery run` first")
    con = storage.connect(settings.database, read_only=True)
    try:
        runs = storage.list_runs(con)
    finally:
        con.close()
    if runs.is_empty():
        return "no runs stored"
    cols = [
        c
        for c in ("run_id", "started_at", "source", "status", "quota_before", "quota_after")
        if c in runs.columns
    ]
    rows = [[("" if v is None else str(v)) for v in row] for row in runs.select(cols).iter_rows()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)

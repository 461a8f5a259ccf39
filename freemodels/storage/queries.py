"""Read queries for the reports and the CLI: the one read path. Every function returns polars frames.

The reports and the CLI read the database only through here, so each notion has one definition:

- **free**: a catalog row that is free and not a router (:data:`FREE_MODEL_SQL`);
- **tested**: a model whose verdict is working, degraded or failing (:data:`TESTED_VERDICTS`); models
  left untested by the quota and candidate ids the catalog does not list are not tested;
- **previous run**: the run the changes were computed against, else the newest completed run of the
  same source that started before (:func:`previous_run_id`).

:func:`report_data` reads everything the reports of one run show into a :class:`ReportData`.

DuckDB hands results to polars through Arrow (``con.sql(sql, params=...).pl()``; in DuckDB 2 the
connection returned by ``execute()`` has no ``.pl()``, and a partly read ``execute()`` result, e.g.
after ``fetchone()``, blocks every later ``con.sql()``, so this package always reads results in
full). Frames come back with the column types of :data:`freemodels.storage.database.DB_SCHEMAS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import duckdb
import polars as pl

from freemodels.availability import Availability, summarize
from freemodels.errors import RunNotFoundError, StorageError
from freemodels.records import Verdict
from freemodels.storage.database import DB_SCHEMAS

# Stable row order per table, so reports render the same way every time.
_ORDER_BY: dict[str, str] = {
    "runs": "started_at, run_id",
    "catalog": "model_id",
    "probes": "model_id, task, sample, attempt",
    "model_results": "model_id",
    "rotation": "purpose, rank, model_id",
    "changes": "change, model_id",
    "endpoints": "model_id, provider NULLS FIRST, endpoint",
    "drill": "incident, client, arm, seq",
}

# One row per run, oldest first: the trend over time.
HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "started_at": pl.Datetime("us", "UTC"),
    "source": pl.String(),
    "status": pl.String(),
    "catalog_size": pl.Int64(),  # models the catalog listed
    "free": pl.Int64(),  # of which free
    "tested": pl.Int64(),  # models with a verdict other than untested_quota / not_listed
    "working": pl.Int64(),  # verdict "working"
    "degraded": pl.Int64(),
    "failing": pl.Int64(),
    "median_p50_total_ms": pl.Float64(),  # median over working models of their P50 total time
}

TESTED_VERDICTS: tuple[str, ...] = (Verdict.WORKING.value, Verdict.DEGRADED.value, Verdict.FAILING.value)
"""The verdicts of a tested model (the one definition of "tested")."""

FREE_MODEL_SQL = "coalesce(is_free, false) AND NOT coalesce(is_router, false)"
"""A free model of the catalog (the one definition of "free"): free, and not a router."""

_TESTED_SQL = ", ".join(f"'{v}'" for v in TESTED_VERDICTS)

_HISTORY_SQL = f"""
WITH cat AS (
    SELECT run_id, count(*) AS catalog_size, count(*) FILTER (WHERE {FREE_MODEL_SQL}) AS free
    FROM catalog GROUP BY run_id
), res AS (
    SELECT
        run_id,
        count(*) FILTER (WHERE verdict IN ({_TESTED_SQL})) AS tested,
        count(*) FILTER (WHERE verdict = '{Verdict.WORKING.value}') AS working,
        count(*) FILTER (WHERE verdict = '{Verdict.DEGRADED.value}') AS degraded,
        count(*) FILTER (WHERE verdict = '{Verdict.FAILING.value}') AS failing,
        median(p50_total_ms) FILTER (WHERE verdict = '{Verdict.WORKING.value}')
            AS median_p50_total_ms
    FROM model_results GROUP BY run_id
)
SELECT
    r.run_id, r.started_at, r.source, r.status,
    coalesce(cat.catalog_size, 0) AS catalog_size,
    coalesce(cat.free, 0) AS free,
    coalesce(res.tested, 0) AS tested,
    coalesce(res.working, 0) AS working,
    coalesce(res.degraded, 0) AS degraded,
    coalesce(res.failing, 0) AS failing,
    CAST(res.median_p50_total_ms AS DOUBLE) AS median_p50_total_ms
FROM runs AS r
LEFT JOIN cat ON cat.run_id = r.run_id
LEFT JOIN res ON res.run_id = r.run_id
LEFT JOIN runs AS u ON u.run_id = CAST(? AS VARCHAR)
WHERE (CAST(? AS VARCHAR) IS NULL OR r.source = CAST(? AS VARCHAR))
  AND (CAST(? AS VARCHAR) IS NULL OR (
        (r.started_at < u.started_at OR (r.started_at = u.started_at AND r.run_id <= u.run_id))
        AND (r.status = 'completed' OR r.run_id = u.run_id)))
ORDER BY r.started_at, r.run_id
"""


def query(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] | None = None) -> pl.DataFrame:
    """Run one SQL query and return the result as a polars DataFrame."""
    try:
        frame: pl.DataFrame = con.sql(sql, params=list(params) if params is not None else None).pl()
        return frame
    except duckdb.Error as exc:
        raise StorageError(f"database query failed: {exc}") from exc


def _schema_of(table: str) -> dict[str, pl.DataType]:
    try:
        return DB_SCHEMAS[table]
    except KeyError:
        raise StorageError(f"unknown table {table!r}; the tables are {', '.join(DB_SCHEMAS)}") from None


def _select(table: str, where: str = "") -> str:
    columns = ", ".join(f'"{c}"' for c in _schema_of(table))
    return f"SELECT {columns} FROM {table} {where} ORDER BY {_ORDER_BY[table]}"


def list_runs(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every stored run (the ``runs`` table), oldest first."""
    return query(con, _select("runs")).cast(pl.Schema(DB_SCHEMAS["runs"]))


def load_table(con: duckdb.DuckDBPyConnection, table: str, run_id: str) -> pl.DataFrame:
    """The rows of one run in one table, in a stable order, with the table's columns and types.

    The ``catalog`` frame carries the ``run_id`` column in front of the CATALOG_SCHEMA columns.
    """
    schema = _schema_of(table)
    return query(con, _select(table, "WHERE run_id = ?"), [run_id]).cast(pl.Schema(schema))


def latest_run_id(
    con: duckdb.DuckDBPyConnection, *, source: str | None = None, completed_only: bool = True
) -> str | None:
    """The newest run (by start time), optionally of one source; only completed ones by default."""
    frame = query(
        con,
        "SELECT run_id FROM runs "
        "WHERE (CAST(? AS VARCHAR) IS NULL OR source = CAST(? AS VARCHAR)) "
        "AND (NOT CAST(? AS BOOLEAN) OR status = 'completed') "
        "ORDER BY started_at DESC, run_id DESC LIMIT 1",
        [source, source, completed_only],
    )
    return frame.item(0, 0) if frame.height else None


def previous_run_id(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    source: str | None = None,
    started_at: datetime | None = None,
    completed_only: bool = True,
) -> str | None:
    """The run before ``run_id`` from the same source (completed ones by default), or None.

    When ``run_id`` is stored, its own row gives the source and the start time. A run that is not
    stored yet (changes are computed before storing) uses ``source`` and ``started_at``; without a
    start time every other stored run counts as earlier. An explicit ``source`` always wins.
    """
    rows = con.execute("SELECT source, started_at FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if rows:
        row = rows[0]
        source = source if source is not None else row[0]
        started_at = started_at if started_at is not None else row[1]
    frame = query(
        con,
        "SELECT run_id FROM runs "
        "WHERE run_id <> ? "
        "AND (CAST(? AS VARCHAR) IS NULL OR source = CAST(? AS VARCHAR)) "
        "AND (NOT CAST(? AS BOOLEAN) OR status = 'completed') "
        "AND (CAST(? AS TIMESTAMPTZ) IS NULL OR started_at < CAST(? AS TIMESTAMPTZ) "
        "     OR (started_at = CAST(? AS TIMESTAMPTZ) AND run_id < ?)) "
        "ORDER BY started_at DESC, run_id DESC LIMIT 1",
        [run_id, source, source, completed_only, started_at, started_at, started_at, run_id],
    )
    return frame.item(0, 0) if frame.height else None


def history(
    con: duckdb.DuckDBPyConnection, source: str | None = None, *, until: str | None = None
) -> pl.DataFrame:
    """Per run, oldest first: start time, catalog size, free, tested, working, degraded, failing
    counts and the median P50 total time of the working models (HISTORY_SCHEMA). One SQL query.

    ``until``: only the runs a report of that run shows: the completed ones that started before it
    (or at the same time, with a smaller id), and the run itself.
    """
    frame = query(con, _HISTORY_SQL, [until, source, source, until])
    return frame.cast(pl.Schema(HISTORY_SCHEMA))


_AVAILABILITY_DAYS_SQL = """
SELECT model_id, CAST("at" AS DATE) AS day, bool_or(free) AS free
FROM availability
WHERE (CAST(? AS VARCHAR) IS NULL OR source = CAST(? AS VARCHAR)) AND "at" <= CAST(? AS TIMESTAMPTZ)
GROUP BY model_id, day
ORDER BY model_id, day
"""

_OBSERVED_DAYS_SQL = """
SELECT DISTINCT CAST("at" AS DATE) AS day
FROM availability
WHERE (CAST(? AS VARCHAR) IS NULL OR source = CAST(? AS VARCHAR)) AND "at" <= CAST(? AS TIMESTAMPTZ)
ORDER BY day
"""


def availability_days(
    con: duckdb.DuckDBPyConnection, *, source: str | None, until: datetime
) -> tuple[pl.DataFrame, list[date]]:
    """Availability at daily resolution from every snapshot (runs and watches) of ``source`` read at
    or before ``until``: one row per model and UTC day with whether a snapshot saw it free that day
    (:data:`freemodels.availability.AVAILABILITY_DAYS_SCHEMA`), and the days any snapshot was read."""
    from freemodels.availability import AVAILABILITY_DAYS_SCHEMA

    params = [source, source, until]
    days = query(con, _AVAILABILITY_DAYS_SQL, params).cast(pl.Schema(AVAILABILITY_DAYS_SCHEMA))
    observed = query(con, _OBSERVED_DAYS_SQL, params).get_column("day").to_list()
    return days, observed


def latest_watch(con: duckdb.DuckDBPyConnection, *, source: str | None = None) -> dict[str, object] | None:
    """The newest completed watch (of ``source`` when given), as a ``watches`` row, or None."""
    from freemodels.records import WATCHES_SCHEMA

    columns = ", ".join(f'"{c}"' for c in WATCHES_SCHEMA)
    frame = query(
        con,
        f"SELECT {columns} FROM watches WHERE status = 'completed' "
        "AND (CAST(? AS VARCHAR) IS NULL OR source = CAST(? AS VARCHAR)) "
        'ORDER BY "at" DESC, watch_id DESC LIMIT 1',
        [source, source],
    )
    return frame.cast(pl.Schema(WATCHES_SCHEMA)).row(0, named=True) if frame.height else None


def watch_changes(con: duckdb.DuckDBPyConnection, watch_id: str) -> pl.DataFrame:
    """What one watch found changed (the ``watch_changes`` rows), by change then model."""
    from freemodels.records import WATCH_CHANGES_SCHEMA

    columns = ", ".join(f'"{c}"' for c in WATCH_CHANGES_SCHEMA)
    frame = query(
        con, f"SELECT {columns} FROM watch_changes WHERE watch_id = ? ORDER BY change, model_id", [watch_id]
    )
    return frame.cast(pl.Schema(WATCH_CHANGES_SCHEMA))


def snapshot(con: duckdb.DuckDBPyConnection, snapshot_id: str) -> pl.DataFrame:
    """One snapshot's ``availability`` rows (a run's or a watch's), by model."""
    from freemodels.records import AVAILABILITY_SCHEMA

    columns = ", ".join(f'"{c}"' for c in AVAILABILITY_SCHEMA)
    frame = query(
        con, f"SELECT {columns} FROM availability WHERE snapshot_id = ? ORDER BY model_id", [snapshot_id]
    )
    return frame.cast(pl.Schema(AVAILABILITY_SCHEMA))


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the reports of one run are made from, as :func:`report_data` reads it."""

    run: dict[str, Any]  # one row of RUNS_SCHEMA
    catalog: pl.DataFrame  # CATALOG_SCHEMA (no run_id column)
    probes: pl.DataFrame  # PROBES_SCHEMA, every attempt
    model_results: pl.DataFrame  # MODEL_RESULTS_SCHEMA, tiers filled
    rotation: pl.DataFrame  # ROTATION_SCHEMA
    changes: pl.DataFrame  # CHANGES_SCHEMA
    history: pl.DataFrame  # HISTORY_SCHEMA, oldest first, up to and including this run
    previous_run: dict[str, Any] | None = None  # the run the changes compare against
    drill: pl.DataFrame | None = None  # DRILL_SCHEMA; None or empty: the run was not drilled
    endpoints: pl.DataFrame | None = None  # ENDPOINTS_SCHEMA: the free signals read before probing
    availability: Availability | None = None  # free models over time, from every snapshot up to the run


def report_data(con: duckdb.DuckDBPyConnection, run_id: str) -> ReportData:
    """Read run ``run_id`` and the history up to it (see the module docstring for the definitions).

    Raises :class:`~freemodels.errors.RunNotFoundError` if the run is not stored and
    :class:`~freemodels.errors.StorageError` if the tables cannot be read.
    """
    runs = query(con, _select("runs", "WHERE run_id = ?"), [run_id]).cast(pl.Schema(DB_SCHEMAS["runs"]))
    if runs.is_empty():
        raise RunNotFoundError(f"no stored run with id {run_id!r}")
    run = runs.row(0, named=True)
    until = run.get("catalog_fetched_at") or run["started_at"]
    days, observed = availability_days(con, source=run["source"], until=until)
    changes = load_table(con, "changes", run_id)
    compared = sorted(changes.get_column("prev_run_id").drop_nulls().unique().to_list())
    prev_id = compared[0] if compared else previous_run_id(con, run_id)
    previous = None
    if prev_id is not None:
        rows = query(con, _select("runs", "WHERE run_id = ?"), [prev_id]).cast(pl.Schema(DB_SCHEMAS["runs"]))
        previous = rows.row(0, named=True) if rows.height else None
    return ReportData(
        run=run,
        catalog=load_table(con, "catalog", run_id).drop("run_id"),
        probes=load_table(con, "probes", run_id),
        model_results=load_table(con, "model_results", run_id),
        rotation=load_table(con, "rotation", run_id),
        changes=changes,
        history=history(con, until=run_id),
        previous_run=previous,
        drill=load_table(con, "drill", run_id),
        endpoints=load_table(con, "endpoints", run_id),
        availability=summarize(days, observed, until.date()),
    )

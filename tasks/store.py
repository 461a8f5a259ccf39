"""Step ``store``: write the run's Parquet files and load them into DuckDB in one transaction.

The changes since the previous run of the same source are computed here, because they need the
previous run from the database; they are stored with the run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from freemodels import storage
from freemodels.changes import compute_changes
from freemodels.errors import StorageError
from freemodels.records import RunInfo

# What compute_changes reads of the previous catalog: three columns instead of all of them (a large
# catalog's descriptions and parameter lists would otherwise be read back for nothing).
_PREV_CATALOG_SQL = "SELECT model_id, is_free, expiration_date FROM catalog WHERE run_id = ?"


def one_source(probes: pl.DataFrame, source: str, run_id: str) -> pl.DataFrame:
    """``probes`` with every row's source filled in, after checking that the run's source answered
    them all: a run never mixes sources (rows recorded before the column existed have none)."""
    named = probes.get_column("source").drop_nulls().unique().to_list()
    others = sorted(s for s in named if s != source)
    if others:
        raise StorageError(
            f"run {run_id} is a {source} run, but {', '.join(others)} answered some of its probes; "
            "it is not stored (a run never mixes sources)"
        )
    return probes.with_columns(pl.col("source").fill_null(source))


def store_run_files(
    db_path: Path,
    folder: Path,
    info: RunInfo,
    probes: pl.DataFrame,
    results: pl.DataFrame,
    rotation: pl.DataFrame,
    catalog: pl.DataFrame,
) -> pl.DataFrame:
    """Persist one run; returns the changes since the previous run of the same source."""
    probes = one_source(probes, info.source, info.run_id)
    con = storage.connect(db_path)
    try:
        prev_id = storage.previous_run_id(con, info.run_id, source=info.source, started_at=info.started_at)
        if prev_id is None:
            changes = compute_changes(
                run_id=info.run_id,
                prev_run_id=None,
                prev_catalog=None,
                cur_catalog=catalog,
                prev_results=None,
                cur_results=results,
                today=datetime.now(UTC).date(),
            )
        else:
            changes = compute_changes(
                run_id=info.run_id,
                prev_run_id=prev_id,
                prev_catalog=storage.query(con, _PREV_CATALOG_SQL, [prev_id]),
                cur_catalog=catalog,
                prev_results=storage.load_table(con, "model_results", prev_id),
                cur_results=results,
                today=datetime.now(UTC).date(),
            )
        storage.write_table(folder / "probes.parquet", probes)
        storage.write_table(folder / "model_results.parquet", results)
        storage.write_table(folder / "rotation.parquet", rotation)
        storage.write_table(folder / "changes.parquet", changes)
        storage.write_run_info(folder, info)
        storage.store_run(con, folder)
    finally:
        con.close()
    return changes


@task(name="store", cache_policy=NO_CACHE)
def store_task(
    db_path: Path,
    folder: Path,
    info: RunInfo,
    probes: pl.DataFrame,
    results: pl.DataFrame,
    rotation: pl.DataFrame,
    catalog: pl.DataFrame,
) -> pl.DataFrame:
    return store_run_files(db_path, folder, info, probes, results, rotation, catalog)

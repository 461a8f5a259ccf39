"""Storage: everything a run keeps on disk, in one package.

- :mod:`.runfolder` — the run folder ``<runs_dir>/<run_id>/`` (``run.json``, Parquet files,
  append-only probe checkpoints), every file written atomically; the run's lifecycle status.
- :mod:`.checkpoint` — :class:`CheckpointWriter`, which buffers probe results while probing and appends
  them to the run folder as checkpoint parts.
- :mod:`.database` — opening the DuckDB file (waiting for another process's lock), numbered
  migrations recorded in ``schema_version``, and :func:`store_run`, which replaces one run's rows in
  every table in one transaction, reading the Parquet files inside DuckDB.
- :mod:`.queries` — read queries for the reports and the CLI, as polars frames.

Import the public names from here (``from freemodels import storage``). A typical run::

    run_id = new_run_id(datetime.now(UTC))
    folder = run_dir(settings.runs_dir, run_id)
    write_run_info(folder, info)                    # status "running"
    write_table(folder / "catalog.parquet", catalog)
    with CheckpointWriter(folder) as checkpoint:    # while probing
        checkpoint.add(result)
    write_table(folder / "probes.parquet", read_probe_checkpoints(folder))
    ...                                             # model_results, rotation, changes
    with connect(settings.database) as con:
        store_run(con, folder)
    write_run_info(folder, replace(info, status="completed"))
"""

from __future__ import annotations

from freemodels.storage.checkpoint import CheckpointWriter
from freemodels.storage.database import (
    DB_SCHEMAS,
    SCHEMA_VERSION,
    WATCH_FILES,
    LockHolder,
    applied_versions,
    check_health,
    connect,
    migrate,
    migrations,
    parse_lock_conflict,
    put_run_row,
    runs_row,
    store_drill,
    store_run,
    store_watch,
)
from freemodels.storage.queries import (
    FREE_MODEL_SQL,
    HISTORY_SCHEMA,
    TESTED_VERDICTS,
    ReportData,
    availability_days,
    history,
    latest_run_id,
    latest_watch,
    list_runs,
    load_table,
    previous_run_id,
    query,
    report_data,
    snapshot,
    watch_changes,
)
from freemodels.storage.runfolder import (
    CANDIDATES_FILE,
    CHECKPOINT_DIR,
    RUN_INFO_FILE,
    TABLE_FILES,
    ProbeKey,
    append_probe_checkpoint,
    attempts_used,
    completed_probe_keys,
    max_attempts_by_probe,
    new_run_id,
    read_candidates_of,
    read_probe_checkpoints,
    read_run_info,
    read_table,
    run_dir,
    run_folders,
    write_candidates,
    write_run_info,
    write_table,
    write_text_atomic,
)

__all__ = [
    "CANDIDATES_FILE",
    "CHECKPOINT_DIR",
    "DB_SCHEMAS",
    "FREE_MODEL_SQL",
    "HISTORY_SCHEMA",
    "RUN_INFO_FILE",
    "SCHEMA_VERSION",
    "TABLE_FILES",
    "TESTED_VERDICTS",
    "WATCH_FILES",
    "CheckpointWriter",
    "LockHolder",
    "ProbeKey",
    "ReportData",
    "append_probe_checkpoint",
    "applied_versions",
    "attempts_used",
    "availability_days",
    "check_health",
    "completed_probe_keys",
    "connect",
    "history",
    "latest_run_id",
    "latest_watch",
    "list_runs",
    "load_table",
    "max_attempts_by_probe",
    "migrate",
    "migrations",
    "new_run_id",
    "parse_lock_conflict",
    "previous_run_id",
    "put_run_row",
    "query",
    "read_candidates_of",
    "read_probe_checkpoints",
    "read_run_info",
    "read_table",
    "report_data",
    "run_dir",
    "run_folders",
    "runs_row",
    "snapshot",
    "store_drill",
    "store_run",
    "store_watch",
    "watch_changes",
    "write_candidates",
    "write_run_info",
    "write_table",
    "write_text_atomic",
]

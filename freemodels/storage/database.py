"""The DuckDB file: opening it (locks, damage), schema migrations, and storing one run.

DuckDB lets one process at a time open a file for writing (and no reader while a writer holds it).
:func:`connect` waits up to ``wait_s`` seconds for another process to let go, then raises
:class:`~freemodels.errors.DatabaseLockedError` naming the file and the holder's PID. A file that is
not a DuckDB database raises :class:`~freemodels.errors.StorageError`.

Schema: numbered migrations, each applied once inside its own transaction and recorded in the
``schema_version`` table (one row per applied migration). Opening a database applies the missing ones;
a read-only connection cannot migrate and asks for a writing open instead. Tables hold exactly the
columns of :data:`freemodels.records.TABLE_SCHEMAS`, in order, except that ``catalog`` also has the
``run_id`` its Parquet file leaves out (see :data:`DB_SCHEMAS`). There are no key constraints: a run
is replaced by deleting and inserting its rows in one transaction, which :func:`store_run` does.

Storing a run reads the run folder's Parquet files inside DuckDB (``INSERT ... SELECT ... FROM
read_parquet(?)``), column by column, never row by row; a process killed while storing leaves the
database as it was before (DuckDB's write-ahead log only replays committed transactions).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import duckdb
import polars as pl

from freemodels.errors import DatabaseLockedError, StorageError
from freemodels.records import RUNS_SCHEMA, TABLE_SCHEMAS, WATCH_TABLE_SCHEMAS, RunInfo
from freemodels.storage.runfolder import TABLE_FILES, as_utc, read_run_info

# Every table as stored in DuckDB: TABLE_SCHEMAS, with a leading run_id where the schema has none
# (the catalog: its Parquet file and the pipeline's frames describe one run).
DB_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    name: dict(schema) if "run_id" in schema else {"run_id": pl.String(), **schema}
    for name, schema in TABLE_SCHEMAS.items()
}

_V1 = """
CREATE TABLE runs (
    run_id VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    source VARCHAR NOT NULL,
    base_url VARCHAR,
    status VARCHAR NOT NULL,
    quota_before BIGINT,
    quota_after BIGINT,
    quota_limit BIGINT,
    prefect_flow_run_id VARCHAR,
    catalog_fetched_at TIMESTAMPTZ,
    suite_version VARCHAR,
    settings_json VARCHAR,
    notes VARCHAR
);
CREATE TABLE catalog (
    run_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    canonical_slug VARCHAR,
    name VARCHAR,
    author VARCHAR,
    family VARCHAR,
    variant VARCHAR,
    created BIGINT,
    description VARCHAR,
    context_length BIGINT,
    max_completion_tokens BIGINT,
    modality VARCHAR,
    input_modalities VARCHAR[],
    output_modalities VARCHAR[],
    tokenizer VARCHAR,
    instruct_type VARCHAR,
    price_prompt DOUBLE,
    price_completion DOUBLE,
    price_request DOUBLE,
    price_image DOUBLE,
    pricing_json VARCHAR,
    is_router BOOLEAN,
    is_free BOOLEAN,
    free_rule VARCHAR,
    is_moderated BOOLEAN,
    supported_parameters VARCHAR[],
    supports_tools BOOLEAN,
    supports_structured_outputs BOOLEAN,
    supports_reasoning BOOLEAN,
    expiration_date VARCHAR,
    hugging_face_id VARCHAR
);
CREATE TABLE probes (
    run_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    family VARCHAR,
    task VARCHAR NOT NULL,
    sample BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    started_at TIMESTAMPTZ,
    http_status BIGINT,
    failure VARCHAR,
    passed BOOLEAN,
    error_code VARCHAR,
    message VARCHAR,
    ttft_any_ms DOUBLE,
    ttft_content_ms DOUBLE,
    total_ms DOUBLE,
    completion_tokens BIGINT,
    reasoning_tokens BIGINT,
    finish_reason VARCHAR,
    generation_id VARCHAR,
    provider VARCHAR,
    cache_status VARCHAR,
    cost DOUBLE,
    retry_after_s DOUBLE,
    reply_excerpt VARCHAR,
    server_ttft_ms DOUBLE,
    server_total_ms DOUBLE
);
CREATE TABLE model_results (
    run_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    family VARCHAR,
    verdict VARCHAR,
    n BIGINT,
    n_ok BIGINT,
    n_passed BIGINT,
    success_rate DOUBLE,
    p50_total_ms DOUBLE,
    p90_total_ms DOUBLE,
    p50_ttft_ms DOUBLE,
    p90_ttft_ms DOUBLE,
    p50_ttft_content_ms DOUBLE,
    tier VARCHAR,
    is_reasoning BOOLEAN,
    tasks_passed VARCHAR,
    tasks_failed VARCHAR,
    root_cause VARCHAR,
    remedy VARCHAR,
    evidence VARCHAR,
    suggestion VARCHAR
);
CREATE TABLE rotation (
    run_id VARCHAR NOT NULL,
    purpose VARCHAR,
    rank BIGINT,
    model_id VARCHAR NOT NULL,
    family VARCHAR,
    tier VARCHAR,
    p50_total_ms DOUBLE,
    success_rate DOUBLE
);
CREATE TABLE changes (
    run_id VARCHAR NOT NULL,
    prev_run_id VARCHAR,
    model_id VARCHAR,
    change VARCHAR NOT NULL,
    detail VARCHAR
);
"""

# Version 2: the run lifecycle (why a run failed, the steps done, models the quota left untested;
# "partial" became "completed" with untested models); the source that answered each probe; where a
# probe's answer was read (content or the reasoning channel), the metadata of an upstream 429
# (limit_source, is_byok, remedy_hint), and a model's caveat (answers only in the reasoning channel).
_V2 = """
ALTER TABLE runs ADD COLUMN status_reason VARCHAR;
ALTER TABLE runs ADD COLUMN steps_done VARCHAR;
ALTER TABLE runs ADD COLUMN untested_models BIGINT;
UPDATE runs SET untested_models = (
    SELECT count(*) FROM model_results m
    WHERE m.run_id = runs.run_id AND m.verdict = 'untested_quota'
);
UPDATE runs SET status = 'completed' WHERE status = 'partial';
ALTER TABLE probes ADD COLUMN source VARCHAR;
UPDATE probes SET source = (SELECT r.source FROM runs r WHERE r.run_id = probes.run_id);
ALTER TABLE probes ADD COLUMN answer_channel VARCHAR;
ALTER TABLE probes ADD COLUMN limit_source VARCHAR;
ALTER TABLE probes ADD COLUMN is_byok BOOLEAN;
ALTER TABLE probes ADD COLUMN remedy_hint VARCHAR;
ALTER TABLE model_results ADD COLUMN caveat VARCHAR;
"""

# Version 3: the free models' provider endpoints as the source reports them, read before the first
# chat request (see freemodels.listings); earlier runs have no rows.
_V3 = """
CREATE TABLE endpoints (
    run_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    listing VARCHAR,
    routable BOOLEAN,
    provider VARCHAR,
    endpoint VARCHAR,
    tag VARCHAR,
    status BIGINT,
    uptime_5m DOUBLE,
    uptime_30m DOUBLE,
    uptime_1d DOUBLE,
    latency_p50_ms DOUBLE,
    latency_p75_ms DOUBLE,
    latency_p90_ms DOUBLE,
    latency_p99_ms DOUBLE,
    throughput_p50 DOUBLE,
    throughput_p75 DOUBLE,
    throughput_p90 DOUBLE,
    throughput_p99 DOUBLE,
    context_length BIGINT,
    max_completion_tokens BIGINT,
    quantization VARCHAR,
    fetched_at TIMESTAMPTZ
);
"""

# Version 4: the drill of the rotation through the clients people deploy (one row per request; see
# freemodels.records.DRILL_SCHEMA).
_V4 = """
CREATE TABLE drill (
    run_id VARCHAR NOT NULL,
    client VARCHAR NOT NULL,
    arm VARCHAR NOT NULL,
    incident VARCHAR NOT NULL,
    purpose VARCHAR,
    seq BIGINT NOT NULL,
    started_at TIMESTAMPTZ,
    outcome VARCHAR NOT NULL,
    failure VARCHAR,
    http_status BIGINT,
    answered_by VARCHAR,
    latency_ms DOUBLE,
    attempts BIGINT,
    message VARCHAR
);
"""

# Version 5: the daily watch (one row per watch, what it found changed) and availability over time (per
# model and snapshot, runs and watches alike); the stored runs' catalogs become their snapshots.
_V5 = """
CREATE TABLE watches (
    watch_id VARCHAR NOT NULL,
    "at" TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    source VARCHAR NOT NULL,
    base_url VARCHAR,
    status VARCHAR NOT NULL,
    status_reason VARCHAR,
    based_on_run_id VARCHAR,
    previous_watch_id VARCHAR,
    catalog_models BIGINT,
    free_models BIGINT,
    rotation_models BIGINT,
    listings_read BIGINT,
    chat_requests BIGINT,
    lost BIGINT,
    added BIGINT,
    expiring BIGINT,
    restored BIGINT,
    rotation_repaired BOOLEAN,
    exports_rewritten BOOLEAN,
    prefect_flow_run_id VARCHAR,
    notes VARCHAR
);
CREATE TABLE watch_changes (
    watch_id VARCHAR NOT NULL,
    compared_with VARCHAR,
    model_id VARCHAR NOT NULL,
    change VARCHAR NOT NULL,
    reason VARCHAR,
    detail VARCHAR,
    in_rotation BOOLEAN,
    new BOOLEAN,
    expiration_date VARCHAR
);
CREATE TABLE availability (
    snapshot_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    source VARCHAR,
    "at" TIMESTAMPTZ NOT NULL,
    model_id VARCHAR NOT NULL,
    listed BOOLEAN,
    free BOOLEAN,
    endpoints BIGINT,
    listing VARCHAR,
    expiration_date VARCHAR
);
INSERT INTO availability
SELECT c.run_id, 'run', r.source, coalesce(r.catalog_fetched_at, r.started_at), c.model_id, true,
       coalesce(c.is_free, false), e.endpoints, e.listing, c.expiration_date
FROM catalog c
JOIN runs r ON r.run_id = c.run_id
LEFT JOIN (
    SELECT run_id, model_id, count(provider) AS endpoints, any_value(listing) AS listing
    FROM endpoints GROUP BY run_id, model_id
) e ON e.run_id = c.run_id AND e.model_id = c.model_id;
"""

# A run's snapshot in the availability table, from its stored catalog and endpoints listings.
_RUN_AVAILABILITY = """
INSERT INTO availability
SELECT c.run_id, 'run', r.source, coalesce(r.catalog_fetched_at, r.started_at), c.model_id, true,
       coalesce(c.is_free, false), e.endpoints, e.listing, c.expiration_date
FROM catalog c
JOIN runs r ON r.run_id = c.run_id
LEFT JOIN (
    SELECT model_id, count(provider) AS endpoints, any_value(listing) AS listing
    FROM endpoints WHERE run_id = ? GROUP BY model_id
) e ON e.model_id = c.model_id
WHERE c.run_id = ?
"""

# (version, SQL) in order; numbers need only increase. Never edit a released migration: append a new
# one and bump SCHEMA_VERSION.
migrations: list[tuple[int, str]] = [
    (1, _V1),
    (2, _V2),
    (3, _V3),
    (4, _V4),
    (5, _V5),
]
SCHEMA_VERSION: int = migrations[-1][0]

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
)
"""

# DuckDB's lock conflict (POSIX), from LocalFileSystem::OpenFile:
#   IO Error: Could not set lock on file "<path>": Conflicting lock is held in <program> (PID <n>)
#   [by user <u>]. See also https://duckdb.org/docs/...
# and, when the holder cannot be found, the same prefix followed by strerror of F_SETLK
# (EAGAIN or EACCES mean "held by another process"; anything else, such as ENOLCK, does not).
# On Windows: "File is already open in <program> (PID <n>)" or the system's "being used by another
# process".
_LOCK_PREFIX_RE = re.compile(r'Could not set lock on file "(?P<path>[^"]*)": (?P<why>.*)', re.S)
_HOLDER_RE = re.compile(
    r"(?:Conflicting lock is held in|File is already open in)\s+(?P<program>.*?)\s+"
    r"\(PID (?P<pid>\d+)\)",
    re.S,
)
_CONFLICT_ERRNO_TEXT = ("Resource temporarily unavailable", "Permission denied")
_WINDOWS_CONFLICT_TEXT = "being used by another process"
_NOT_DUCKDB_TEXT = "is not a valid DuckDB database file"
_VERSION_TEXT = ("Trying to read a database file with version number", "storage version")
_OTHER_CONFIG_TEXT = "different configuration than existing connections"


class LockHolder:
    """Who holds a DuckDB file, as far as DuckDB's message tells."""

    __slots__ = ("pid", "program")

    def __init__(self, pid: int | None, program: str | None) -> None:
        self.pid = pid
        self.program = program

    def describe(self) -> str:
        if self.pid is None:
            return "pid unknown"
        return f"pid {self.pid}" + (f", {self.program}" if self.program else "")


def parse_lock_conflict(message: str) -> LockHolder | None:
    """The holder named in DuckDB's lock-conflict message, or None if ``message`` is another error."""
    holder = _HOLDER_RE.search(message)
    if holder:
        return LockHolder(int(holder.group("pid")), holder.group("program").strip() or None)
    prefix = _LOCK_PREFIX_RE.search(message)
    if prefix and prefix.group("why").startswith(_CONFLICT_ERRNO_TEXT):
        return LockHolder(None, None)
    if _WINDOWS_CONFLICT_TEXT in message:
        return LockHolder(None, None)
    return None


def _open_error(path: Path, exc: duckdb.Error) -> StorageError:
    text = str(exc)
    if _NOT_DUCKDB_TEXT in text:
        return StorageError(
            f"{path} is not a DuckDB database (or it is damaged); move it aside or set "
            "DISCOVERY_DB_PATH to another file"
        )
    if any(marker in text for marker in _VERSION_TEXT):
        return StorageError(f"{path} was written by an incompatible DuckDB version: {text}")
    if _OTHER_CONFIG_TEXT in text:
        return StorageError(
            f"{path} is already open in this process with other options (read-only versus "
            "writing); close that connection first"
        )
    return StorageError(f"cannot open {path}: {text}")


def _open(path: Path, *, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + max(wait_s, 0.0)
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            holder = parse_lock_conflict(str(exc))
            if holder is None:
                raise _open_error(path, exc) from exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseLockedError(
                    f"another discovery run is using {path} ({holder.describe()}); waited "
                    f"{wait_s:g} s. Wait for it to finish or stop it, then try again."
                ) from exc
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)


def connect(db_path: Path | str, *, read_only: bool = False, wait_s: float = 30) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file (creating it and its folders) and bring its schema up to date.

    ``":memory:"`` opens a private in-memory database. Sessions use the UTC time zone, so
    timestamps come back as ``Datetime("us", "UTC")``. A read-only open needs an existing database
    at the current schema version. Another process holding the file -> retried until ``wait_s``
    seconds have passed, then :class:`DatabaseLockedError`; anything else -> :class:`StorageError`.
    """
    in_memory = str(db_path) == ":memory:"
    path = Path(db_path)
    if not in_memory:
        if path.is_dir():
            raise StorageError(f"{path} is a folder, not a DuckDB file")
        if read_only and not path.exists():
            raise StorageError(f"no database at {path} yet; `discovery run` creates it")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:") if in_memory else _open(path, read_only=read_only, wait_s=wait_s)
    try:
        con.execute("SET TimeZone = 'UTC'")
        if read_only:
            _check_version(con, path)
        else:
            migrate(con)
    except duckdb.Error as exc:
        con.close()
        raise StorageError(f"cannot use {path}: {exc}") from exc
    except StorageError:
        con.close()
        raise
    return con


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction; DuckDB may already have ended it after a failed COMMIT."""
    with contextlib.suppress(duckdb.TransactionException):  # none active: nothing to undo
        con.execute("ROLLBACK")


def applied_versions(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Migration versions recorded in ``schema_version`` (empty if the table does not exist)."""
    # fetchall, never fetchone: DuckDB 2 refuses con.sql() while an execute() result is unread.
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_name = 'schema_version'"
    ).fetchall()
    if not exists[0][0]:
        return []
    return [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]


def _newer_error(found: int) -> StorageError:
    return StorageError(
        f"the database has schema version {found}, newer than this program's {SCHEMA_VERSION}; "
        "upgrade free-model-discovery"
    )


def migrate(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply the missing migrations in order, each in its own transaction; returns those applied."""
    con.execute(_VERSION_TABLE)
    applied = set(applied_versions(con))
    if applied and max(applied) > SCHEMA_VERSION:
        raise _newer_error(max(applied))
    done: list[int] = []
    for version, sql in migrations:
        if version in applied:
            continue
        con.execute("BEGIN TRANSACTION")
        committed = False
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, now())", [version])
            con.execute("COMMIT")
            committed = True
        except duckdb.Error as exc:
            raise StorageError(f"schema migration {version} failed: {exc}") from exc
        finally:
            if not committed:
                _rollback(con)
        done.append(version)
    return done


def _check_version(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    applied = applied_versions(con)
    found = max(applied, default=0)
    if found > SCHEMA_VERSION:
        raise _newer_error(found)
    missing = [version for version, _ in migrations if version not in applied]
    if missing:
        raise StorageError(
            f"{path} has schema version {found}, this program needs {SCHEMA_VERSION} (missing: "
            f"{', '.join(map(str, missing))}); open it once for writing (any `discovery run`) to "
            "migrate it"
        )


# --- storing a run ---------------------------------------------------------------------------------


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def runs_row(info: RunInfo) -> dict[str, object]:
    """The ``runs`` row of a RunInfo (notes as a JSON array, datetimes in UTC)."""
    row: dict[str, object] = {}
    for name in RUNS_SCHEMA:
        value = getattr(info, name)
        if name in ("notes", "steps_done"):
            value = json.dumps(list(value), ensure_ascii=False)
        elif value is not None and name in {"started_at", "finished_at", "catalog_fetched_at"}:
            value = as_utc(value)
        row[name] = value
    return row


def _parquet_sources(folder: Path) -> dict[str, Path]:
    """The run's Parquet file per table, after checking that each has every needed column."""
    sources: dict[str, Path] = {}
    for table, file_name in TABLE_FILES.items():
        path = folder / file_name
        if not path.is_file():
            continue
        try:
            present = pl.read_parquet_schema(path)
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc
        needed = [c for c in DB_SCHEMAS[table] if c != "run_id"]
        missing = [c for c in needed if c not in present]
        if missing:
            raise StorageError(f"{path}: missing column(s) {', '.join(missing)}")
        sources[table] = path
    return sources


def _insert_parquet(con: duckdb.DuckDBPyConnection, table: str, run_id: str, path: Path) -> None:
    """Insert one Parquet file into ``table`` inside DuckDB; run_id always comes from the run."""
    columns = [c for c in DB_SCHEMAS[table] if c != "run_id"]
    column_list = ", ".join(_quote(c) for c in columns)
    con.execute(
        f"INSERT INTO {table} (run_id, {column_list}) "
        f"SELECT CAST(? AS VARCHAR), {column_list} FROM read_parquet(?)",
        [run_id, str(path)],
    )


def store_run(con: duckdb.DuckDBPyConnection, run_dir: Path | str) -> None:
    """Load one run folder into the database in ONE transaction, replacing any earlier copy.

    Every row of the run's id is deleted from every table, then the ``runs`` row is inserted from
    ``run.json`` and each table from its Parquet file (a table whose file is absent gets no rows), and
    the run's catalog becomes its snapshot in ``availability``.
    Storing the same folder twice leaves the same rows. On any failure the transaction is rolled
    back and :class:`StorageError` says so.
    """
    folder = Path(run_dir)
    info = read_run_info(folder)
    sources = _parquet_sources(folder)
    row = runs_row(info)
    con.execute("BEGIN TRANSACTION")
    committed = False
    try:
        for table in DB_SCHEMAS:
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [info.run_id])
        con.execute(
            f"INSERT INTO runs ({', '.join(_quote(c) for c in row)}) VALUES ({', '.join('?' for _ in row)})",
            list(row.values()),
        )
        for table, path in sources.items():
            _insert_parquet(con, table, info.run_id, path)
        con.execute("DELETE FROM availability WHERE snapshot_id = ? AND kind = 'run'", [info.run_id])
        con.execute(_RUN_AVAILABILITY, [info.run_id, info.run_id])
        con.execute("COMMIT")
        committed = True
    except duckdb.Error as exc:
        raise StorageError(
            f"storing run {info.run_id} from {folder} failed, the database is unchanged: {exc}"
        ) from exc
    finally:
        if not committed:
            _rollback(con)


def store_drill(con: duckdb.DuckDBPyConnection, run_id: str, path: Path) -> None:
    """Replace run ``run_id``'s rows of the ``drill`` table by the Parquet file at ``path``, in one
    transaction (a drill of a run already stored; :func:`store_run` loads the same file with the run)."""
    con.execute("BEGIN TRANSACTION")
    committed = False
    try:
        con.execute("DELETE FROM drill WHERE run_id = ?", [run_id])
        _insert_parquet(con, "drill", run_id, path)
        con.execute("COMMIT")
        committed = True
    except duckdb.Error as exc:
        raise StorageError(
            f"storing the drill of run {run_id} failed, the database is unchanged: {exc}"
        ) from exc
    finally:
        if not committed:
            _rollback(con)


def put_run_row(con: duckdb.DuckDBPyConnection, info: RunInfo) -> None:
    """Insert or replace the ``runs`` row of ``info`` alone (its other tables are left as they are).

    The run's lifecycle is mirrored here at every change of status, so the ``runs`` table lists
    unfinished and failed runs too; their other tables stay empty until the run is stored.
    """
    row = runs_row(info)
    con.execute("BEGIN TRANSACTION")
    committed = False
    try:
        con.execute("DELETE FROM runs WHERE run_id = ?", [info.run_id])
        con.execute(
            f"INSERT INTO runs ({', '.join(_quote(c) for c in row)}) VALUES ({', '.join('?' for _ in row)})",
            list(row.values()),
        )
        con.execute("COMMIT")
        committed = True
    except duckdb.Error as exc:
        raise StorageError(f"recording run {info.run_id} in the database failed: {exc}") from exc
    finally:
        if not committed:
            _rollback(con)


def store_watch(con: duckdb.DuckDBPyConnection, folder: Path | str, watch_id: str) -> None:
    """Load one watch folder (``watch.parquet``, ``watch_changes.parquet``, ``availability.parquet``)
    into the database in ONE transaction, replacing any earlier copy of the watch."""
    where = Path(folder)
    con.execute("BEGIN TRANSACTION")
    committed = False
    try:
        for table, key in (
            ("watches", "watch_id"),
            ("watch_changes", "watch_id"),
            ("availability", "snapshot_id"),
        ):
            con.execute(f"DELETE FROM {table} WHERE {key} = ?", [watch_id])
            path = where / WATCH_FILES[table]
            if not path.is_file():
                continue
            columns = ", ".join(_quote(c) for c in WATCH_TABLE_SCHEMAS[table])
            con.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM read_parquet(?) WHERE {key} = ?",
                [str(path), watch_id],
            )
        con.execute("COMMIT")
        committed = True
    except duckdb.Error as exc:
        raise StorageError(
            f"storing watch {watch_id} from {where} failed, the database is unchanged: {exc}"
        ) from exc
    finally:
        if not committed:
            _rollback(con)


WATCH_FILES: dict[str, str] = {
    "watches": "watch.parquet",
    "watch_changes": "watch_changes.parquet",
    "availability": "availability.parquet",
}
"""A watch folder's files, per table."""


def check_health(con: duckdb.DuckDBPyConnection, path: Path | str) -> None:
    """Read every table once, so a damaged database is found before a run spends anything."""
    try:
        for table in [*DB_SCHEMAS, *WATCH_TABLE_SCHEMAS]:
            con.execute(f"SELECT count(*) FROM {table}").fetchall()
    except duckdb.Error as exc:
        raise StorageError(
            f"the database {path} cannot be read ({exc}); move it aside or set DISCOVERY_DB_PATH to "
            "another file"
        ) from exc

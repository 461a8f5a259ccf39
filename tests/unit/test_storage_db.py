"""The DuckDB file: migrations, locks, damage, storing runs (idempotent, atomic) and the queries."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from freemodels import storage
from freemodels.errors import DatabaseLockedError, StorageError
from freemodels.records import (
    CATALOG_SCHEMA,
    DRILL_SCHEMA,
    MODEL_RESULTS_SCHEMA,
    ROTATION_SCHEMA,
    TABLE_SCHEMAS,
    WATCH_TABLE_SCHEMAS,
    probes_frame,
)
from freemodels.storage import database as store_db
from tests.unit.test_changes import catalog, catalog_row, frame, result_row, results
from tests.unit.test_storage_files import REPO_ROOT, T0, probe, run_info

DUCK_TYPES: dict[type[pl.DataType], str] = {
    pl.String: "VARCHAR",
    pl.Int64: "BIGINT",
    pl.Float64: "DOUBLE",
    pl.Boolean: "BOOLEAN",
}


ALL_VERSIONS = [version for version, _sql in storage.migrations]


def duck_type(dtype: pl.DataType) -> str:
    if dtype == pl.Datetime("us", "UTC"):
        return "TIMESTAMP WITH TIME ZONE"
    if dtype == pl.List(pl.String()):
        return "VARCHAR[]"
    return DUCK_TYPES[type(dtype)]


def make_run(
    runs_dir: Path,
    run_id: str,
    *,
    offset_days: float = 0,
    models: int = 3,
    source: str = "sandbox",
    status: str = "completed",
    with_changes: bool = False,
) -> Path:
    """A run folder with run.json and every table's Parquet file."""
    folder = storage.run_dir(runs_dir, run_id)
    storage.write_run_info(
        folder,
        run_info(run_id, offset_days=offset_days, source=source, status=status, notes=["n"]),
    )
    ids = [f"vendor/m{i}:free" for i in range(models)]
    storage.write_table(
        folder / "catalog.parquet",
        catalog(*(catalog_row(m) for m in ids), catalog_row("vendor/paid", free=False)),
    )
    storage.write_table(
        folder / "probes.parquet",
        probes_frame([probe(run_id, m, t) for m in ids for t in ("exact", "json")]),
    )
    storage.write_table(
        folder / "model_results.parquet",
        results(*(result_row(m, "working", "fast", run_id=run_id, p50_total_ms=800.0) for m in ids)),
    )
    storage.write_table(
        folder / "rotation.parquet",
        frame(
            ROTATION_SCHEMA,
            [
                {"run_id": run_id, "purpose": "general", "rank": i + 1, "model_id": m}
                for i, m in enumerate(ids)
            ],
        ),
    )
    storage.write_table(
        folder / "endpoints.parquet",
        frame(
            TABLE_SCHEMAS["endpoints"],
            [
                {
                    "run_id": run_id,
                    "model_id": m,
                    "listing": "endpoints",
                    "provider": "Chutes",
                    "uptime_30m": 99.0,
                }
                for m in ids
            ],
        ),
    )
    if with_changes:
        storage.write_table(
            folder / "changes.parquet",
            frame(
                TABLE_SCHEMAS["changes"],
                [{"run_id": run_id, "prev_run_id": "p", "model_id": ids[0], "change": "added"}],
            ),
        )
    return folder


def counts(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    out = {}
    for table in storage.DB_SCHEMAS:
        rows = con.execute(f"SELECT count(*) FROM {table} WHERE run_id = ?", [run_id]).fetchall()
        out[table] = rows[0][0]
    return out


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "discovery.duckdb"


@pytest.fixture
def con(db_path: Path) -> Any:
    connection = storage.connect(db_path)
    yield connection
    connection.close()


# --- schema and migrations -------------------------------------------------------------------------


def test_connect_creates_folders_and_every_table_with_exactly_the_record_columns(
    db_path: Path,
) -> None:
    with storage.connect(db_path) as con:
        assert db_path.is_file()
        tables = {
            name
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        assert tables == {*TABLE_SCHEMAS, *WATCH_TABLE_SCHEMAS, "schema_version"}
        for table, schema in storage.DB_SCHEMAS.items():
            described = [(name, kind) for name, kind, *_ in con.execute(f"DESCRIBE {table}").fetchall()]
            assert described == [(name, duck_type(dtype)) for name, dtype in schema.items()], table
    # The record schemas, plus run_id where a Parquet file leaves it out (the catalog only).
    assert storage.DB_SCHEMAS["catalog"] == {"run_id": pl.String(), **CATALOG_SCHEMA}
    for table in set(TABLE_SCHEMAS) - {"catalog"}:
        assert storage.DB_SCHEMAS[table] == TABLE_SCHEMAS[table]


def test_migrations_are_idempotent_with_one_version_row_each(db_path: Path) -> None:
    for _ in range(3):
        with storage.connect(db_path) as con:
            rows = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
            assert [v for (v,) in rows] == [v for v, _ in storage.migrations]
            assert storage.migrate(con) == []
    assert storage.migrations[-1][0] == storage.SCHEMA_VERSION
    versions = [v for v, _ in storage.migrations]
    assert versions == sorted(set(versions)) and versions[0] == 1


def test_a_failing_migration_rolls_back_and_names_its_version(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.connect(db_path).close()
    following = storage.SCHEMA_VERSION + 1
    broken = [*storage.migrations, (following, "CREATE TABLE half_done (a INTEGER); SELECT nonsense")]
    monkeypatch.setattr(store_db, "migrations", broken)
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", following)
    with pytest.raises(StorageError, match=f"schema migration {following} failed"):
        storage.connect(db_path)
    monkeypatch.undo()
    with storage.connect(db_path) as con:
        assert storage.applied_versions(con) == ALL_VERSIONS
        tables = [t for (t,) in con.execute("SHOW TABLES").fetchall()]
        assert "half_done" not in tables


def test_a_version_1_database_gains_the_probe_and_result_columns_of_migration_2(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "migrations", store_db.migrations[:1])
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", 1)
    with storage.connect(db_path) as con:
        con.execute(
            "INSERT INTO probes (run_id, model_id, task, sample, attempt) VALUES ('r', 'm', 't', 0, 1)"
        )
    monkeypatch.undo()
    with storage.connect(db_path) as con:
        assert storage.applied_versions(con) == ALL_VERSIONS
        probe_columns = [name for name, *_ in con.execute("DESCRIBE probes").fetchall()]
        assert probe_columns[-4:] == ["answer_channel", "limit_source", "is_byok", "remedy_hint"]
        assert [name for name, *_ in con.execute("DESCRIBE model_results").fetchall()][-1] == "caveat"
        assert con.execute("SELECT model_id, answer_channel, is_byok FROM probes").fetchall() == [
            ("m", None, None)
        ]


def test_a_version_2_database_gains_the_endpoints_table_of_migration_3(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "migrations", store_db.migrations[:2])
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", 2)
    with storage.connect(db_path) as con:
        tables = {t for (t,) in con.execute("SHOW TABLES").fetchall()}
        assert "endpoints" not in tables
    monkeypatch.undo()
    with storage.connect(db_path) as con:
        assert storage.applied_versions(con) == ALL_VERSIONS
        columns = [name for name, *_ in con.execute("DESCRIBE endpoints").fetchall()]
        assert columns == list(storage.DB_SCHEMAS["endpoints"])
        assert con.execute("SELECT count(*) FROM endpoints").fetchall() == [(0,)]


def test_a_read_only_open_needs_every_migration_not_only_the_newest(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skipped = ALL_VERSIONS[-2]
    monkeypatch.setattr(store_db, "migrations", [m for m in store_db.migrations if m[0] != skipped])
    storage.connect(db_path).close()
    monkeypatch.undo()
    with pytest.raises(StorageError, match=f"missing: {skipped}"):
        storage.connect(db_path, read_only=True)
    storage.connect(db_path).close()  # a writing open applies it
    storage.connect(db_path, read_only=True).close()


def test_a_database_from_a_newer_program_is_refused(db_path: Path) -> None:
    with storage.connect(db_path) as con:
        con.execute("INSERT INTO schema_version VALUES (99, now())")
    for read_only in (False, True):
        with pytest.raises(StorageError, match="schema version 99, newer"):
            storage.connect(db_path, read_only=read_only)


def test_read_only_needs_an_existing_migrated_database(tmp_path: Path, db_path: Path) -> None:
    with pytest.raises(StorageError, match="no database at"):
        storage.connect(db_path, read_only=True)
    assert not db_path.exists()
    bare = tmp_path / "bare.duckdb"
    duckdb.connect(str(bare)).close()
    with pytest.raises(StorageError, match="schema version 0, this program needs"):
        storage.connect(bare, read_only=True)
    storage.connect(db_path).close()
    with storage.connect(db_path, read_only=True) as con:
        assert storage.list_runs(con).is_empty()


def test_in_memory_database() -> None:
    with storage.connect(":memory:") as con:
        assert storage.applied_versions(con) == ALL_VERSIONS
        assert storage.latest_run_id(con) is None


@pytest.mark.parametrize("content", [b"", b"hello, this is not a database" * 200])
def test_a_file_that_is_not_duckdb_is_a_clear_storage_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.duckdb"
    path.write_bytes(content)
    with pytest.raises(StorageError, match="is not a DuckDB database") as info:
        storage.connect(path, wait_s=5)
    assert not isinstance(info.value, DatabaseLockedError)
    assert str(path) in str(info.value)


def test_a_folder_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="is a folder"):
        storage.connect(tmp_path)


# --- locks ---------------------------------------------------------------------------------------

_HOLDER = textwrap.dedent(
    """
    import sys, time
    import duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


def hold_database(path: Path, seconds: float) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def release(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()
    if child.stdout:
        child.stdout.close()


def test_a_lock_held_by_another_process_fails_clearly_after_wait_s(db_path: Path) -> None:
    storage.connect(db_path).close()
    child = hold_database(db_path, 60)
    try:
        for read_only in (False, True):
            started = time.monotonic()
            with pytest.raises(DatabaseLockedError) as info:
                storage.connect(db_path, read_only=read_only, wait_s=0.4)
            elapsed = time.monotonic() - started
            assert 0.35 <= elapsed < 5
            message = str(info.value)
            assert message.startswith(f"another discovery run is using {db_path} (pid {child.pid}")
            assert "waited 0.4 s" in message
            # The message is built from DuckDB's own text, kept as the cause.
            holder = storage.parse_lock_conflict(str(info.value.__cause__))
            assert holder is not None and holder.pid == child.pid
    finally:
        release(child)


def test_connect_waits_for_the_other_process_to_let_go(db_path: Path) -> None:
    storage.connect(db_path).close()
    child = hold_database(db_path, 0.8)
    try:
        started = time.monotonic()
        with storage.connect(db_path, wait_s=30) as con:
            assert storage.applied_versions(con) == ALL_VERSIONS
        assert time.monotonic() - started >= 0.3
    finally:
        release(child)


@pytest.mark.parametrize(
    ("message", "pid", "program"),
    [
        (
            'IO Error: Could not set lock on file "/d/x.duckdb": Conflicting lock is held in '
            "/usr/bin/python3.12 (PID 4242). See also https://duckdb.org/docs/stable/connect/"
            "concurrency",
            4242,
            "/usr/bin/python3.12",
        ),
        (
            'IO Error: Could not set lock on file "/d/x.duckdb": Conflicting lock is held in '
            "/opt/My App/python (PID 7) by user ann. However, you would be able to open this "
            "database in read-only mode, e.g. by using the -readonly parameter in the CLI.",
            7,
            "/opt/My App/python",
        ),
        (
            'IO Error: Could not set lock on file "/d/x.duckdb": Resource temporarily unavailable',
            None,
            None,
        ),
        ("IO Error: File is already open in \nC:\\Python\\python.exe (PID 99)", 99, None),
        (
            'IO Error: Cannot open file "C:\\d\\x.duckdb": The process cannot access the file '
            "because it is being used by another process.",
            None,
            None,
        ),
    ],
)
def test_parse_lock_conflict_reads_duckdbs_messages(
    message: str, pid: int | None, program: str | None
) -> None:
    holder = storage.parse_lock_conflict(message)
    assert holder is not None
    assert holder.pid == pid
    if program is not None:
        assert holder.program == program


@pytest.mark.parametrize(
    "message",
    [
        'IO Error: Could not set lock on file "/nfs/x.duckdb": No locks available',
        'IO Error: The file "/d/x.duckdb" exists, but it is not a valid DuckDB database file!',
        'IO Error: Cannot open file "/d/x.duckdb": Permission denied',
    ],
)
def test_other_errors_are_not_lock_conflicts(message: str) -> None:
    assert storage.parse_lock_conflict(message) is None


# --- storing runs ----------------------------------------------------------------------------------


def drill_frame(run_id: str, outcomes: list[str]) -> pl.DataFrame:
    rows = [
        {
            **dict.fromkeys(DRILL_SCHEMA),
            "run_id": run_id,
            "client": "models_array",
            "arm": "rotation",
            "incident": "steady",
            "seq": seq,
            "outcome": outcome,
            "attempts": 1,
        }
        for seq, outcome in enumerate(outcomes, start=1)
    ]
    return pl.DataFrame(rows, schema=DRILL_SCHEMA)


def test_a_drill_is_stored_with_its_run_or_on_its_own_replacing_the_earlier_one(
    tmp_path: Path, con: Any
) -> None:
    folder = make_run(tmp_path / "runs", "r1")
    storage.write_table(folder / "drill.parquet", drill_frame("r1", ["ok", "error"]))
    storage.store_run(con, folder)
    assert counts(con, "r1")["drill"] == 2
    again = tmp_path / "again.parquet"
    storage.write_table(again, drill_frame("r1", ["ok", "ok", "ok"]))
    for _ in range(2):  # idempotent
        storage.store_drill(con, "r1", again)
    stored = storage.load_table(con, "drill", "r1")
    assert stored.schema == pl.Schema(DRILL_SCHEMA)
    assert stored.get_column("outcome").to_list() == ["ok", "ok", "ok"]
    assert counts(con, "r1")["runs"] == 1  # nothing else of the run changed


def test_store_run_loads_every_table_and_the_runs_row(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1", with_changes=True)
    storage.store_run(con, folder)
    assert counts(con, "r1") == {
        "runs": 1,
        "catalog": 4,
        "probes": 6,
        "model_results": 3,
        "rotation": 3,
        "changes": 1,
        "endpoints": 3,
        "drill": 0,  # no drill was asked for
    }
    runs = storage.list_runs(con)
    assert runs.schema == pl.Schema(storage.DB_SCHEMAS["runs"])
    row = runs.row(0, named=True)
    assert row["run_id"] == "r1"
    assert row["started_at"] == T0
    assert row["status"] == "completed"
    assert json.loads(row["notes"]) == ["n"]


def test_storing_twice_never_duplicates(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1", with_changes=True)
    storage.store_run(con, folder)
    once = counts(con, "r1")
    storage.store_run(con, folder)
    assert counts(con, "r1") == once
    assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1,)]


def test_two_runs_are_both_kept(tmp_path: Path, con: Any) -> None:
    storage.store_run(con, make_run(tmp_path / "runs", "r1", models=2))
    storage.store_run(con, make_run(tmp_path / "runs", "r2", offset_days=30, models=5))
    assert storage.list_runs(con).get_column("run_id").to_list() == ["r1", "r2"]
    assert counts(con, "r1")["model_results"] == 2
    assert counts(con, "r2")["model_results"] == 5


def test_restoring_after_a_parquet_file_changed_replaces_the_rows(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1", with_changes=True)
    other = make_run(tmp_path / "runs", "r0", offset_days=-30)
    storage.store_run(con, other)
    storage.store_run(con, folder)
    storage.write_table(
        folder / "model_results.parquet",
        results(result_row("vendor/m0:free", "failing", run_id="r1")),
    )
    (folder / "changes.parquet").unlink()  # an absent file: the table gets no rows for this run
    storage.write_run_info(folder, replace(storage.read_run_info(folder), quota_after=7))
    storage.store_run(con, folder)
    assert storage.load_table(con, "model_results", "r1").select("model_id", "verdict").rows() == [
        ("vendor/m0:free", "failing")
    ]
    assert counts(con, "r1")["changes"] == 0
    assert storage.load_table(con, "runs", "r1").get_column("quota_after").to_list() == [7]
    assert counts(con, "r0")["model_results"] == 3  # the other run is untouched


def test_the_run_id_comes_from_the_run_not_from_the_parquet_rows(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1")
    storage.write_table(
        folder / "rotation.parquet",
        frame(ROTATION_SCHEMA, [{"run_id": "stale", "purpose": "g", "rank": 1, "model_id": "m"}]),
    )
    storage.store_run(con, folder)
    assert counts(con, "r1")["rotation"] == 1
    assert counts(con, "stale")["rotation"] == 0


def test_a_parquet_file_missing_a_column_is_refused_before_anything_changes(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1")
    storage.store_run(con, folder)
    before = counts(con, "r1")
    storage.write_table(folder / "model_results.parquet", results(result_row("x", "working")).drop("tier"))
    with pytest.raises(StorageError, match=r"model_results\.parquet: missing column\(s\) tier"):
        storage.store_run(con, folder)
    assert counts(con, "r1") == before


def test_a_failure_inside_the_transaction_rolls_everything_back(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1")
    storage.store_run(con, folder)
    before = counts(con, "r1")
    bad_probes = probes_frame([probe("r1", "m")]).with_columns(pl.lit("not a number").alias("sample"))
    storage.write_table(folder / "probes.parquet", bad_probes)
    storage.write_table(folder / "model_results.parquet", results())  # would delete 3 rows
    storage.write_run_info(folder, storage.read_run_info(folder))
    with pytest.raises(StorageError, match=r"storing run r1 .* failed, the database is unchanged"):
        storage.store_run(con, folder)
    assert counts(con, "r1") == before
    # The connection is usable afterwards (no transaction left open).
    storage.store_run(con, make_run(tmp_path / "runs", "r2", offset_days=1))
    assert counts(con, "r2")["runs"] == 1


_KILLED_STORE = textwrap.dedent(
    """
    import os, signal, sys
    from freemodels import storage
    from freemodels.storage import database as db

    real_insert = db._insert_parquet
    calls = []

    def insert_then_die(con, table, run_id, path):
        real_insert(con, table, run_id, path)
        calls.append(table)
        if len(calls) == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)

    db._insert_parquet = insert_then_die
    con = storage.connect(sys.argv[1])
    storage.store_run(con, sys.argv[2])
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("kill_after", [1, 3])
def test_sigkill_while_storing_leaves_no_partial_run(tmp_path: Path, db_path: Path, kill_after: int) -> None:
    runs = tmp_path / "runs"
    with storage.connect(db_path) as con:
        storage.store_run(con, make_run(runs, "r0", offset_days=-30))
        kept = counts(con, "r0")
    folder = make_run(runs, "r1", with_changes=True)
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_STORE, str(db_path), str(folder), str(kill_after)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    with storage.connect(db_path, wait_s=10) as con:
        assert set(counts(con, "r1").values()) == {0}
        assert counts(con, "r0") == kept
        # Storing again (what a resumed run does) loads the whole run.
        storage.store_run(con, folder)
        assert counts(con, "r1")["probes"] == 6


# --- queries ---------------------------------------------------------------------------------------


def test_latest_and_previous_run_ids(tmp_path: Path, con: Any) -> None:
    runs = tmp_path / "runs"
    storage.store_run(con, make_run(runs, "s1", offset_days=0))
    storage.store_run(con, make_run(runs, "o1", offset_days=5, source="openrouter"))
    storage.store_run(con, make_run(runs, "s2", offset_days=10, status="failed"))
    storage.store_run(con, make_run(runs, "s3", offset_days=20))
    assert storage.latest_run_id(con) == "s3"
    assert storage.latest_run_id(con, source="openrouter") == "o1"
    assert storage.latest_run_id(con, source="base_url") is None
    # Runs that did not complete count only when asked.
    assert storage.previous_run_id(con, "s3") == "s1"
    assert storage.previous_run_id(con, "s3", completed_only=False) == "s2"
    assert storage.previous_run_id(con, "s1") is None
    assert storage.previous_run_id(con, "o1") is None
    # A run not stored yet: the latest earlier one of its source.
    assert storage.previous_run_id(con, "new", source="sandbox") == "s3"
    assert storage.previous_run_id(con, "new", source="sandbox", started_at=T0 + timedelta(days=15)) == "s1"
    assert storage.previous_run_id(con, "new", source="openrouter") == "o1"


def test_load_table_returns_the_schema_in_a_stable_order(tmp_path: Path, con: Any) -> None:
    storage.store_run(con, make_run(tmp_path / "runs", "r1"))
    for table, schema in storage.DB_SCHEMAS.items():
        loaded = storage.load_table(con, table, "r1")
        assert loaded.schema == pl.Schema(schema), table
        assert storage.load_table(con, table, "nope").schema == pl.Schema(schema)
    cat = storage.load_table(con, "catalog", "r1")
    assert cat.get_column("model_id").to_list() == sorted(cat.get_column("model_id").to_list())
    assert cat.get_column("run_id").unique().to_list() == ["r1"]
    assert cat.filter(pl.col("model_id") == "vendor/m0:free").get_column(
        "supported_parameters"
    ).to_list() == [["max_tokens"]]
    probes = storage.load_table(con, "probes", "r1")
    assert probes.get_column("started_at").to_list()[0] == T0
    with pytest.raises(StorageError, match="unknown table 'nope'"):
        storage.load_table(con, "nope", "r1")


def test_model_results_round_trip_through_the_database(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1")
    written = pl.read_parquet(folder / "model_results.parquet").cast(MODEL_RESULTS_SCHEMA)
    storage.store_run(con, folder)
    assert storage.load_table(con, "model_results", "r1").equals(written.sort("model_id"))


class CountingConnection:
    """Counts the statements sent through it."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self.statements: list[str] = []

    def sql(self, query: str, **kw: Any) -> Any:
        self.statements.append(query)
        return self._con.sql(query, **kw)

    def execute(self, query: str, *args: Any) -> Any:
        self.statements.append(query)
        return self._con.execute(query, *args)


def fill_history(con: duckdb.DuckDBPyConnection, runs: int = 120, free: int = 100) -> None:
    """``runs`` monthly runs with ``free`` free models (of 150 listed) each, straight in SQL."""
    con.execute(
        "INSERT INTO runs (run_id, started_at, source, base_url, status, notes) "
        "SELECT printf('run-%03d', i), TIMESTAMPTZ '2016-01-01 06:00:00+00' + to_months(i), "
        "CASE WHEN i % 10 = 9 THEN 'openrouter' ELSE 'sandbox' END, 'http://x', "
        "'completed', '[]' FROM range(?) t(i)",
        [runs],
    )
    con.execute(
        "INSERT INTO catalog (run_id, model_id, is_free) "
        "SELECT printf('run-%03d', i), printf('m/%03d', j), j < ? FROM range(?) a(i), range(150) b(j)",
        [free, runs],
    )
    # Per run: model j is failing when j % 4 == 0, untested when j % 10 == 1, else working;
    # run i has only i + 1 results when i < free (a growing history).
    con.execute(
        "INSERT INTO model_results (run_id, model_id, verdict, p50_total_ms) "
        "SELECT printf('run-%03d', i), printf('m/%03d', j), "
        "CASE WHEN j % 4 = 0 THEN 'failing' WHEN j % 10 = 1 THEN 'untested_quota' "
        "ELSE 'working' END, 100.0 * j "
        "FROM range(?) a(i), range(?) b(j) WHERE j <= i",
        [runs, free],
    )


def test_history_over_120_monthly_runs_is_one_quick_query(con: Any) -> None:
    fill_history(con)
    counting = CountingConnection(con)
    started = time.monotonic()
    hist = storage.history(counting)  # type: ignore[arg-type]
    elapsed = time.monotonic() - started
    assert len(counting.statements) == 1
    assert elapsed < 2.0
    assert hist.schema == pl.Schema(storage.HISTORY_SCHEMA)
    assert hist.height == 120
    assert hist.get_column("run_id").to_list() == [f"run-{i:03d}" for i in range(120)]
    assert hist.get_column("started_at").is_sorted()

    def expected(i: int) -> dict[str, Any]:
        js = range(min(i, 99) + 1)
        failing = [j for j in js if j % 4 == 0]
        untested = [j for j in js if j % 4 != 0 and j % 10 == 1]
        working = [j for j in js if j % 4 != 0 and j % 10 != 1]
        p50s = sorted(100.0 * j for j in working)
        median = None
        if p50s:
            mid = len(p50s) // 2
            median = p50s[mid] if len(p50s) % 2 else (p50s[mid - 1] + p50s[mid]) / 2
        return {
            "catalog_size": 150,
            "free": 100,
            "tested": len(js) - len(untested),
            "working": len(working),
            "degraded": 0,
            "failing": len(failing),
            "median_p50_total_ms": median,
        }

    for i in (0, 1, 7, 50, 119):
        row = hist.row(i, named=True)
        assert {k: row[k] for k in expected(i)} == expected(i), i
    sandbox = storage.history(con, source="sandbox")
    assert sandbox.height == 108
    assert set(sandbox.get_column("source")) == {"sandbox"}


def test_history_of_runs_without_results_has_zero_counts(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1")
    for name in ("model_results.parquet", "catalog.parquet"):
        (folder / name).unlink()
    storage.store_run(con, folder)
    row = storage.history(con).row(0, named=True)
    assert (row["catalog_size"], row["free"], row["tested"], row["working"]) == (0, 0, 0, 0)
    assert row["median_p50_total_ms"] is None


def test_run_timestamps_are_utc_whatever_the_input_zone(tmp_path: Path, con: Any) -> None:
    folder = make_run(tmp_path / "runs", "r1")
    local = datetime(2026, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=2)))
    storage.write_run_info(folder, replace(storage.read_run_info(folder), started_at=local))
    storage.store_run(con, folder)
    assert storage.list_runs(con).get_column("started_at").to_list() == [
        datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
    ]


def test_a_version_3_database_gains_the_watch_tables_and_its_runs_become_snapshots(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "migrations", store_db.migrations[:3])
    monkeypatch.setattr(store_db, "SCHEMA_VERSION", 3)
    with storage.connect(db_path) as con:
        con.execute(
            "INSERT INTO runs (run_id, started_at, source, status) "
            "VALUES ('r1', TIMESTAMPTZ '2026-11-01 06:00:00+00', 'sandbox', 'completed')"
        )
        con.execute(
            "INSERT INTO catalog (run_id, model_id, is_free, expiration_date) VALUES "
            "('r1', 'a/free:free', true, '2026-11-20'), ('r1', 'a/paid', false, NULL)"
        )
        con.execute(
            "INSERT INTO endpoints (run_id, model_id, listing, provider) VALUES "
            "('r1', 'a/free:free', 'endpoints', 'P1'), ('r1', 'a/free:free', 'endpoints', 'P2')"
        )
        assert "watches" not in {t for (t,) in con.execute("SHOW TABLES").fetchall()}
    monkeypatch.undo()
    with storage.connect(db_path) as con:
        assert storage.applied_versions(con)[-1] == storage.SCHEMA_VERSION == 5
        rows = con.execute(
            "SELECT snapshot_id, kind, model_id, listed, free, endpoints, listing, expiration_date "
            "FROM availability ORDER BY model_id"
        ).fetchall()
    assert rows == [
        ("r1", "run", "a/free:free", True, True, 2, "endpoints", "2026-11-20"),
        ("r1", "run", "a/paid", True, False, None, None, None),
    ]

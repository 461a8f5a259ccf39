"""The run folder: run ids, atomic files, run.json, probe checkpoints, finding the run to resume."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from freemodels import storage
from freemodels.errors import RunNotFoundError, StorageError
from freemodels.failures import Failure
from freemodels.records import (
    ADDED_COLUMNS,
    PROBES_SCHEMA,
    ProbeResult,
    RunInfo,
    RunStatus,
    RunStep,
    probes_frame,
)

T0 = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
REPO_ROOT = Path(__file__).resolve().parents[2]


def probe(
    run_id: str,
    model_id: str,
    task: str = "exact",
    *,
    sample: int = 0,
    attempt: int = 1,
    failure: Failure | None = None,
    total_ms: float | None = 800.0,
) -> ProbeResult:
    return ProbeResult(
        run_id=run_id,
        model_id=model_id,
        family=model_id.split(":")[0],
        task=task,
        sample=sample,
        attempt=attempt,
        started_at=T0,
        http_status=200 if failure is None else 429,
        failure=failure,
        passed=failure is None,
        total_ms=total_ms,
    )


def run_info(
    run_id: str,
    *,
    offset_days: float = 0,
    source: str = "sandbox",
    status: str = "completed",
    **extra: object,
) -> RunInfo:
    return RunInfo(
        run_id=run_id,
        started_at=T0 + timedelta(days=offset_days),
        source=source,
        base_url="http://127.0.0.1:8000/api/v1",
        status=status,
        **extra,  # type: ignore[arg-type]
    )


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- run ids ---------------------------------------------------------------------------------------


def test_new_run_id_is_utc_sortable_unique_and_folder_safe() -> None:
    ids = [storage.new_run_id(T0 + timedelta(seconds=i)) for i in range(50)]
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(storage.new_run_id(T0) for _ in range(50))) == 50
    assert storage.new_run_id(T0).startswith("20260101T060000Z-")
    paris = timezone(timedelta(hours=1))
    assert storage.new_run_id(datetime(2026, 1, 1, 7, 0, tzinfo=paris)).startswith("20260101T060000Z-")
    assert storage.new_run_id(datetime(2026, 1, 1, 6, 0)).startswith("20260101T060000Z-")
    for run_id in ids[:3]:
        assert storage.run_dir("data/runs", run_id) == Path("data/runs") / run_id


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a\\b", ".hidden", "x..y", "-x", "a b"])
def test_run_dir_rejects_ids_that_are_not_plain_folder_names(bad: str) -> None:
    with pytest.raises(StorageError, match="invalid run id"):
        storage.run_dir("runs", bad)


# --- atomic tables -------------------------------------------------------------------------------


def test_write_table_creates_folders_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "t.parquet"
    storage.write_table(target, pl.DataFrame({"x": [1, 2]}))
    storage.write_table(target, pl.DataFrame({"x": [3]}))
    assert pl.read_parquet(target).get_column("x").to_list() == [3]
    assert files_in(target.parent) == ["t.parquet"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "t.parquet"
    storage.write_table(target, pl.DataFrame({"x": [1]}))

    def half_then_fail(self: pl.DataFrame, file: object, *args: object, **kw: object) -> None:
        file.write(b"PAR1 half a file")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        storage.write_table(target, pl.DataFrame({"x": [2]}))
    monkeypatch.undo()
    assert pl.read_parquet(target).get_column("x").to_list() == [1]
    assert files_in(tmp_path) == ["t.parquet"]


def test_write_table_with_a_schema_selects_orders_and_casts(tmp_path: Path) -> None:
    schema = {"a": pl.Int64(), "b": pl.String()}
    path = storage.write_table(
        tmp_path / "t.parquet", pl.DataFrame({"b": ["x"], "extra": [1], "a": [7]}), schema=schema
    )
    assert pl.read_parquet(path).schema == pl.Schema(schema)
    with pytest.raises(StorageError, match="missing column"):
        storage.write_table(tmp_path / "u.parquet", pl.DataFrame({"a": [1]}), schema=schema)


def test_read_table_of_a_damaged_file_is_a_storage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(StorageError, match="cannot read"):
        storage.read_table(bad)


# --- run.json --------------------------------------------------------------------------------------


def test_run_info_round_trip(tmp_path: Path) -> None:
    info = run_info(
        "r1",
        status="failed",
        status_reason="disk full at /data; free some space",
        steps_done=["probed", "stored"],
        untested_models=4,
        owner_pid=123,
        owner_host="host",
        owner_started=456,
        finished_at=T0 + timedelta(hours=1),
        quota_before=50,
        quota_after=0,
        quota_limit=50,
        prefect_flow_run_id="abc",
        catalog_fetched_at=T0,
        suite_version="1",
        settings_json='{"x": 1}',
        notes=["sandbox catalog", "é ✓"],
    )
    folder = tmp_path / "r1"
    storage.write_run_info(folder, info)
    assert storage.read_run_info(folder) == info
    assert json.loads((folder / "run.json").read_text())["started_at"] == "2026-01-01T06:00:00+00:00"


def test_run_info_naive_datetimes_are_taken_as_utc(tmp_path: Path) -> None:
    storage.write_run_info(tmp_path / "r", replace(run_info("r"), started_at=datetime(2026, 1, 1)))
    assert storage.read_run_info(tmp_path / "r").started_at == datetime(2026, 1, 1, tzinfo=UTC)


def test_reading_a_missing_or_bad_run_json(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError, match=r"run\.json is missing"):
        storage.read_run_info(tmp_path / "nothing")
    folder = tmp_path / "r"
    folder.mkdir()
    cases = {
        "{not json": "not valid JSON",
        "[]": "expected a JSON object",
        json.dumps({"run_id": "r"}): "missing key",
        json.dumps(
            {"run_id": "r", "started_at": "x", "source": "s", "base_url": "u"}
        ): "started_at must be an ISO 8601",
        json.dumps(
            {"run_id": "r", "started_at": T0.isoformat(), "source": "s", "base_url": "u", "zz": 1}
        ): "unknown key",
        json.dumps(
            {
                "run_id": "r",
                "started_at": T0.isoformat(),
                "source": "s",
                "base_url": "u",
                "quota_before": "50",
            }
        ): "quota_before must be an integer",
        json.dumps(
            {"run_id": "other", "started_at": T0.isoformat(), "source": "s", "base_url": "u"}
        ): "does not match its folder",
    }
    for text, message in cases.items():
        (folder / "run.json").write_text(text)
        with pytest.raises(StorageError, match=message):
            storage.read_run_info(folder)


run_infos = st.builds(
    RunInfo,
    run_id=st.just("r"),
    started_at=st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    source=st.text(),
    base_url=st.text(),
    status=st.sampled_from([s.value for s in RunStatus]),
    status_reason=st.none() | st.text(),
    steps_done=st.lists(st.sampled_from([s.value for s in RunStep]), max_size=3),
    untested_models=st.none() | st.integers(min_value=0),
    finished_at=st.none() | st.datetimes(min_value=datetime(1990, 1, 1), timezones=st.just(UTC)),
    quota_before=st.none() | st.integers(),
    quota_after=st.none() | st.integers(),
    quota_limit=st.none() | st.integers(),
    prefect_flow_run_id=st.none() | st.text(),
    catalog_fetched_at=st.none() | st.datetimes(timezones=st.just(UTC)),
    suite_version=st.text(),
    settings_json=st.text(),
    notes=st.lists(st.text(), max_size=3),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(info=run_infos)
def test_run_info_json_round_trip_property(tmp_path: Path, info: RunInfo) -> None:
    storage.write_run_info(tmp_path / "r", info)
    assert storage.read_run_info(tmp_path / "r") == info


# --- probe checkpoints -----------------------------------------------------------------------------


def test_checkpoint_parts_are_numbered_and_read_back_in_order(tmp_path: Path) -> None:
    first = [probe("r", "a/m:free", "exact"), probe("r", "a/m:free", "json")]
    second = [probe("r", "b/m:free", "exact")]
    assert storage.append_probe_checkpoint(tmp_path, first) == tmp_path / "probes/part-000001.parquet"
    assert storage.append_probe_checkpoint(tmp_path, second) == tmp_path / "probes/part-000002.parquet"
    assert storage.append_probe_checkpoint(tmp_path, []) is None
    assert files_in(tmp_path / "probes") == ["part-000001.parquet", "part-000002.parquet"]
    back = storage.read_probe_checkpoints(tmp_path)
    assert_frame_equal(back, probes_frame(first + second))


def test_no_checkpoints_is_an_empty_frame_with_the_probe_schema(tmp_path: Path) -> None:
    back = storage.read_probe_checkpoints(tmp_path / "missing")
    assert back.is_empty()
    assert back.schema == pl.Schema(PROBES_SCHEMA)


def test_a_part_written_twice_before_a_kill_is_counted_once(tmp_path: Path) -> None:
    batch = [probe("r", "a/m:free", "exact"), probe("r", "a/m:free", "json")]
    storage.append_probe_checkpoint(tmp_path, batch)
    # The same attempts again (a resumed run re-checkpointing); the later copy wins.
    storage.append_probe_checkpoint(tmp_path, [replace(p, total_ms=900.0) for p in batch])
    storage.append_probe_checkpoint(tmp_path, [probe("r", "a/m:free", "exact", attempt=2)])
    back = storage.read_probe_checkpoints(tmp_path)
    assert back.select("task", "attempt", "total_ms").rows() == [
        ("exact", 1, 900.0),
        ("json", 1, 900.0),
        ("exact", 2, 800.0),
    ]


def test_checkpoint_dataframes_are_conformed_and_checked(tmp_path: Path) -> None:
    frame = probes_frame([probe("r", "a/m:free")])
    shuffled = frame.select(list(reversed(frame.columns)))
    storage.append_probe_checkpoint(tmp_path, shuffled)
    assert_frame_equal(storage.read_probe_checkpoints(tmp_path), frame)
    with pytest.raises(StorageError, match="missing column"):
        storage.append_probe_checkpoint(tmp_path, frame.drop("attempt"))


def test_a_run_killed_mid_write_leaves_readable_parts_and_ignored_temp_files(
    tmp_path: Path,
) -> None:
    storage.append_probe_checkpoint(tmp_path, [probe("r", "a/m:free")])
    probes_dir = tmp_path / "probes"
    # What a kill during a write leaves behind: a half-written hidden temp file.
    (probes_dir / f".part.parquet.{os.getpid()}.deadbeef.tmp").write_bytes(b"PAR1\x00\x01half")
    (probes_dir / "part-000002.parquet.tmp").write_bytes(b"junk")
    (probes_dir / "notes.txt").write_text("not a part")
    back = storage.read_probe_checkpoints(tmp_path)
    assert back.height == 1
    # The next part does not collide with the leftovers.
    assert storage.append_probe_checkpoint(tmp_path, [probe("r", "b/m:free")]).name == ("part-000002.parquet")
    assert storage.read_probe_checkpoints(tmp_path).height == 2


def test_a_damaged_part_is_reported_not_skipped(tmp_path: Path) -> None:
    storage.append_probe_checkpoint(tmp_path, [probe("r", "a/m:free")])
    (tmp_path / "probes" / "part-000002.parquet").write_bytes(b"garbage")
    with pytest.raises(StorageError, match="part-000002"):
        storage.read_probe_checkpoints(tmp_path)


def test_concurrent_writers_never_overwrite_each_others_parts(tmp_path: Path) -> None:
    def writer(n: int) -> None:
        for i in range(10):
            storage.append_probe_checkpoint(tmp_path, [probe("r", f"w{n}/m:free", sample=i)])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list((tmp_path / "probes").glob("part-*.parquet"))) == 60
    assert storage.read_probe_checkpoints(tmp_path).height == 60


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from freemodels import storage
    from freemodels.records import ProbeResult

    folder, name, parts = sys.argv[1], sys.argv[2], int(sys.argv[3])  # parts 0: until killed
    i = 0
    print("ready", flush=True)
    while parts == 0 or i < parts:
        batch = [
            ProbeResult(run_id="r", model_id=f"{name}{i}-{k}", family="f", task="exact", sample=0,
                        attempt=1, started_at=datetime.now(UTC), http_status=200, failure=None,
                        passed=True, reply_excerpt="x" * 2000)
            for k in range(50)
        ]
        storage.append_probe_checkpoint(folder, batch)
        i += 1
    """
)


def start_writer(folder: Path, name: str, parts: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(folder), name, str(parts)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_two_processes_checkpointing_into_one_run_lose_nothing(tmp_path: Path) -> None:
    children = [start_writer(tmp_path, name, 15) for name in ("a", "b")]
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0, out
    assert len(list((tmp_path / "probes").glob("part-*.parquet"))) == 30
    assert storage.read_probe_checkpoints(tmp_path).height == 30 * 50


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_while_checkpointing_leaves_whole_parts_only(tmp_path: Path) -> None:
    child = start_writer(tmp_path, "m", 0)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 20
        while len(list((tmp_path / "probes").glob("part-*.parquet"))) < 5:
            assert time.monotonic() < deadline, "the writer produced no parts"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout:
            child.stdout.close()
    parts = len(list((tmp_path / "probes").glob("part-*.parquet")))
    back = storage.read_probe_checkpoints(tmp_path)
    assert back.height == parts * 50
    assert back.select("model_id", "task", "sample", "attempt").is_duplicated().sum() == 0


probe_results = st.builds(
    ProbeResult,
    run_id=st.text(max_size=20),
    model_id=st.text(max_size=40),
    family=st.text(max_size=20),
    task=st.sampled_from(["exact", "json", "transform"]),
    sample=st.integers(min_value=0, max_value=20),
    attempt=st.just(1),
    started_at=st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    http_status=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    failure=st.none() | st.sampled_from(list(Failure)),
    passed=st.booleans(),
    error_code=st.none() | st.text(),
    message=st.none() | st.text(),
    ttft_any_ms=st.none() | st.floats(allow_nan=False),
    ttft_content_ms=st.none() | st.floats(allow_nan=False),
    total_ms=st.none() | st.floats(allow_nan=False),
    completion_tokens=st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    reasoning_tokens=st.none() | st.integers(min_value=0, max_value=10**9),
    finish_reason=st.none() | st.text(max_size=10),
    generation_id=st.none() | st.text(max_size=30),
    provider=st.none() | st.text(max_size=10),
    cache_status=st.none() | st.text(max_size=5),
    cost=st.none() | st.floats(allow_nan=False),
    retry_after_s=st.none() | st.floats(allow_nan=False),
    reply_excerpt=st.none() | st.text(),
    server_ttft_ms=st.none() | st.floats(allow_nan=False),
    server_total_ms=st.none() | st.floats(allow_nan=False),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(probe_results, max_size=12))
def test_probe_results_round_trip_through_parquet(tmp_path: Path, rows: list[ProbeResult]) -> None:
    # Distinct attempt numbers, so deduplication keeps every row.
    rows = [replace(r, attempt=i + 1) for i, r in enumerate(rows)]
    expected = probes_frame(rows)
    path = storage.write_table(tmp_path / "probes.parquet", expected)
    assert_frame_equal(storage.read_table(path, PROBES_SCHEMA), expected)
    folder = tmp_path / f"run-{time.monotonic_ns()}"
    storage.append_probe_checkpoint(folder, rows)
    assert_frame_equal(storage.read_probe_checkpoints(folder), expected)


# --- what to resume --------------------------------------------------------------------------------


def test_completed_probe_keys_and_attempt_numbers(tmp_path: Path) -> None:
    rate = Failure.RATE_LIMIT_ACCOUNT
    rows = [
        probe("r", "ok:free", "exact"),  # answered
        probe("r", "bad:free", "exact", failure=Failure.PROVIDER_ERROR),  # a result, even if failed
        probe("r", "quota:free", "exact", failure=rate),  # never reached the model: send again
        probe("r", "later:free", "exact", failure=rate),
        probe("r", "later:free", "exact", attempt=2),  # a later attempt got through
        probe("r", "again:free", "json", sample=1, attempt=1),
        probe("r", "again:free", "json", sample=1, attempt=2, failure=rate),  # latest: quota
    ]
    storage.append_probe_checkpoint(tmp_path, rows)
    done = storage.read_probe_checkpoints(tmp_path)
    assert storage.completed_probe_keys(done) == {
        ("ok:free", "exact", 0),
        ("bad:free", "exact", 0),
        ("later:free", "exact", 0),
    }
    assert storage.max_attempts_by_probe(done) == {
        ("ok:free", "exact", 0): 1,
        ("bad:free", "exact", 0): 1,
        ("quota:free", "exact", 0): 1,
        ("later:free", "exact", 0): 2,
        ("again:free", "json", 1): 2,
    }
    empty = storage.read_probe_checkpoints(tmp_path / "none")
    assert storage.completed_probe_keys(empty) == set()
    assert storage.max_attempts_by_probe(empty) == {}


def test_a_legacy_partial_run_reads_as_completed(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "r"
    storage.write_run_info(folder, run_info("r", status="partial"))
    assert storage.read_run_info(folder).status == "completed"


def test_run_folders_lists_only_folders_with_a_run_json(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert storage.run_folders(runs) == []
    storage.write_run_info(runs / "b", run_info("b"))
    storage.write_run_info(runs / "a", run_info("a"))
    (runs / "killed-before-run-json").mkdir()
    assert [f.name for f in storage.run_folders(runs)] == ["a", "b"]


def test_candidates_are_kept_with_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    assert storage.read_candidates_of(folder) == []
    storage.write_candidates(folder, ["a/b:free", "é/ü"])
    assert storage.read_candidates_of(folder) == ["a/b:free", "é/ü"]
    (folder / storage.CANDIDATES_FILE).write_text('{"not": "a list"}')
    with pytest.raises(StorageError, match="expected a JSON list"):
        storage.read_candidates_of(folder)


def test_a_checkpoint_written_before_the_added_columns_reads_them_as_nulls(tmp_path: Path) -> None:
    old_schema = {k: v for k, v in PROBES_SCHEMA.items() if k not in ADDED_COLUMNS["probes"]}
    keys = {"run_id": "r", "model_id": "m", "task": "t", "sample": 0, "attempt": 1}
    frame = pl.DataFrame([{name: keys.get(name) for name in old_schema}], schema=old_schema)
    path = tmp_path / "old.parquet"
    frame.write_parquet(path)
    read = storage.read_table(path, PROBES_SCHEMA)
    assert read.columns == list(PROBES_SCHEMA)
    assert read.row(0, named=True)["answer_channel"] is None
    assert read.row(0, named=True)["model_id"] == "m"
    with pytest.raises(StorageError, match="missing column"):
        storage.read_table(path, {**PROBES_SCHEMA, "not_added_later": pl.String()})


def _fail_first_append(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The next checkpoint part fails with ``OSError(code)``; later ones are written."""
    from freemodels.storage import checkpoint as checkpoint_module

    real = storage.append_probe_checkpoint
    failures = iter([OSError(code, os.strerror(code))])

    def append(run_dir, results):  # type: ignore[no-untyped-def]
        error = next(failures, None)
        if error is not None:
            raise error
        return real(run_dir, results)

    monkeypatch.setattr(checkpoint_module.runfolder, "append_probe_checkpoint", append)


def test_a_full_disk_gives_back_the_reserve_saves_the_answers_and_still_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_first_append(monkeypatch, errno.ENOSPC)
    asked: list[bool] = []
    writer = storage.CheckpointWriter(
        tmp_path, batch=1, source="sandbox", on_disk_full=lambda: asked.append(True) or True
    )
    with pytest.raises(StorageError, match=r"^disk full at .*probes; free some space$"):
        writer.add(probe("r", "m"))
    assert asked == [True]
    assert writer.pending == 0  # written with the room that was given back
    saved = storage.read_probe_checkpoints(tmp_path)
    assert saved.height == 1 and saved.item(0, "source") == "sandbox"


def test_a_write_error_keeps_the_answers_for_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_first_append(monkeypatch, errno.EACCES)
    writer = storage.CheckpointWriter(tmp_path, batch=1)
    with pytest.raises(StorageError, match="permission denied at"):
        writer.add(probe("r", "m"))
    assert writer.pending == 1
    writer.flush()
    assert writer.pending == 0 and storage.read_probe_checkpoints(tmp_path).height == 1

"""The run lifecycle: effective status, which run a resume continues, abandoning, recording ends."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from freemodels import storage
from freemodels.errors import ConfigError, RunNotFoundError
from freemodels.records import RunInfo, RunStatus, RunStep
from freemodels.runs import (
    KILLED_REASON,
    RESERVE_FILE,
    RunRecorder,
    abandon,
    all_runs,
    default_resume_candidates,
    pick_run_to_resume,
    this_process,
    view,
)

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def info(
    run_id: str, status: RunStatus, *, days: int = 0, source: str = "sandbox", **extra: object
) -> RunInfo:
    return RunInfo(
        run_id=run_id,
        started_at=T0 + timedelta(days=days),
        source=source,
        base_url="http://127.0.0.1:1/api/v1",
        status=status.value,
        **extra,  # type: ignore[arg-type]
    )


def write(runs: Path, run: RunInfo) -> None:
    storage.write_run_info(runs / run.run_id, run)


def dead_pid() -> int:
    """A pid that belonged to a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_running_run_whose_process_is_gone_shows_as_interrupted() -> None:
    pid, host, started = this_process()
    alive = view(info("a", RunStatus.RUNNING, owner_pid=pid, owner_host=host, owner_started=started))
    assert alive.status is RunStatus.RUNNING
    gone = view(info("b", RunStatus.RUNNING, owner_pid=dead_pid(), owner_host=host))
    assert gone.status is RunStatus.INTERRUPTED and gone.reason == KILLED_REASON
    reused = view(
        info("c", RunStatus.RUNNING, owner_pid=pid, owner_host=host, owner_started=(started or 0) + 1)
    )
    assert reused.status is RunStatus.INTERRUPTED  # the pid now belongs to another process
    elsewhere = view(info("d", RunStatus.RUNNING, owner_pid=1, owner_host="another-host"))
    assert elsewhere.status is RunStatus.RUNNING  # this machine cannot tell: taken as alive


def test_plain_resume_picks_the_newest_interrupted_run_never_a_failed_one(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write(runs, info("r1-interrupted", RunStatus.INTERRUPTED, days=0))
    write(runs, info("r2-failed", RunStatus.FAILED, days=1, status_reason="disk full"))
    write(runs, info("r3-completed", RunStatus.COMPLETED, days=2))
    write(runs, info("r4-abandoned", RunStatus.ABANDONED, days=3))
    assert pick_run_to_resume(runs, "latest").run_id == "r1-interrupted"
    # By id, a failed run can be resumed; an abandoned or fully completed one cannot.
    assert pick_run_to_resume(runs, "r2-failed").status is RunStatus.FAILED
    with pytest.raises(ConfigError, match="r4-abandoned was abandoned"):
        pick_run_to_resume(runs, "r4-abandoned")
    with pytest.raises(ConfigError, match="r3-completed is completed with every model tested"):
        pick_run_to_resume(runs, "r3-completed")
    with pytest.raises(RunNotFoundError, match="no run r9"):
        pick_run_to_resume(runs, "r9")


def test_a_completed_run_with_untested_models_is_continued_only_while_it_is_the_newest(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    write(runs, info("a-partial", RunStatus.COMPLETED, days=0, untested_models=4))
    assert pick_run_to_resume(runs, "latest").run_id == "a-partial"
    write(runs, info("b-full", RunStatus.COMPLETED, days=30))  # a later complete run of the source
    assert default_resume_candidates(all_runs(runs)) == []
    with pytest.raises(RunNotFoundError, match="no unfinished run to resume"):
        pick_run_to_resume(runs, "latest")
    assert pick_run_to_resume(runs, "a-partial").untested == 4  # still possible by id
    write(runs, info("c-other-source", RunStatus.COMPLETED, days=40, source="openrouter", untested_models=1))
    assert pick_run_to_resume(runs, "latest").run_id == "c-other-source"


def test_a_live_running_run_is_neither_resumed_nor_abandoned(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    pid, host, started = this_process()
    write(runs, info("live", RunStatus.RUNNING, owner_pid=pid, owner_host=host, owner_started=started))
    with pytest.raises(ConfigError, match=f"live is still running \\(process {pid}"):
        pick_run_to_resume(runs, "live")
    with pytest.raises(ConfigError, match="is running"):
        abandon(runs, tmp_path / "db.duckdb", "live")


def test_abandon_records_the_status_in_the_folder_and_the_database(tmp_path: Path) -> None:
    runs, db = tmp_path / "runs", tmp_path / "db.duckdb"
    write(runs, info("r", RunStatus.FAILED, status_reason="cannot connect to host"))
    done = abandon(runs, db, "r", now=T0)
    assert done.status == "abandoned"
    assert done.status_reason == "abandoned on 2026-11-01 06:00 UTC (was failed: cannot connect to host)"
    assert storage.read_run_info(runs / "r").status == "abandoned"
    with storage.connect(db, read_only=True) as con:
        assert con.execute("SELECT status FROM runs WHERE run_id = 'r'").fetchall() == [("abandoned",)]
    assert abandon(runs, db, "r") == storage.read_run_info(runs / "r")  # again: nothing changes


def test_the_recorder_mirrors_each_change_and_keeps_a_disk_reserve(tmp_path: Path) -> None:
    folder, db = tmp_path / "runs" / "r", tmp_path / "db.duckdb"
    recorder = RunRecorder(folder, info("r", RunStatus.RUNNING), db)
    recorder.begin()
    assert (folder / RESERVE_FILE).stat().st_size == 1024 * 1024
    assert recorder.info.owner_pid == os.getpid()
    recorder.step_done(RunStep.PROBED)
    recorder.step_done(RunStep.STORED)
    assert recorder.done(RunStep.STORED) and not recorder.done(RunStep.RENDERED)
    recorder.end(RunStatus.FAILED, "disk full at /x; free some space")
    assert not (folder / RESERVE_FILE).exists()
    stored = storage.read_run_info(folder)
    assert (stored.status, stored.status_reason, stored.owner_pid) == (
        "failed",
        "disk full at /x; free some space",
        None,
    )
    assert stored.steps_done == ["probed", "stored"]
    with storage.connect(db, read_only=True) as con:
        row = con.execute("SELECT status, status_reason, steps_done FROM runs").fetchall()
    assert row == [("failed", "disk full at /x; free some space", '["probed", "stored"]')]
    recorder.begin()
    recorder.restart_steps(RunStep.PROBED)
    assert storage.read_run_info(folder).steps_done == ["probed"]
    recorder.end(RunStatus.COMPLETED)
    assert replace(storage.read_run_info(folder), finished_at=None).status == "completed"

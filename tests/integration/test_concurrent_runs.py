"""Two discoveries against one data folder, and a database another process holds.

DuckDB lets one process write a file at a time. A run opens the database briefly: before its first
request (the health check, then its ``runs`` row), at each change of its status, and to store and
render. Two runs therefore probe side by side and take turns on the file; :func:`freemodels.storage.connect`
waits for the other process (30 s), then gives up with :class:`DatabaseLockedError`. A database held
before the run starts is found before any request is sent; one taken while the run probes fails the
run with one line, and ``--resume RUN_ID`` completes it without sending a probe again.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import polars as pl
import pytest

from freemodels import storage
from tests.integration.sandbox_runs import (
    FREE,
    checkpointed,
    only,
    run_folders,
    start_discovery,
    subprocess_env,
    table,
    wait_for,
    write_scenario,
)

pytestmark = pytest.mark.integration

MODELS = [FREE[0], FREE[11]]
PROBES = len(MODELS) * 3


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    return write_scenario(
        tmp_path / "small.json",
        {
            "catalog": only(MODELS),
            "defaults": {"behavior": "ok", "ttft_ms": 20, "total_ms": 40, "keepalive_ms": 0},
        },
    )


def _assert_stored_whole(db: Path, folder: Path) -> None:
    """The database holds exactly the run folder's rows, and the folder says it is completed."""
    run_id = folder.name
    info = storage.read_run_info(folder)
    assert info.status == "completed"
    assert "stored" in info.steps_done and "rendered" in info.steps_done
    for name, file_name in storage.TABLE_FILES.items():
        path = folder / file_name
        on_disk = pl.read_parquet(path).height if path.is_file() else 0  # the drill's only when drilled
        assert table(db, name, run_id).height == on_disk, (run_id, name)
    assert table(db, "probes", run_id).height == PROBES


def _hold_database(db: Path) -> subprocess.Popen[str]:
    """Another process that opens the database for writing and keeps it until killed."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()
    if holder.stdout:
        holder.stdout.close()


def _args(scenario: Path, data: Path, docs: Path) -> list[str]:
    return [
        "--source",
        "sandbox",
        "--scenario",
        str(scenario),
        "--data-dir",
        str(data),
        "--docs-dir",
        str(docs),
    ]


def test_two_runs_started_at_once_take_turns_on_the_database(
    tmp_path: Path, scenario: Path, prefect_harness: None
) -> None:
    """Two runs start together: ``discovery run`` in a child process and the same command in this
    process (on a thread; a second child would only add another interpreter start-up). They probe side
    by side and take turns on the database; both complete, and each run's rows in the database are
    exactly its own files."""
    import prefect.settings

    from flows.cli import main

    data, docs = tmp_path / "data", tmp_path / "docs"
    db = data / "discovery.duckdb"
    env = subprocess_env(prefect.settings.PREFECT_API_URL.value(), tmp_path / "prefect-home")
    args = _args(scenario, data, docs)
    log = tmp_path / "child-run.log"
    child = start_discovery(args, env, log)
    codes: list[int] = []
    here = threading.Thread(target=lambda: codes.append(main(["run", *args])), name="second-run")
    here.start()
    try:
        here.join(timeout=180)
        child.wait(timeout=180)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, log.read_text(errors="replace")[-3000:]
    assert "completed" in log.read_text(errors="replace")
    assert codes == [0]
    folders = run_folders(data)
    assert len(folders) == 2
    runs = table(db, "runs")
    assert sorted(runs.get_column("run_id").to_list()) == [f.name for f in folders]
    assert set(runs.get_column("status").to_list()) == {"completed"}
    for folder in folders:
        _assert_stored_whole(db, folder)
    assert (docs / "final-report.md").is_file()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    import duckdb
    for _ in range(600):  # a run may hold the file for a moment: wait for it (at most 30 s)
        try:
            con = duckdb.connect(sys.argv[1])
            break
        except duckdb.IOException:
            time.sleep(0.05)
    print("locked", flush=True)
    time.sleep(120)
    """
)


def test_a_database_held_before_the_run_is_refused_before_any_request(
    tmp_path: Path,
    scenario: Path,
    prefect_harness: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another process holds the database longer than the run waits (30 s, shortened to 0.5 s here):
    the run ends with one clear line and exit code 2 before it records anything or sends a request."""
    from flows.cli import main

    data, docs = tmp_path / "data", tmp_path / "docs"
    db = data / "discovery.duckdb"
    storage.connect(db).close()
    monkeypatch.setattr(storage, "connect", functools.partial(storage.connect, wait_s=0.5))
    holder = _hold_database(db)
    try:
        capsys.readouterr()
        assert main(["run", *_args(scenario, data, docs)]) == 2
        err = capsys.readouterr().err
    finally:
        _release(holder)
    (line,) = [line for line in err.splitlines() if line.startswith("discovery:")]
    assert line.startswith(f"discovery: error: another discovery run is using {db} (pid {holder.pid}")
    assert line.endswith("waited 0.5 s. Wait for it to finish or stop it, then try again.")
    assert "Traceback" not in err
    assert run_folders(data) == []
    assert table(db, "runs").is_empty()


def test_a_database_taken_while_probing_fails_the_run_and_resume_completes_it(
    tmp_path: Path,
    prefect_harness: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The database is taken by another process while the run probes: the run fails with one line
    naming the database and the run to resume (exit 1), its probes stay checkpointed, ``discovery
    runs`` lists it as failed with the reason, a plain ``--resume`` does not pick it, and
    ``--resume RUN_ID`` stores it later without sending a probe again."""
    from flows.cli import main

    slow = write_scenario(
        tmp_path / "slow.json",
        {
            "catalog": only(MODELS),
            "defaults": {"behavior": "ok", "ttft_ms": 300, "total_ms": 600, "keepalive_ms": 0},
        },
    )
    data, docs = tmp_path / "data", tmp_path / "docs"
    db = data / "discovery.duckdb"
    monkeypatch.setattr(storage, "connect", functools.partial(storage.connect, wait_s=0.5))
    holders: list[subprocess.Popen[str]] = []

    def take_the_database_once_probing() -> None:
        wait_for(
            lambda: bool(run_folders(data)) and checkpointed(run_folders(data)[0]).height > 0, 60, "a probe"
        )
        holders.append(_hold_database(db))

    taker = threading.Thread(target=take_the_database_once_probing)
    taker.start()
    try:
        capsys.readouterr()
        assert main(["run", *_args(slow, data, docs)]) == 1
        err = capsys.readouterr().err
    finally:
        taker.join(timeout=60)
        for holder in holders:
            _release(holder)
    (folder,) = run_folders(data)
    run_id = folder.name
    (line,) = [line for line in err.splitlines() if line.startswith("discovery:")]
    assert line.startswith(f"discovery: error: another discovery run is using {db}")
    assert line.endswith(f"resume it with discovery run --resume {run_id})")
    info = storage.read_run_info(folder)
    assert info.status == "failed" and "another discovery run is using" in (info.status_reason or "")
    assert checkpointed(folder).height == PROBES
    parts = sorted((folder / storage.CHECKPOINT_DIR).glob("part-*.parquet"))

    capsys.readouterr()
    assert main(["runs", "--data-dir", str(data)]) == 0
    listing = capsys.readouterr().out
    assert f"{run_id}" in listing and " failed " in listing and "another discovery run" in listing
    assert main(["run", "--resume", "--data-dir", str(data), "--docs-dir", str(docs)]) == 2
    assert "no unfinished run to resume" in capsys.readouterr().err

    assert main(["run", "--resume", run_id, "--data-dir", str(data), "--docs-dir", str(docs)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"resuming run {run_id} (sandbox")
    assert sorted((folder / storage.CHECKPOINT_DIR).glob("part-*.parquet")) == parts  # nothing sent
    _assert_stored_whole(db, folder)

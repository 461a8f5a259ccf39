"""Two discoveries against one data folder: they queue on the DuckDB file, or fail with a clear message.

DuckDB lets one process write a file at a time. A run opens the database only in its store and render
steps, so two runs may probe side by side and then take turns; :func:`freemodels.storage.connect`
waits for the other process (30 s), then gives up with :class:`DatabaseLockedError`.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import threading
import time
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
    """The database holds exactly the run folder's rows, and the folder says it is stored."""
    run_id = folder.name
    assert storage.is_stored(folder)
    assert storage.read_run_info(folder).status == "completed"
    for name, file_name in storage.TABLE_FILES.items():
        on_disk = pl.read_parquet(folder / file_name).height
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


def test_two_runs_started_at_once_take_turns_on_the_database(
    tmp_path: Path, scenario: Path, prefect_harness: None
) -> None:
    """Two runs start together: ``discovery run`` in a child process and the same command in this
    process (on a thread; a second child would only add another interpreter start-up). A third
    process holds the database meanwhile, so both runs must reach the store step and wait there;
    once it lets go, one stores and renders while the other waits for it, and both complete.
    Nothing is mixed up: each run's rows in the database are exactly its own files."""
    import prefect.settings

    from flows.cli import main

    data, docs = tmp_path / "data", tmp_path / "docs"
    db = data / "discovery.duckdb"
    storage.connect(db).close()
    env = subprocess_env(prefect.settings.PREFECT_API_URL.value(), tmp_path / "prefect-home")
    args = [
        "--source",
        "sandbox",
        "--scenario",
        str(scenario),
        "--data-dir",
        str(data),
        "--docs-dir",
        str(docs),
    ]
    holder = _hold_database(db)
    log = tmp_path / "child-run.log"
    child = start_discovery(args, env, log)
    codes: list[int] = []
    here = threading.Thread(target=lambda: codes.append(main(["run", *args])), name="second-run")
    here.start()
    try:
        wait_for(
            lambda: (
                len(run_folders(data)) == 2
                and all(checkpointed(f).height == PROBES for f in run_folders(data))
            ),
            120,
            "both runs to finish probing",
        )
        time.sleep(1.0)  # analyse and rank take milliseconds: both are now waiting for the database
        assert child.poll() is None and here.is_alive(), "a run gave up instead of waiting"
        assert not any((f / "probes.parquet").exists() for f in run_folders(data))
    finally:
        _release(holder)
        here.join(timeout=120)
        try:
            child.wait(timeout=120)
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
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
    """
)


def test_a_run_that_cannot_get_the_database_fails_clearly_and_resumes_later(
    tmp_path: Path,
    scenario: Path,
    prefect_harness: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another process holds the database longer than the run waits (30 s, shortened to 0.5 s here):
    the run ends with one clear line and exit code 2, keeps its probes, and ``--resume`` stores it
    later without sending a probe again."""
    from flows.cli import main

    data, docs = tmp_path / "data", tmp_path / "docs"
    db = data / "discovery.duckdb"
    storage.connect(db).close()
    monkeypatch.setattr(storage, "connect", functools.partial(storage.connect, wait_s=0.5))
    args = [
        "--source",
        "sandbox",
        "--scenario",
        str(scenario),
        "--data-dir",
        str(data),
        "--docs-dir",
        str(docs),
    ]
    holder = _hold_database(db)
    try:
        capsys.readouterr()
        assert main(["run", *args]) == 2
        err = capsys.readouterr().err
    finally:
        _release(holder)
    line = next(line for line in err.splitlines() if line.startswith("discovery: error:"))
    assert line.startswith(f"discovery: error: another discovery run is using {db} (pid {holder.pid}")
    assert line.endswith("waited 0.5 s. Wait for it to finish or stop it, then try again.")
    assert "Traceback" not in err
    (folder,) = run_folders(data)
    parts = sorted((folder / storage.CHECKPOINT_DIR).glob("part-*.parquet"))
    assert checkpointed(folder).height == PROBES
    assert table(db, "runs").is_empty()
    assert storage.latest_unfinished_run(data / "runs") == folder.name

    assert main(["run", "--resume", "--data-dir", str(data), "--docs-dir", str(docs)]) == 0
    assert sorted((folder / storage.CHECKPOINT_DIR).glob("part-*.parquet")) == parts  # nothing sent
    _assert_stored_whole(db, folder)

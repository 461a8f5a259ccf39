"""SIGKILL a real ``discovery run`` process while it probes, then while it stores, and resume.

The sandbox runs in this test's process and the runs reach it through ``--base-url``, so its request
counters span every process of the test: they show which probes were sent how often. The child
processes use the session's Prefect server (``PREFECT_API_URL``) and a Prefect home of their own.

1. An earlier, completed run is stored first: it must survive everything below untouched.
2. Run A is killed once its first probe checkpoint is on disk (probes still in flight).
3. Run B (``--resume``) sends only the probes A has no result for, and is killed inside the store
   step's DuckDB transaction. To land there every time, B is the same CLI started after a test-only
   wrapper around one insert that writes a marker file and then waits (no hook in the product).
4. Run C (``discovery run --resume``, in this process) sends nothing and stores the run.

After each kill the DuckDB file opens, holds no trace of the killed run, and the earlier run is
intact. At the end every probe has exactly one attempt, and the sandbox saw each probe once, plus
once more only for the probes A had sent without recording an answer (in flight at the kill, or
answered within the checkpoint writer's last second): a recorded answer is never asked for again.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import polars as pl
import pytest

from freemodels import storage
from freemodels.errors import RunNotFoundError
from freemodels.records import RunStatus
from freemodels.runs import pick_run_to_resume
from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from tests.integration.sandbox_runs import (
    FREE,
    checkpointed,
    only,
    run_folders,
    run_plain,
    start_discovery,
    subprocess_env,
    table,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
]

KEY_ENV = "FMD_KILL_TEST_KEY"
KEY = "sk-or-v1-kill-test-000000000000000000000000"
MODELS = [FREE[0], FREE[2], FREE[6], FREE[11], FREE[14], FREE[15]]
PROBES = len(MODELS) * 3
CONCURRENCY = 3
STORE_PAUSE = """
import pathlib, time
from freemodels.storage import database as _db

_real_insert = _db._insert_parquet

def _insert_then_pause(con, table, run_id, path):
    _real_insert(con, table, run_id, path)
    pathlib.Path({marker!r}).write_text(table)
    time.sleep(300)

_db._insert_parquet = _insert_then_pause
"""


def _db_counts(db: Path, run_id: str) -> dict[str, int]:
    with storage.connect(db, read_only=True, wait_s=10) as con:
        return {
            name: con.execute(f"SELECT count(*) FROM {name} WHERE run_id = ?", [run_id]).fetchall()[0][0]
            for name in ("runs", "catalog", "probes", "model_results", "rotation", "changes")
        }


def _kill(child, log: Path) -> None:  # type: ignore[no-untyped-def]
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL, log.read_text(errors="replace")[-3000:]


def test_sigkill_while_probing_and_while_storing_then_resume_sends_every_probe_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    import prefect.settings

    from flows.cli import main

    data, docs = tmp_path / "data", tmp_path / "docs"
    db = data / "discovery.duckdb"
    monkeypatch.setenv(KEY_ENV, KEY)
    env = subprocess_env(
        prefect.settings.PREFECT_API_URL.value(),
        tmp_path / "prefect-home",
        **{KEY_ENV: KEY, "DISCOVERY_MAX_CONCURRENCY": str(CONCURRENCY)},
    )
    scenario = Scenario.from_mapping(
        {
            "limits": {"api_key": KEY, "requests_per_minute": 6000},
            "catalog": only(MODELS),
            "defaults": {"behavior": "ok", "ttft_ms": 300, "total_ms": 700, "keepalive_ms": 0},
        }
    )
    with SandboxServer(scenario) as server:
        # 1. an earlier completed run (two models), stored
        earlier = run_plain(data, docs, base_url=server.base_url, api_key_env=KEY_ENV, max_models=2)
        assert earlier.status == "completed"
        kept = _db_counts(db, earlier.run_id)
        baseline = dict(server.stats()["per_model"])
        args = ["--data-dir", str(data), "--docs-dir", str(docs)]

        # 2. run A, killed while probing
        log_a = tmp_path / "run-a.log"
        child = start_discovery(["--base-url", server.base_url, "--api-key-env", KEY_ENV, *args], env, log_a)
        try:
            wait_for(lambda: len(run_folders(data)) == 2, 90, "run A's folder")
            folder = next(f for f in run_folders(data) if f.name != earlier.run_id)
            wait_for(lambda: (folder / storage.CHECKPOINT_DIR).is_dir() and
                     any((folder / storage.CHECKPOINT_DIR).glob("part-*.parquet")), 60,
                     "run A's first probe checkpoint")  # fmt: skip
        finally:
            _kill(child, log_a)
        run_id = folder.name
        sent_a = {m: n - baseline.get(m, 0) for m, n in server.stats()["per_model"].items()}
        recorded_a = checkpointed(folder)
        assert 0 < recorded_a.height < PROBES, "A must die with probes left to send"
        assert recorded_a.height <= sum(sent_a.values()) < PROBES
        assert storage.read_run_info(folder).status == "running"  # as far as its own record says
        # The database has A's runs row (its lifecycle) and nothing else of it.
        assert _db_counts(db, run_id) == {**dict.fromkeys(kept, 0), "runs": 1}
        assert _db_counts(db, earlier.run_id) == kept
        killed = pick_run_to_resume(data / "runs", "latest")
        assert killed.run_id == run_id and killed.status is RunStatus.INTERRUPTED

        # 3. run B (--resume), killed inside the store transaction
        marker = tmp_path / "store-paused"
        log_b = tmp_path / "run-b.log"
        child = start_discovery(
            ["--resume", *args], env, log_b, python_prelude=STORE_PAUSE.format(marker=str(marker))
        )
        try:
            wait_for(
                lambda: marker.is_file() and marker.read_text() != "",
                120,
                "run B inside its store transaction",
            )
        finally:
            _kill(child, log_b)
        after_b = server.stats()["per_model"]
        assert checkpointed(folder).height == PROBES  # B probed everything that was left
        assert marker.read_text() in storage.TABLE_FILES  # B died after inserting this table
        info_b = storage.read_run_info(folder)
        assert (folder / "probes.parquet").is_file() and "stored" not in info_b.steps_done
        assert "probed" in info_b.steps_done
        # The transaction left nothing; the runs row is the lifecycle's, still "running".
        assert _db_counts(db, run_id) == {**dict.fromkeys(kept, 0), "runs": 1}
        assert _db_counts(db, earlier.run_id) == kept
        assert pick_run_to_resume(data / "runs", "latest").run_id == run_id

        # 4. run C: discovery run --resume completes the run without sending anything
        assert main(["run", "--resume", *args]) == 0
        assert server.stats()["per_model"] == after_b

    with pytest.raises(RunNotFoundError):
        pick_run_to_resume(data / "runs", "latest")
    counts = _db_counts(db, run_id)
    assert counts["runs"] == 1 and counts["probes"] == PROBES and counts["model_results"] == len(MODELS)
    assert _db_counts(db, earlier.run_id) == kept
    probes = table(db, "probes", run_id)
    assert probes.get_column("passed").all()
    # Exactly one attempt per probe: nothing recorded before a kill was stored or sent twice.
    assert probes.group_by("model_id", "task", "sample").len().get_column("len").to_list() == [1] * PROBES
    assert set(probes.get_column("attempt").to_list()) == {1}
    # The sandbox's view: each probe once, plus the ones A had sent without recording an answer
    # (in flight, or answered less than a second before the kill and not yet checkpointed).
    recorded_by_model = dict(recorded_a.group_by("model_id").len().iter_rows())
    in_flight = {m: sent_a.get(m, 0) - recorded_by_model.get(m, 0) for m in MODELS}
    assert all(n >= 0 for n in in_flight.values())
    for model in MODELS:
        assert after_b[model] - baseline.get(model, 0) == 3 + in_flight[model], model
    run = table(db, "runs").filter(pl.col("run_id") == run_id).row(0, named=True)
    assert run["status"] == "completed"
    assert (docs / "final-report.md").is_file()

"""The ``monthly`` deployment end to end: ``discovery up``, ``prefect deployment run --watch``, results.

Checks through Prefect's API that the run completed with its artifacts, and in DuckDB and docs/ that the
run's data and documents are there and match the flow run; then that a restart keeps the schedule.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime

import duckdb
import pytest

from flows.stack import SERVE, StackPaths, is_running, load_state
from freemodels.storage import read_run_info as load_run_info
from tests.e2e.conftest import CompletedRun, RunningStack, _discovery_command, dump

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DOCUMENTS = (
    "index.md",
    "executive-summary.md",
    "final-report.md",
    "root-cause-analysis.md",
    "capability-matrix.md",
)


def test_up_prints_the_ui_and_the_api_url(stack: RunningStack) -> None:
    out = stack.up_output
    assert f"Prefect UI:  {stack.ui_url}" in out
    assert 'eval "$(uv run discovery status --env)"' in out
    assert "prefect deployment run discovery/monthly --watch" in out
    assert stack.auth not in out  # the auth string is shown only by `status --env`
    assert stack.api("GET", "/health") is True


def test_deployment_is_monthly_at_six_utc_with_source_suite_and_budget(stack: RunningStack) -> None:
    deployment = stack.api("GET", "/deployments/name/discovery/monthly")

    schedules = deployment["schedules"]
    assert len(schedules) == 1, dump(schedules)
    assert schedules[0]["active"] is True
    assert schedules[0]["schedule"]["cron"] == "0 6 1 * *"
    assert schedules[0]["schedule"]["timezone"] == "UTC"
    assert deployment["paused"] is False
    assert deployment["parameters"] == {
        "source": "sandbox",
        "suite": "standard",
        "budget": None,
        "commit_docs": False,
        "drill": False,
    }
    assert {"source", "suite", "budget"} <= deployment["parameter_openapi_schema"]["properties"].keys()


def test_deployment_run_completes_with_name_tags_and_artifacts(
    stack: RunningStack, completed_run: CompletedRun, run_artifacts: dict
) -> None:
    assert "Completed" in completed_run.output
    flow_run = stack.api("GET", f"/flow_runs/{completed_run.flow_run_id}")

    assert flow_run["state"]["type"] == "COMPLETED", dump(flow_run["state"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-sandbox", flow_run["name"]), flow_run["name"]
    assert flow_run["name"].startswith(datetime.now(UTC).date().isoformat()[:7])
    assert "source:sandbox" in flow_run["tags"]

    summary = run_artifacts.get("executive-summary")
    tiers = run_artifacts.get("tiers")
    assert summary is not None and tiers is not None, dump(run_artifacts)
    assert summary["type"] == "markdown"
    assert tiers["type"] == "table"
    assert summary["data"].strip(), "the executive summary artifact is empty"
    # The artifact renders in Prefect's UI: no GitHub-only alert syntax; it shows the run's drill.
    assert "[!WARNING]" not in summary["data"] and "> **Warning:**" in summary["data"]
    assert "## The rotation in use" in summary["data"] and "| Incident, client |" in summary["data"]


def test_run_is_in_duckdb_and_its_documents_in_docs(
    stack: RunningStack, completed_run: CompletedRun, run_artifacts: dict
) -> None:
    database = stack.data_dir / "discovery.duckdb"
    assert database.exists(), f"no database at {database}"
    con = duckdb.connect(str(database), read_only=True)
    try:
        rows = con.execute(
            "SELECT run_id, status, source FROM runs WHERE prefect_flow_run_id = ?",
            [completed_run.flow_run_id],
        ).fetchall()
        assert len(rows) == 1, f"runs rows for flow run {completed_run.flow_run_id}: {rows}"
        run_id, status, source = rows[0]
        assert (status, source) == ("completed", "sandbox")
        probes = con.execute("SELECT count(*) FROM probes WHERE run_id = ?", [run_id]).fetchone()
        results = con.execute("SELECT count(*) FROM model_results WHERE run_id = ?", [run_id]).fetchone()
        incidents = "SELECT count(DISTINCT incident) FROM drill WHERE run_id = ?"
        drill = con.execute(incidents, [run_id]).fetchone()
    finally:
        con.close()
    assert probes is not None and probes[0] > 0
    assert results is not None and results[0] > 0
    assert drill is not None and drill[0] == 5, "the run was drilled under the five staged incidents"

    for name in DOCUMENTS:
        assert name in completed_run.documents, f"missing {name} in {sorted(completed_run.documents)}"
    assert run_id in completed_run.documents["executive-summary.md"]
    assert run_id in run_artifacts["executive-summary"]["data"]
    # Nothing was written where the stack was started from, only to the configured folders.
    assert not (stack.workdir / "data").exists() and not (stack.workdir / "docs").exists()


def test_up_again_says_already_up(stack: RunningStack) -> None:
    before = load_state(StackPaths.at(stack.stack_dir))
    result = stack.up()
    assert result.returncode == 0, result.stderr
    assert "already up" in result.stdout
    assert load_state(StackPaths.at(stack.stack_dir)) == before


def test_status_reports_the_running_stack(stack: RunningStack) -> None:
    result = stack.discovery("status", "--stack-dir", str(stack.stack_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deployment discovery/monthly: schedule active, next run 20" in result.stdout
    assert "serve process last asked for runs" in result.stdout
    assert "paused False" not in result.stdout
    assert stack.exports() == {"PREFECT_API_URL": stack.api_url, "PREFECT_API_AUTH_STRING": stack.auth}


def test_discovery_run_records_into_the_running_stack(stack: RunningStack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With the stack up, ``discovery run`` uses its server (the run shows in its UI) instead of
    starting a temporary one."""
    data, docs = tmp_path / "data", tmp_path / "docs"
    env = {**stack.env, "DISCOVERY_STACK_DIR": str(stack.stack_dir)}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [*_discovery_command(), "run", "--source", "sandbox", "--max-models", "1", "--data-dir", str(data),
         "--docs-dir", str(docs)],
        cwd=stack.workdir, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, dump(result)
    assert f"View at {stack.ui_url}/runs/flow-run/" in result.stdout + result.stderr
    assert "Starting temporary server" not in result.stdout + result.stderr
    (folder,) = [p for p in (data / "runs").iterdir() if p.is_dir()]
    flow_run_id = load_run_info(folder).prefect_flow_run_id
    assert stack.api("GET", f"/flow_runs/{flow_run_id}")["state"]["type"] == "COMPLETED"


def test_restarting_the_serve_process_keeps_the_schedule(
    stack: RunningStack, completed_run: CompletedRun
) -> None:
    """Last in this module: it restarts the stack (the same port, so later tests still find it)."""
    paths = StackPaths.at(stack.stack_dir)
    before = stack.api("GET", "/deployments/name/discovery/monthly")
    state = load_state(paths)
    assert state is not None
    serve = state.process(SERVE)
    assert serve is not None

    # A pause set in the UI must survive the restart too.
    stack.api("POST", f"/deployments/{before['id']}/pause_deployment")
    os.killpg(serve.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while is_running(serve):
        assert time.monotonic() < deadline, "the serve process did not stop on SIGTERM"
        time.sleep(0.2)

    # With the serve process gone, the schedule is still there.
    stopped = stack.api("GET", "/deployments/name/discovery/monthly")
    assert [s["id"] for s in stopped["schedules"]] == [s["id"] for s in before["schedules"]]

    status = stack.discovery("status", "--stack-dir", str(stack.stack_dir))
    assert status.returncode == 1 and "serve: pid" in status.stdout and "not running" in status.stdout

    restarted = stack.up()
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    after = stack.api("GET", "/deployments/name/discovery/monthly")
    assert after["id"] == before["id"]
    assert [s["id"] for s in after["schedules"]] == [s["id"] for s in before["schedules"]]
    assert after["paused"] is True, "the restart undid the pause"
    stack.api("POST", f"/deployments/{after['id']}/resume_deployment")
    resumed = stack.api("GET", "/deployments/name/discovery/monthly")
    assert resumed["paused"] is False and [s["active"] for s in resumed["schedules"]] == [True]

    # The history survives too: the earlier run is still in the (restarted) server's database.
    old_run = stack.api("GET", f"/flow_runs/{completed_run.flow_run_id}")
    assert old_run["state"]["type"] == "COMPLETED"

    # And the scheduler plans the next monthly run: the 1st of a month, 06:00 UTC.
    deadline = time.monotonic() + 90
    while True:
        upcoming = stack.api(
            "POST",
            "/flow_runs/filter",
            {
                "flow_runs": {
                    "deployment_id": {"any_": [after["id"]]},
                    "state": {"type": {"any_": ["SCHEDULED"]}},
                },
                "sort": "EXPECTED_START_TIME_ASC",
                "limit": 1,
            },
        )
        if upcoming:
            break
        assert time.monotonic() < deadline, "no scheduled run after the restart"
        time.sleep(2)
    start = datetime.fromisoformat(upcoming[0]["expected_start_time"].replace("Z", "+00:00"))
    assert (start.day, start.hour, start.minute) == (1, 6, 0), start

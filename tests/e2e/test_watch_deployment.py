"""The ``watch`` deployment end to end, served by the same process as ``monthly``.

``discovery up`` registered both; after the monthly run, ``prefect deployment run discovery/watch
--watch`` runs a watch of the same catalog (nothing lost, no chat request), then one with a scenario
that removes the rotation's primary: the flow run completes, the watch is in DuckDB, the
``discovery.model.lost`` event is related to the watch's flow run, and ``docs/rotation.json`` no longer
names the model.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

import duckdb
import pytest

from freemodels.sandbox.catalog import build_catalog
from tests.e2e.conftest import (
    FLOW_RUN_UUID,
    RUN_TIMEOUT_S,
    CompletedRun,
    RunningStack,
    _describe,
    _logs,
    dump,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def run_watch(stack: RunningStack, *params: str) -> str:
    """``prefect deployment run discovery/watch --watch``; returns the flow run id."""
    args = ["deployment", "run", "discovery/watch", "--watch", "--watch-timeout", str(RUN_TIMEOUT_S)]
    for param in params:
        args += ["--param", param]
    result = stack.prefect(*args, timeout=RUN_TIMEOUT_S + 60)
    assert result.returncode == 0, f"watch run failed: {_describe(result)}\n{_logs(stack.stack_dir)}"
    match = FLOW_RUN_UUID.search(result.stdout)
    assert match, result.stdout
    return match.group(1)


def watches(stack: RunningStack) -> list[tuple]:
    con = duckdb.connect(str(stack.data_dir / "discovery.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT watch_id, prefect_flow_run_id, based_on_run_id, lost, chat_requests FROM watches "
            'ORDER BY "at"'
        ).fetchall()
    finally:
        con.close()


def latest_primary(stack: RunningStack) -> str:
    con = duckdb.connect(str(stack.data_dir / "discovery.duckdb"), read_only=True)
    try:
        row = con.execute(
            "SELECT r.model_id FROM rotation r WHERE r.run_id = (SELECT run_id FROM runs "
            "WHERE status = 'completed' ORDER BY started_at DESC LIMIT 1) "
            "AND r.purpose = 'general' ORDER BY r.rank LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return str(row[0])


def test_watch_deployment_is_daily_at_half_past_six_utc(stack: RunningStack) -> None:
    deployment = stack.api("GET", "/deployments/name/discovery/watch")
    schedules = deployment["schedules"]
    assert [s["schedule"]["cron"] for s in schedules] == ["30 6 * * *"], dump(schedules)
    assert schedules[0]["schedule"]["timezone"] == "UTC" and schedules[0]["active"] is True
    assert deployment["parameters"] == {"source": "sandbox", "liveness": 0}
    assert deployment["entrypoint"] == "flows.watch.watch"
    monthly = stack.api("GET", "/deployments/name/discovery/monthly")
    assert monthly["flow_id"] == deployment["flow_id"]  # one flow, two deployments


def test_a_watch_through_the_deployment_records_and_repairs(
    stack: RunningStack, completed_run: CompletedRun
) -> None:
    flow_run_id = run_watch(stack)
    flow_run = stack.api("GET", f"/flow_runs/{flow_run_id}")
    assert flow_run["state"]["type"] == "COMPLETED", dump(flow_run["state"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-watch-sandbox", flow_run["name"]), flow_run["name"]
    assert flow_run["name"].startswith(datetime.now(UTC).date().isoformat())
    assert {"watch", "source:sandbox"} <= set(flow_run["tags"])
    first = [w for w in watches(stack) if w[1] == flow_run_id]
    assert len(first) == 1 and first[0][3] == 0 and first[0][4] == 0, first

    lost = latest_primary(stack)
    listed = build_catalog().models
    paid = lost.removesuffix(":free")
    removed = [lost, paid] if paid != lost and paid in listed else [lost]
    scenario = stack.workdir / "watch-lost.toml"
    scenario.write_text(f"[catalog]\nremove = {json.dumps(removed)}\n")
    second = run_watch(stack, f"scenario={json.dumps(str(scenario))}")
    row = next(w for w in watches(stack) if w[1] == second)
    assert row[3] == 1 and row[4] == 0, row

    query = {
        "filter": {
            "event": {"name": ["discovery.model.lost"]},
            "resource": {"id": [f"openrouter.model.{lost}"]},
            "related": {"id": [f"prefect.flow-run.{second}"]},
        },
        "limit": 10,
    }
    deadline = time.monotonic() + 60
    while not (found := stack.api("POST", "/events/filter", query)["events"]):
        assert time.monotonic() < deadline, f"no discovery.model.lost event for {lost} of watch {second}"
        time.sleep(1)
    assert found[0]["resource"]["discovery.reason"] == "gone"
    assert found[0]["payload"]["watch_id"] == row[0]

    rotation = json.loads((stack.docs_dir / "rotation.json").read_text(encoding="utf-8"))
    assert lost not in rotation["chains"]["general"]
    assert rotation["repaired"]["removed"][0]["model"] == lost
    summary = (stack.docs_dir / "executive-summary.md").read_text(encoding="utf-8")
    assert "Rotation repaired on" in summary.split("## Headline")[0]

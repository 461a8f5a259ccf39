"""The `discovery` flow end to end on the sandbox, through Prefect: storage, reports, changes, candidates."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
import pytest

from flows.discovery import discovery

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

FAST = """
[defaults]
ttft_ms = 20
reasoning_ms = 0
total_ms = 60
keepalive_ms = 0
"""

REMOVED = "tngtech/deepseek-r1t2-chimera:free"
ENDED = "z-ai/glm-4.5-air:free"
BROKEN = "openai/gpt-oss-20b:free"
FIXED = "moonshotai/kimi-k2:free"


@pytest.fixture
def fast_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCOVERY_BACKOFF_BASE_S", "0.05")
    monkeypatch.setenv("DISCOVERY_BACKOFF_MAX_S", "0.5")


def run(tmp_path: Path, scenario: str, **params: object):
    path = tmp_path / f"scenario-{len(list(tmp_path.glob('scenario-*')))}.toml"
    path.write_text(scenario)
    return asyncio.run(
        discovery(
            scenario=str(path),
            data_dir=str(tmp_path / "data"),
            docs_dir=str(tmp_path / "docs"),
            **params,
        )
    )


def rows(db: Path, sql: str, *params: object) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def test_two_runs_store_history_and_report_what_changed(tmp_path: Path, fast_env: None) -> None:
    first = run(tmp_path, FAST)
    assert first.status == "completed"
    db = tmp_path / "data" / "discovery.duckdb"
    assert first.free_models == 29 and first.tested_models == 29
    run_dir = Path(first.run_dir)
    for name in ("catalog", "probes", "model_results", "rotation", "changes"):
        assert (run_dir / f"{name}.parquet").is_file(), name
    for doc in (
        "executive-summary.md",
        "final-report.md",
        "root-cause-analysis.md",
        "index.md",
        "capability-matrix.md",
        "rotation.json",
        "litellm-router.yaml",
    ):
        assert (tmp_path / "docs" / doc).is_file(), doc
    summary_text = (tmp_path / "docs" / "executive-summary.md").read_text()
    assert "Sandbox data" in summary_text

    ((source, status, flow_run_id),) = rows(db, "select source, status, prefect_flow_run_id from runs")
    assert (source, status) == ("sandbox", "completed") and flow_run_id
    # With the budget for everything, every free model gets the whole suite, except those settled
    # without a chat request (an empty endpoints listing, not routable for the key) or by a failure
    # that rules the model out (one request).
    per_model = dict(rows(db, "select model_id, count(distinct (task, sample)) from probes group by 1"))
    settled = dict(
        rows(db, "select model_id, root_cause from model_results where n = 0 and verdict = 'failing'")
    )
    assert set(settled.values()) == {"no_endpoints", "privacy_excluded"}
    assert not set(settled) & set(per_model)
    listed_empty = {m for (m,) in rows(db, "select model_id from endpoints where listing = 'empty'")}
    assert {m for m, cause in settled.items() if cause == "no_endpoints"} == listed_empty
    one_request = {m for m, n in per_model.items() if n == 1}
    causes = dict(rows(db, "select model_id, root_cause from model_results"))
    assert one_request and {causes[m] for m in one_request} <= {"free_variant_ended", "no_endpoints"}
    assert all(n == 3 for m, n in per_model.items() if m not in one_request)
    assert len(per_model) + len(settled) == 29
    assert rows(db, "select count(*) from catalog where run_id = ?", first.run_id)[0][0] == 74

    second = run(
        tmp_path,
        FAST
        + f"""
[catalog]
remove = ["{REMOVED}"]
paid = ["{ENDED}"]

[models."{BROKEN}"]
behavior = "provider_502"

[models."{FIXED}"]
behavior = "ok"
""",
    )
    assert second.status == "completed"
    assert rows(db, "select count(*) from runs")[0][0] == 2
    changes = set(rows(db, "select change, model_id from changes where run_id = ?", second.run_id))
    assert ("removed", REMOVED) in changes
    assert ("free_ended", ENDED) in changes
    assert ("newly_broken", BROKEN) in changes
    assert ("newly_working", FIXED) in changes
    prev = rows(db, "select distinct prev_run_id from changes where run_id = ?", second.run_id)
    assert prev == [(first.run_id,)]

    summary_text = (tmp_path / "docs" / "executive-summary.md").read_text()
    for model_id in (REMOVED, ENDED, BROKEN, FIXED):
        assert model_id in summary_text.split("## What changed")[1].split("\n## ")[0], model_id
    assert (tmp_path / "docs" / "history").is_dir()


def test_candidates_are_checked_without_sending(tmp_path: Path, fast_env: None) -> None:
    candidates = tmp_path / "candidates.txt"
    candidates.write_text(
        "# announced this month\nllama-3.3-8b\nacme/imaginary-model-9000\nqwen/qwen3-4b:free\n"
    )
    summary = run(tmp_path, FAST, candidates=str(candidates), max_models=3)
    db = Path(summary.database)
    got = {
        model_id: (verdict, cause, suggestion)
        for model_id, verdict, cause, suggestion in rows(
            db,
            "select model_id, verdict, root_cause, suggestion from model_results "
            "where verdict = 'not_listed'",
        )
    }
    assert got["llama-3.3-8b"][0:2] == ("not_listed", "wrong_model_id")
    assert "meta-llama/llama-3.3-8b-instruct:free" in got["llama-3.3-8b"][2]
    assert got["acme/imaginary-model-9000"][1] == "no_endpoints"
    assert "qwen/qwen3-4b:free" not in got  # listed ids are probed normally, not flagged
    sent = {m for (m,) in rows(db, "select distinct model_id from probes")}
    assert not sent & set(got)
    rca = (tmp_path / "docs" / "root-cause-analysis.md").read_text()
    assert "llama-3.3-8b" in rca and "meta-llama/llama-3.3-8b-instruct:free" in rca


def test_rotation_json_is_written(tmp_path: Path, fast_env: None) -> None:
    summary = run(tmp_path, FAST, max_models=6)
    data = json.loads((tmp_path / "docs" / "rotation.json").read_text())
    assert summary.working_models >= 1
    assert json.dumps(data).count(":free") >= 1

"""The drill against the sandbox: both clients through every staged incident, within the budget.

One discovery with ``drill`` on a small sandbox whose models all answer at once (so the drill's
timing is the clients' own waiting); the workload is three requests per client, arm and incident,
and the account's full minute clears two seconds after each workload starts. The tests read the
``drill`` table back and check what each client did under each incident: the rotation answers every
request; the primary alone does not survive a storm or an ended free variant; an account 429 is
waited out, not walked along the chain, by both clients; LiteLLM sets a storming primary aside.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from freemodels.drill import STAGED_INCIDENTS, DrillArm, DrillClient, Incident, Staging
from freemodels.failures import Failure
from freemodels.sandbox.scenario import Scenario
from freemodels.settings import Settings
from freemodels.source import PROFILES, SourceKind
from freemodels.suite import build_suite
from tasks.drill import LITELLM_MISSING, DrillTarget, run_drill
from tasks.rank import GENERAL
from tests.integration.sandbox_runs import FREE, only, run_plain, table, write_scenario

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

MODELS = FREE[:6]
REQUESTS = 3
SCENARIO: dict[str, Any] = {
    "limits": {"requests_per_minute": 6000},
    "catalog": only([*MODELS, "openrouter/free"]),
    "defaults": {
        "behavior": "ok",
        "fault": "none",
        "ttft_ms": 20,
        "reasoning_ms": 0,
        "total_ms": 60,
        "keepalive_ms": 0,
    },
}


@pytest.fixture(scope="module")
def drilled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("litellm", reason="litellm is not installed (optional dependency group `litellm`)")
    tmp = tmp_path_factory.mktemp("drill")
    scenario = write_scenario(tmp / "scenario.json", SCENARIO)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DISCOVERY_DRILL_MINUTE_CLEARS_S", "2")
        patch.setenv("DISCOVERY_BACKOFF_BASE_S", "0.05")
        summary = run_plain(
            tmp / "data",
            tmp / "docs",
            source="sandbox",
            scenario=str(scenario),
            drill=True,
            drill_requests=REQUESTS,
        )
    db = tmp / "data" / "discovery.duckdb"
    rotation = json.loads((tmp / "docs" / "rotation.json").read_text(encoding="utf-8"))
    return {
        "summary": summary,
        "drill": table(db, "drill", summary.run_id),
        "chain": rotation["chains"][GENERAL],
        "docs": tmp / "docs",
        "runs": table(db, "runs", summary.run_id),
    }


def cell(drilled: dict[str, Any], incident: Incident, client: DrillClient, arm: DrillArm) -> pl.DataFrame:
    frame: pl.DataFrame = drilled["drill"]
    return frame.filter(
        (pl.col("incident") == incident.value)
        & (pl.col("client") == client.value)
        & (pl.col("arm") == arm.value)
    ).sort("seq")


def outcomes(rows: pl.DataFrame) -> list[str]:
    return rows.get_column("outcome").to_list()


def test_every_client_arm_and_incident_sent_its_workload(drilled: dict[str, Any]) -> None:
    assert drilled["summary"].status == "completed"
    assert "drilled" in drilled["runs"].item(0, "steps_done")
    frame: pl.DataFrame = drilled["drill"]
    counts = frame.group_by("incident", "client", "arm").len()
    assert counts.height == len(STAGED_INCIDENTS) * 2 * 3
    assert set(counts.get_column("len").to_list()) == {REQUESTS}
    assert set(frame.get_column("outcome").to_list()) <= {"ok", "error"}  # every model answers right


@pytest.mark.parametrize("client", list(DrillClient))
@pytest.mark.parametrize("incident", STAGED_INCIDENTS)
def test_the_rotation_answers_every_request_under_every_incident(
    drilled: dict[str, Any], incident: Incident, client: DrillClient
) -> None:
    assert outcomes(cell(drilled, incident, client, DrillArm.ROTATION)) == ["ok"] * REQUESTS
    assert outcomes(cell(drilled, incident, client, DrillArm.FREE_ROUTER)) == ["ok"] * REQUESTS


@pytest.mark.parametrize("client", list(DrillClient))
def test_the_primary_alone_does_not_survive_a_storm_or_an_ended_free_variant(
    drilled: dict[str, Any], client: DrillClient
) -> None:
    storm = cell(drilled, Incident.UPSTREAM_429_STORM, client, DrillArm.PRIMARY)
    assert outcomes(storm) == ["error"] * REQUESTS
    assert storm.item(0, "failure") == Failure.RATE_LIMIT_UPSTREAM.value
    ended = cell(drilled, Incident.FREE_VARIANT_ENDED, client, DrillArm.PRIMARY)
    assert outcomes(ended) == ["ok", "error", "error"]  # it answers the first request, then its variant ends


def test_the_models_array_falls_back_past_a_storm_and_a_burst(drilled: dict[str, Any]) -> None:
    chain = drilled["chain"]
    storm = cell(drilled, Incident.UPSTREAM_429_STORM, DrillClient.MODELS_ARRAY, DrillArm.ROTATION)
    assert storm.get_column("answered_by").to_list() == [chain[1]] * REQUESTS
    assert storm.get_column("attempts").to_list() == [1] * REQUESTS  # OpenRouter walked it, not the client
    burst = cell(drilled, Incident.PROVIDER_5XX_BURST, DrillClient.MODELS_ARRAY, DrillArm.ROTATION)
    size = Staging(requests=REQUESTS).burst_size
    assert burst.get_column("answered_by").to_list() == [chain[1]] * size + [chain[0]] * (REQUESTS - size)
    ended = cell(drilled, Incident.FREE_VARIANT_ENDED, DrillClient.MODELS_ARRAY, DrillArm.ROTATION)
    assert ended.get_column("answered_by").to_list() == [chain[0], chain[1], chain[1]]


@pytest.mark.parametrize("client", list(DrillClient))
def test_an_account_429_is_waited_out_not_walked_along_the_chain(
    drilled: dict[str, Any], client: DrillClient
) -> None:
    chain = drilled["chain"]
    rows = cell(drilled, Incident.ACCOUNT_MINUTE_LIMIT, client, DrillArm.ROTATION)
    first = rows.row(0, named=True)
    # The first request met the full minute, waited for it to clear, and was answered by the primary.
    assert first["failure"] == Failure.RATE_LIMIT_ACCOUNT.value
    assert first["answered_by"] == chain[0] and first["attempts"] == 2
    assert first["latency_ms"] >= 1500
    assert rows.get_column("answered_by").to_list() == [chain[0]] * REQUESTS
    assert rows.get_column("attempts").to_list()[1:] == [1] * (REQUESTS - 1)


def test_litellm_sets_a_storming_primary_aside_after_it_waited(drilled: dict[str, Any]) -> None:
    chain = drilled["chain"]
    rows = cell(drilled, Incident.UPSTREAM_429_STORM, DrillClient.LITELLM, DrillArm.ROTATION)
    assert rows.get_column("answered_by").to_list() == [chain[1]] * REQUESTS
    attempts = rows.get_column("attempts").to_list()
    assert attempts[0] == 4  # the primary three times (a 429 waits first), then the fallback
    assert attempts[1:] == [1] * (REQUESTS - 1)  # then the primary is cooling down: straight to the next
    latencies = rows.get_column("latency_ms").to_list()
    assert latencies[0] >= 16_000 and max(latencies[1:]) < 2_000


def test_the_drill_stays_inside_the_budget_and_says_when_litellm_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tasks.drill as drill_step

    monkeypatch.setattr(drill_step, "litellm_available", lambda: False)
    rotation = pl.DataFrame(
        [
            {
                "run_id": "r",
                "purpose": GENERAL,
                "rank": i + 1,
                "model_id": m,
                "family": f"f{i}",
                "tier": "ultra-fast",
                "p50_total_ms": 60.0,
                "success_rate": 1.0,
            }
            for i, m in enumerate(MODELS[:3])
        ]
    )
    budget = 16  # one request for each of the 15 workloads, and one retry: the retries run it out
    result = asyncio.run(
        run_drill(
            run_id="r",
            rotation=rotation,
            target=DrillTarget(
                profile=PROFILES[SourceKind.SANDBOX], base_url="", scenario=Scenario.from_mapping(SCENARIO)
            ),
            settings=Settings(backoff_base_s=0.05, drill_minute_clears_s=0.5),
            tasks=build_suite(1),
            requests=1,
            budget=budget,
            requests_per_minute=6000,
        )
    )
    assert LITELLM_MISSING in result.notes
    frame = result.frame
    assert set(frame.get_column("client").to_list()) == {DrillClient.MODELS_ARRAY.value}
    assert frame.get_column("attempts").sum() <= budget
    assert "not_sent" in frame.get_column("outcome").to_list()
    assert any("budget ran out" in note for note in result.notes)
    assert result.requests == 1


def test_the_reports_show_the_drills_own_figures(drilled: dict[str, Any]) -> None:
    """Every (incident, client, arm) line of the final report and every cell of the executive
    summary's table carries the figures computed from the drill table read back from DuckDB."""
    from freemodels.drill import ARM_LABELS, CLIENT_LABELS, INCIDENT_LABELS, summarise
    from tasks.render import percent, seconds, tail

    minimum = Settings().min_answers_for_tail
    summary = summarise(drilled["drill"], tail_min_answers=minimum)
    final = (drilled["docs"] / "final-report.md").read_text(encoding="utf-8")
    executive = (drilled["docs"] / "executive-summary.md").read_text(encoding="utf-8")
    assert summary.height == len(STAGED_INCIDENTS) * 2 * 3
    for row in summary.iter_rows(named=True):
        client, arm = DrillClient(row["client"]), DrillArm(row["arm"])
        line = (
            f"| {CLIENT_LABELS[client]} | {ARM_LABELS[arm]} | {percent(row['success_rate'])} "
            f"({row['n_ok']}/{row['n']}) | {seconds(row['p50_ms'])} | "
            f"{tail(row['p95_ms'], row['n_answered'], minimum)} | {row['attempts_per_request']:.1f} |"
        )
        section = final.split(f"### {INCIDENT_LABELS[Incident(row['incident'])]}\n", 1)[1].split("\n### ", 1)[
            0
        ]
        assert line in section, (row, section)
        cell = f"{percent(row['success_rate'])}" + (
            f", {seconds(row['p50_ms'])}" if row["p50_ms"] is not None else ""
        )
        assert cell in executive


def test_discovery_drill_drills_a_stored_run_and_says_when_litellm_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tasks.drill as drill_step
    from flows.cli import main

    scenario = write_scenario(tmp_path / "scenario.json", SCENARIO)
    data, docs = tmp_path / "data", tmp_path / "docs"
    summary = run_plain(data, docs, source="sandbox", scenario=str(scenario))
    assert "_Not drilled in this run." in (docs / "executive-summary.md").read_text(encoding="utf-8")
    monkeypatch.setattr(drill_step, "litellm_available", lambda: False)
    monkeypatch.setenv("DISCOVERY_DRILL_MINUTE_CLEARS_S", "0.5")
    monkeypatch.setenv("DISCOVERY_BACKOFF_BASE_S", "0.05")
    capsys.readouterr()
    code = main(
        ["drill", "--requests", "2", "--budget", "200", "--data-dir", str(data), "--docs-dir", str(docs)]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"drill of run {summary.run_id}: 2 requests per workload, 15 workloads" in out
    assert "note: LiteLLM is not installed" in out and "(budget 200)" in out
    # A line per finished workload while it runs.
    lines = [line for line in out.splitlines() if line.startswith("drill ") and "/15: " in line]
    assert [line.split(":")[0] for line in lines] == [f"drill {n}/15" for n in range(1, 16)]
    assert all(re.search(r": \d+/2 answered right in \d+\.\d s, \d+ requests$", line) for line in lines)
    rows = table(data / "discovery.duckdb", "drill", summary.run_id)
    assert rows.height == 2 * 15 and set(rows.get_column("client").to_list()) == {"models_array"}
    summary_doc = (docs / "executive-summary.md").read_text(encoding="utf-8")
    assert "| The primary's upstream 429 storm | OpenRouter `models` array |" in summary_doc
    assert "only OpenRouter's `models` array was drilled" in summary_doc

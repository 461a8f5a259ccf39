"""The drill's pure parts: staging, planning, the budget, the summaries; and the paced transport that
keeps LiteLLM's attempts inside the run's pacing and budget."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import httpx
import polars as pl
import pytest

from flows.drill import drill_budget
from freemodels.drill import (
    FREE_TIER_REQUESTS_PER_MINUTE,
    Cell,
    DrillArm,
    DrillClient,
    DrillOutcome,
    DrillRequest,
    Incident,
    Staging,
    answered_by,
    drill_frame,
    plan_cells,
    requests_that_fit,
    staged_scenario,
    summarise,
)
from freemodels.drill_clients import BudgetSpentError, PacedTransport, router_config
from freemodels.failures import Failure
from freemodels.records import DRILL_SCHEMA, RunInfo
from freemodels.sandbox.scenario import Behavior, Fault, Scenario
from freemodels.scheduler import RateLimiter
from freemodels.settings import Settings
from freemodels.source import SourceKind

PRIMARY = "vendor/primary:free"


# --- staging -------------------------------------------------------------------------------------


def test_each_incident_stages_what_it_says_on_the_primary_only() -> None:
    base = Scenario.from_mapping({"models": {PRIMARY: {"ttft_ms": 40, "provider": "Acme"}}})
    staging = Staging(requests=10, minute_clears_in_s=5)
    assert staged_scenario(base, Incident.STEADY, PRIMARY, staging) is base

    storm = staged_scenario(base, Incident.UPSTREAM_429_STORM, PRIMARY, staging).models[PRIMARY]
    assert storm.fault is Fault.STORM_429 and storm.ttft_ms == 40 and storm.provider == "Acme"

    ended = staged_scenario(base, Incident.FREE_VARIANT_ENDED, PRIMARY, staging).models[PRIMARY]
    assert ended.behavior is Behavior.FREE_VARIANT_ENDED and ended.ok_first == 5  # half the workload

    burst = staged_scenario(base, Incident.PROVIDER_5XX_BURST, PRIMARY, staging).models[PRIMARY]
    assert burst.fault is Fault.STORM_5XX and burst.fail_first == staging.burst_size == 3

    account = staged_scenario(base, Incident.ACCOUNT_MINUTE_LIMIT, PRIMARY, staging)
    assert account.models == base.models
    assert account.limits.requests_per_minute == FREE_TIER_REQUESTS_PER_MINUTE
    assert account.limits.requests_this_minute == FREE_TIER_REQUESTS_PER_MINUTE
    assert account.limits.minute_clears_in_s == 5 and account.limits.count_rejected
    for incident in Incident:
        assert staging.describe(incident)


def test_cells_follow_what_the_source_and_the_environment_allow() -> None:
    staged = [Incident.STEADY, Incident.UPSTREAM_429_STORM]
    everything = plan_cells(staged, litellm=True, openrouter_routing=True)
    assert len(everything) == 2 * 2 * 3
    assert everything[0] == Cell(DrillClient.MODELS_ARRAY, DrillArm.ROTATION, Incident.STEADY)
    without_litellm = plan_cells(staged, litellm=False, openrouter_routing=True)
    assert {c.client for c in without_litellm} == {DrillClient.MODELS_ARRAY}
    base_url = plan_cells([Incident.LIVE], litellm=True, openrouter_routing=False)
    assert [(c.client, c.arm) for c in base_url] == [
        (DrillClient.LITELLM, DrillArm.ROTATION),
        (DrillClient.LITELLM, DrillArm.PRIMARY),
    ]
    assert plan_cells([Incident.LIVE], litellm=False, openrouter_routing=False) == []


@pytest.mark.parametrize(
    ("cells", "requests", "budget", "expected"),
    [(30, 10, None, 10), (30, 10, 1000, 10), (30, 10, 95, 3), (30, 10, 29, 0), (0, 10, 5, 10)],
)
def test_requests_fit_the_budget(cells: int, requests: int, budget: int | None, expected: int) -> None:
    assert requests_that_fit(cells, requests, budget) == expected


def _info(**values: object) -> RunInfo:
    return RunInfo(
        run_id="r", started_at=datetime(2026, 11, 1, tzinfo=UTC), source="sandbox", base_url="", **values
    )  # type: ignore[arg-type]


def test_the_drill_gets_what_is_left_of_the_run_budget() -> None:
    settings = Settings()
    sandbox = SourceKind.SANDBOX
    assert drill_budget(budget=100, settings=settings, info=_info(), attempts_used=60, kind=sandbox) == 40
    assert drill_budget(budget=50, settings=settings, info=_info(), attempts_used=60, kind=sandbox) == 0
    # Without a budget: the quota before the run, never more than what it said was left after.
    info = _info(quota_before=1000, quota_after=900)
    assert drill_budget(budget=None, settings=settings, info=info, attempts_used=80, kind=sandbox) == 900
    assert drill_budget(budget=None, settings=settings, info=_info(), attempts_used=5, kind=sandbox) is None
    openrouter = drill_budget(
        budget=None, settings=settings, info=_info(), attempts_used=30, kind=SourceKind.OPENROUTER
    )
    assert openrouter == 20  # the free tier's 50 a day, less the run's 30


# --- summaries ------------------------------------------------------------------------------------


def _row(
    client: str,
    arm: str,
    seq: int,
    outcome: DrillOutcome,
    latency: float | None,
    attempts: int,
    by: str | None = None,
) -> DrillRequest:
    return DrillRequest(
        run_id="r",
        client=client,
        arm=arm,
        incident=Incident.UPSTREAM_429_STORM.value,
        purpose="general",
        seq=seq,
        started_at=None,
        outcome=outcome.value,
        latency_ms=latency,
        attempts=attempts,
        answered_by=by,
    )


def test_summaries_count_success_latency_and_attempts() -> None:
    rows = [_row("models_array", "rotation", i, DrillOutcome.OK, 100.0 * i, 1, "b") for i in range(1, 11)] + [
        _row("models_array", "primary", 1, DrillOutcome.ERROR, None, 3),
        _row("models_array", "primary", 2, DrillOutcome.WRONG_ANSWER, 50.0, 1, "a"),
        _row("models_array", "primary", 3, DrillOutcome.NOT_SENT, None, 0),
    ]
    frame = drill_frame(rows)
    assert frame.schema == pl.Schema(DRILL_SCHEMA)
    summary = summarise(frame, tail_min_answers=10)
    rotation, primary = summary.row(0, named=True), summary.row(1, named=True)
    assert (rotation["arm"], primary["arm"]) == ("rotation", "primary")  # the arms' order, not alphabetical
    assert rotation["n"] == 10 and rotation["success_rate"] == 1.0
    assert rotation["p50_ms"] == pytest.approx(550.0) and rotation["p95_ms"] == pytest.approx(955.0)
    assert rotation["attempts_per_request"] == 1.0
    # Not sent is left out of n; a wrong answer has a latency but is no success; no P95 from 1 answer.
    assert (primary["n"], primary["n_ok"], primary["not_sent"]) == (2, 0, 1)
    assert primary["p50_ms"] == 50.0 and primary["p95_ms"] is None and primary["n_answered"] == 1
    assert primary["attempts_per_request"] == 2.0
    assert summarise(frame, tail_min_answers=11).row(0, named=True)["p95_ms"] is None
    assert answered_by(frame)[(Incident.UPSTREAM_429_STORM.value, "models_array", "rotation")] == [("b", 10)]
    assert summarise(drill_frame([]), tail_min_answers=3).is_empty()


# --- LiteLLM's transport --------------------------------------------------------------------------


def _chat(transport: httpx.AsyncBaseTransport, model: str) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://x/api/v1") as client:
            response = await client.post("/chat/completions", json={"model": model, "messages": []})
            await response.aread()
            return response

    return asyncio.run(go())


def test_the_paced_transport_counts_classifies_and_stops_at_the_budget() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        if model == "busy":
            body = {
                "error": {
                    "message": "Provider returned error",
                    "code": 429,
                    "metadata": {"raw": "x is temporarily rate-limited upstream"},
                }
            }
            return httpx.Response(429, json=body)
        return httpx.Response(200, json={"ok": True})

    limiter = RateLimiter(60_000, 2)
    transport = PacedTransport(limiter, secret="sk-or-v1-secret", inner=httpx.MockTransport(server))
    refused = _chat(transport, "busy")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == 429  # the client still reads it
    assert _chat(transport, "fine").status_code == 200
    with pytest.raises(BudgetSpentError):
        _chat(transport, "fine")
    assert [(a.model, a.status, a.failure) for a in transport.attempts] == [
        ("busy", 429, Failure.RATE_LIMIT_UPSTREAM),
        ("fine", 200, None),
    ]
    assert transport.refused == 1 and limiter.used == 2


def test_the_router_config_points_every_deployment_at_the_source() -> None:
    config = {
        "model_list": [
            {"model_name": "general", "litellm_params": {"model": "openrouter/a", "api_key": "os.environ/X"}}
        ],
        "router_settings": {"fallbacks": [{"general": ["b"]}], "num_retries": 0},
    }
    pointed = router_config(config, api_base="http://127.0.0.1:9/api/v1", api_key="k")
    assert pointed["model_list"][0]["litellm_params"] == {
        "model": "openrouter/a",
        "api_key": "k",
        "api_base": "http://127.0.0.1:9/api/v1",
    }
    assert pointed["router_settings"] == config["router_settings"]
    only = [{"model_name": "openrouter/free", "litellm_params": {"model": "openrouter/openrouter/free"}}]
    free = router_config(config, api_base="http://h", api_key=None, only=only)
    assert [e["model_name"] for e in free["model_list"]] == ["openrouter/free"]
    assert free["router_settings"] == {"num_retries": 0}  # the same settings, no fallbacks
    assert config["model_list"][0]["litellm_params"]["api_key"] == "os.environ/X"  # not changed in place


def test_a_run_without_a_rotation_has_nothing_to_drill() -> None:
    from freemodels.records import ROTATION_SCHEMA
    from freemodels.source import PROFILES
    from freemodels.suite import build_suite
    from tasks.drill import DrillTarget, run_drill

    result = asyncio.run(
        run_drill(
            run_id="r",
            rotation=pl.DataFrame(schema=ROTATION_SCHEMA),
            target=DrillTarget(profile=PROFILES[SourceKind.OPENROUTER], base_url="http://127.0.0.1:9/api/v1"),
            settings=Settings(),
            tasks=build_suite(1),
            requests=5,
            budget=None,
            requests_per_minute=20,
        )
    )
    assert result.frame.is_empty() and result.frame.schema == pl.Schema(DRILL_SCHEMA)
    assert result.notes == ["No rotation to drill: no model worked."]


def test_a_finished_workload_is_one_progress_line() -> None:
    from datetime import UTC, datetime

    from freemodels.drill import Cell, DrillArm, DrillClient, DrillRequest, Incident
    from tasks.drill import workload_line

    def request(seq: int, outcome: str, latency_ms: float, attempts: int) -> DrillRequest:
        return DrillRequest(
            run_id="r", client="litellm", arm="primary", incident="upstream_429_storm", purpose="general",
            seq=seq, started_at=datetime(2026, 12, 1, tzinfo=UTC), outcome=outcome, latency_ms=latency_ms,
            attempts=attempts,
        )  # fmt: skip

    cell = Cell(DrillClient.LITELLM, DrillArm.PRIMARY, Incident.UPSTREAM_429_STORM)
    done = [request(1, "ok", 1500.0, 1), request(2, "error", 16500.0, 3)]
    assert workload_line(7, 30, cell, done) == (
        "drill 7/30: Upstream 429 storm, LiteLLM, primary alone: 1/2 answered right in 18.0 s, 4 requests"
    )

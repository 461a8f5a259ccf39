"""The adaptive plan through a whole discovery on the sandbox: a 50-request day, the free signals,
``--probe-all``, the progress line, resuming the rounds on the next day, and Prefect task runs named
after the rounds."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

from freemodels.failures import SETTLING
from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from tests.integration.sandbox_runs import run_plain, table, write_scenario

pytestmark = pytest.mark.integration

KEY_ENV = "FMD_ROUNDS_TEST_KEY"
KEY = "sk-or-v1-rounds-test-00000000000000000000000"
DAY_S = 86_400.0
FAST = {"ttft_ms": 20, "reasoning_ms": 0, "total_ms": 40, "keepalive_ms": 0}


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("DISCOVERY_BACKOFF_BASE_S", "0.05")
    monkeypatch.setenv("DISCOVERY_BACKOFF_MAX_S", "0.5")
    monkeypatch.setenv("DISCOVERY_LISTING_REQUESTS_PER_MINUTE", "100000")


def test_a_50_request_day_judges_every_free_model_and_deepens_rotation_candidates(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sandbox's default behaviours (seeded failures included): every free model gets a verdict,
    a model ruled out costs at most one request, the settled ones none, and the rest of the budget
    gives whole suites to rotation candidates."""
    scenario = write_scenario(tmp_path / "s.json", {"defaults": FAST})
    caplog.set_level(logging.INFO, logger="discovery")
    summary = run_plain(
        tmp_path / "data", tmp_path / "docs", source="sandbox", scenario=str(scenario), budget=50
    )
    db = Path(summary.database)
    probes = table(db, "probes", summary.run_id)
    results = table(db, "model_results", summary.run_id)
    endpoints = table(db, "endpoints", summary.run_id)

    assert probes.height == 50 and summary.probes_sent == 50
    assert summary.free_models == 29 and summary.tested_models == 29  # a verdict for every one
    assert results.filter(pl.col("verdict") == "untested_quota").is_empty()
    settled = results.filter((pl.col("n") == 0) & (pl.col("verdict") == "failing"))
    assert settled.height == summary.settled_models >= 2
    per_model = dict(probes.group_by("model_id").len().iter_rows())
    assert not set(settled.get_column("model_id")) & set(per_model)
    ruled_out = results.filter(pl.col("root_cause").is_in([f.value for f in SETTLING]) & (pl.col("n") > 0))
    assert all(per_model[m] == 1 for m in ruled_out.get_column("model_id"))
    assert endpoints.filter(pl.col("listing").is_not_null()).get_column("model_id").n_unique() == 29

    rotation = table(db, "rotation", summary.run_id).filter(pl.col("purpose") == "general").sort("rank")
    full = {m for m, n in per_model.items() if n == 3}
    assert set(rotation.get_column("model_id").head(3)) <= full  # primary and two fallbacks: whole suites
    report = (tmp_path / "docs" / "final-report.md").read_text()
    assert "| Requests spent | 50: screening 27" in report and "marked † below" in report
    assert "## Reported beside measured" in report
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("requests ")]
    assert progress and progress[-1].startswith("requests 50/50 · judged 29/29 models")
    rounds = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round-")]
    assert rounds[0].startswith("round-1-screening: 27 requests to 27 models")
    assert any(line.startswith("round-2-retries") for line in rounds)
    # The run's own budget of 50 stopped it, with the sandbox's daily quota of 1000 far from spent.
    assert "left for later (budget)" in summary.describe()


def test_probe_all_sends_chat_requests_to_the_models_the_free_signals_settle(tmp_path: Path) -> None:
    scenario = write_scenario(tmp_path / "s.json", {"defaults": FAST})
    summary = run_plain(
        tmp_path / "data", tmp_path / "docs", source="sandbox", scenario=str(scenario), probe_all=True
    )
    db = Path(summary.database)
    results = table(db, "model_results", summary.run_id)
    assert summary.settled_models == 0
    endpoints = table(db, "endpoints", summary.run_id)
    empty = set(endpoints.filter(pl.col("listing") == "empty").get_column("model_id"))
    assert empty
    probed = results.filter(pl.col("model_id").is_in(list(empty)))
    assert probed.get_column("n").min() == 1 and set(probed.get_column("root_cause")) == {"no_endpoints"}
    assert "404" in probed.item(0, "evidence")  # the chat answer, not the listing, is the evidence


class Clock:
    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


def test_a_resumed_run_continues_the_rounds_on_the_next_day_without_repeating_a_probe(tmp_path: Path) -> None:
    clock = Clock()
    scenario = Scenario.from_mapping(
        {"limits": {"api_key": KEY, "requests_per_day": 35}, "defaults": {"behavior": "ok", **FAST}}
    )
    data, docs = tmp_path / "data", tmp_path / "docs"
    with SandboxServer(scenario, wall_clock=clock) as server:
        first = run_plain(data, docs, base_url=server.base_url, api_key_env=KEY_ENV)
        day1 = table(Path(first.database), "probes", first.run_id)
        clock.offset_s += DAY_S
        second = run_plain(data, docs, resume="latest")
        clock.offset_s += DAY_S
        third = run_plain(data, docs, resume="latest")
    assert first.untested_models > 0 and second.run_id == third.run_id == first.run_id
    screened = day1.filter(pl.col("task") == "json_object").get_column("model_id")
    assert screened.n_unique() == 29 and day1.height < 29 * 3  # day 1: every model screened first
    probes = table(Path(third.database), "probes", first.run_id)
    keys = probes.group_by("model_id", "task", "sample").len()
    assert keys.get_column("len").max() == 1  # nothing sent twice
    assert third.untested_models == 0 and keys.height == 29 * 3


def test_prefect_task_runs_are_named_after_the_rounds(tmp_path: Path, prefect_harness: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.discovery import discovery

    scenario = write_scenario(tmp_path / "s.json", {"defaults": FAST, "models": {}})
    summary = asyncio.run(
        discovery(
            source="sandbox",
            scenario=str(scenario),
            budget=40,
            max_models=8,
            data_dir=str(tmp_path / "data"),
            docs_dir=str(tmp_path / "docs"),
        )
    )
    run = table(Path(summary.database), "runs", summary.run_id)
    flow_run_id = uuid.UUID(run.item(0, "prefect_flow_run_id"))

    async def names() -> list[str]:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        return [r.name for r in runs]

    got = asyncio.run(names())
    rounds = sorted(n for n in got if n.startswith("round-"))
    assert rounds and rounds[0] == "round-1-screening"
    assert all(n.split("-")[2] in ("screening", "retries", "deepening") for n in rounds)
    assert any(n.startswith("read-free-signals") for n in got)

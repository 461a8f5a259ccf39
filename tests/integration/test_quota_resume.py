"""The account's limits at the level of a whole discovery, counted by the sandbox itself.

The sandbox runs in this process and the discovery talks to it through ``--base-url``, so one set of
counters covers every run of a test (a run started by the flow would get a fresh sandbox each time).
The daily quota follows the sandbox's wall clock, which the test moves to the next UTC day.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from freemodels.failures import Failure
from freemodels.families import family_of
from freemodels.sandbox import limits as sandbox_limits
from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from tests.integration.sandbox_runs import FREE, final_attempts, only, run_plain, table

pytestmark = pytest.mark.integration

KEY_ENV = "FMD_QUOTA_TEST_KEY"
KEY = "sk-or-v1-quota-test-0000000000000000000000"
DAY_S = 86_400.0


class Clock:
    """Wall clock of the sandbox: real time plus whole days the test skips ahead."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def next_day(self) -> None:
        self.offset_s += DAY_S


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv("DISCOVERY_BACKOFF_BASE_S", "0.05")
    monkeypatch.setenv("DISCOVERY_READ_TIMEOUT_S", "5")


def sandbox(limits: dict[str, object], models: list[str], clock: Clock | None = None) -> SandboxServer:
    scenario = Scenario.from_mapping(
        {
            "limits": {"api_key": KEY, **limits},
            "catalog": only(models),
            "defaults": {"behavior": "ok", "ttft_ms": 20, "total_ms": 40, "keepalive_ms": 0},
        }
    )
    return SandboxServer(scenario, wall_clock=clock or time.time)


@pytest.fixture
def scaled_window(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    """The sandbox's 60 s window shortened to 2 s, so that several windows fit in a short test."""
    window_s = 2.0
    monkeypatch.setattr(sandbox_limits, "WINDOW_S", window_s)
    yield window_s


def test_a_discovery_never_exceeds_the_per_minute_limit_across_families(
    tmp_path: Path, scaled_window: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three families probe concurrently through one account-wide limiter: the sandbox never sees
    more than R requests in any (scaled) window and refuses none. The run is paced at R per 2.2 s
    (110 per minute on the scaled clock: the limiter's own margin plus 10 % for arrival jitter)."""
    per_window = 4
    models = [FREE[0], FREE[5], FREE[12]]  # three different families
    with sandbox({"requests_per_minute": per_window}, models) as server:
        started = time.monotonic()
        summary = run_plain(
            tmp_path / "data",
            tmp_path / "docs",
            base_url=server.base_url,
            api_key_env=KEY_ENV,
            requests_per_minute=110,
        )
        wall = time.monotonic() - started
        stats = server.stats()
    assert len({family_of(m) for m in models}) == 3
    assert summary.status == "completed" and summary.working_models == 3
    assert stats["chat_requests"] == 9
    assert stats["rejected_429_per_min"] == 0
    assert stats["max_requests_in_any_60s"] <= per_window  # "60s" is the scaled window here
    assert wall >= 8 * 60 / 110  # 9 starts, evenly spaced: the pacing really happened

    # Control: without the run's pacing (the sandbox's own 600/min), the same staging is exceeded.
    monkeypatch.setenv("DISCOVERY_MAX_ATTEMPTS", "1")
    with sandbox({"requests_per_minute": per_window}, models) as server:
        unpaced = run_plain(
            tmp_path / "data2", tmp_path / "docs2", base_url=server.base_url, api_key_env=KEY_ENV
        )
        control = server.stats()
    assert control["rejected_429_per_min"] > 0
    # The account's refusals are not planned again and again: each of the 9 probes is sent at most
    # once (DISCOVERY_MAX_ATTEMPTS=1), and what was refused is left for --resume.
    assert control["chat_requests"] <= 9
    assert unpaced.status == "completed" and unpaced.untested_models > 0
    assert "left for later (account limit)" in unpaced.describe()  # not "quota": the quota had requests


def test_hitting_the_daily_quota_stops_the_run_and_resume_completes_it_without_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Day 1: the run may send 100 requests (``budget``) but the account has 7 left; the 8th is
    refused (429 free-models-per-day), the run stops probing at once and completes with the models
    it could not reach counted as untested. Day 2: ``resume`` continues it, plans from ``/key`` (7
    left), sends only the probes without a result, and completes with nothing untested.
    Every probe got exactly one answer; only the refused one was sent twice."""
    monkeypatch.setenv("DISCOVERY_MAX_CONCURRENCY", "1")  # one request in flight: exact counts
    models = list(FREE[:4])
    clock = Clock()
    data, docs = tmp_path / "data", tmp_path / "docs"
    with sandbox({"requests_per_day": 7}, models, clock) as server:
        first = run_plain(data, docs, base_url=server.base_url, api_key_env=KEY_ENV, budget=100)
        day1 = server.stats()
        db = Path(first.database)
        probes1 = table(db, "probes", first.run_id)
        status1 = table(db, "runs").filter(pl.col("run_id") == first.run_id).item(0, "status")

        clock.next_day()
        second = run_plain(data, docs, resume="latest")
        day2 = server.stats()

    assert first.status == "completed" and first.untested_models > 0
    # The refused request counts toward the quota too ("failed attempts still count").
    assert day1["day_count"] == 8 and day1["rejected_429_per_day"] == 1
    assert day1["chat_requests"] == 8  # stopped at the first refusal: nothing sent after it
    refused = probes1.filter(pl.col("failure") == Failure.RATE_LIMIT_ACCOUNT.value)
    assert refused.height == 1 and refused.item(0, "error_code").startswith("free-models-per-day")
    assert status1 == "completed"

    assert second.run_id == first.run_id and second.status == "completed"
    assert second.untested_models == 0
    assert day2["rejected_429_per_day"] == 1  # planned from /key: no refusal on day 2
    assert day2["day_count"] == 12 - 7  # only the probes without a result were sent
    assert day2["chat_requests"] == 8 + 5

    probes = table(db, "probes", first.run_id)
    finals = final_attempts(probes)
    assert finals.height == 12 and finals.get_column("passed").all()
    # Exactly once: every probe has one answered attempt; the refused one was numbered on (2).
    answered = probes.filter(pl.col("failure").is_null())
    assert answered.group_by("model_id", "task", "sample").len().get_column("len").to_list() == [1] * 12
    again = probes.join(refused.select("model_id", "task", "sample"), on=["model_id", "task", "sample"])
    assert sorted(again.get_column("attempt").to_list()) == [1, 2]
    # The sandbox saw each model exactly as often as the database has attempts of it.
    per_model = probes.group_by("model_id").len()
    assert dict(per_model.iter_rows()) == day2["per_model"]
    assert table(db, "runs").filter(pl.col("run_id") == first.run_id).item(0, "status") == "completed"

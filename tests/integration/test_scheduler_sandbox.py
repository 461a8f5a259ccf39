"""The plan runner against the sandbox: the sandbox's own counters show that a run keeps to the staged
per-minute and per-day limits, sends nothing after the daily quota is gone, and takes about N/R."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from freemodels.client import build_http_client, fetch_key_info
from freemodels.failures import Failure
from freemodels.records import ProbeSpec
from freemodels.sandbox import limits as sandbox_limits
from freemodels.sandbox.catalog import build_catalog
from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from freemodels.scheduler import PlanOutcome, RateLimiter, run_plan
from freemodels.settings import Settings
from freemodels.suite import TASKS, build_suite

pytestmark = pytest.mark.integration

KEY = "sk-or-v1-schedulertest000000000000000000"
SUITE = {t.name: t for t in build_suite(4242)}
FREE = sorted(m for m in build_catalog(Scenario.from_mapping({}).catalog).free_ids() if m.endswith(":free"))


def specs(models: Sequence[str], tasks: Sequence[str] = TASKS) -> list[ProbeSpec]:
    return [ProbeSpec(model_id=m, family=m, task=t) for m in models for t in tasks]


def plan_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "max_concurrency": 8,
        "backoff_base_s": 0.05,
        "backoff_max_s": 5.0,
        "probe_deadline_s": 10.0,
        "read_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def run(
    base_url: str, plan: list[ProbeSpec], limiter: RateLimiter, cfg: Settings | None = None
) -> tuple[PlanOutcome, float]:
    cfg = cfg or plan_settings()
    async with build_http_client(cfg, base_url=base_url, api_key=KEY) as client:
        start = time.monotonic()
        outcome = await run_plan(client, plan, SUITE, cfg, limiter, run_id="it")
        return outcome, time.monotonic() - start


def scenario(rpm: int, rpd: int, **limits: Any) -> Scenario:
    return Scenario.from_mapping(
        {
            "limits": {"requests_per_minute": rpm, "requests_per_day": rpd, **limits},
            "defaults": {"ttft_ms": 20, "total_ms": 40},
        }
    )


def test_run_at_the_staged_limit_has_no_429_and_takes_n_over_r() -> None:
    rpm = 1200
    plan = specs(FREE[:10])
    with SandboxServer(scenario(rpm, 10_000)) as server:
        outcome, wall = asyncio.run(run(server.base_url, plan, RateLimiter(rpm, None)))
        stats = server.stats()
    sent = len(outcome.results)
    assert sent >= len(plan) and not outcome.unsent
    assert stats["chat_requests"] == sent
    assert stats["rejected_429_account"] == 0
    assert stats["max_requests_in_any_60s"] <= rpm
    bound = sent / rpm * 60
    assert wall / bound < 1.3, (wall, bound)
    assert any(r.failure is None for r in outcome.results)


def test_never_more_than_r_in_any_window_when_n_exceeds_r(monkeypatch: pytest.MonkeyPatch) -> None:
    """N > R needs more than one window. To keep the test short, the sandbox's window is scaled down
    from 60 s to 3 s (its counters use the module constant), and the limiter is given the same rate
    on that scale: R per 3 s = 20 R per minute. Its margin is set to 3 s per minute, i.e. 150 ms per
    scaled window, to absorb arrival jitter on a busy machine as the default 1 s does per real minute."""
    window_s, per_window = 3.0, 8
    monkeypatch.setattr(sandbox_limits, "WINDOW_S", window_s)
    plan = specs(FREE[:5])  # 15 requests: almost two windows' worth
    with SandboxServer(scenario(per_window, 10_000)) as server:
        limiter = RateLimiter(int(per_window * 60 / window_s), None, margin_s=3.0)
        outcome, wall = asyncio.run(run(server.base_url, plan, limiter))
        paced = server.stats()
    assert paced["rejected_429_account"] == 0
    assert paced["max_requests_in_any_60s"] <= per_window  # "60s" is the scaled 3 s window here
    assert paced["chat_requests"] == len(outcome.results) >= len(plan)
    assert wall >= (len(outcome.results) - 1) * window_s / per_window

    # Control: the same requests without pacing do exceed the window, and the sandbox says so.
    with SandboxServer(scenario(per_window, 10_000)) as server:

        async def unpaced() -> None:
            async with httpx.AsyncClient(base_url=server.base_url + "/") as client:
                for spec in plan:
                    body = {"model": spec.model_id, "messages": SUITE[spec.task].messages(), "stream": True}
                    await client.post(
                        "chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
                    )

        asyncio.run(unpaced())
        control = server.stats()
    assert control["rejected_429_per_min"] > 0


@pytest.mark.parametrize("concurrency", [1, 4])
def test_daily_quota_429_stops_the_run(concurrency: int) -> None:
    """The limiter does not know the quota; the server's per-day 429 stops the run at once."""
    plan = specs(FREE[:8])  # 24 probes, quota 10
    with SandboxServer(scenario(600, 10)) as server:
        outcome, _ = asyncio.run(
            run(server.base_url, plan, RateLimiter(600, None), plan_settings(max_concurrency=concurrency))
        )
        stats = server.stats()
    day_limited = [r for r in outcome.results if r.failure is Failure.RATE_LIMIT_ACCOUNT]
    assert outcome.quota_exhausted and day_limited
    assert all(r.error_code and r.error_code.startswith("free-models-per-day") for r in day_limited)
    # Only requests already in flight when the first daily 429 came back can meet it too; those
    # refused requests count toward the quota as well ("failed attempts still count").
    assert 1 <= stats["rejected_429_per_day"] <= concurrency
    assert stats["day_count"] == 10 + stats["rejected_429_per_day"]
    assert stats["chat_requests"] == len(outcome.results)
    attempted = {(r.model_id, r.task) for r in outcome.results}
    assert {(s.model_id, s.task) for s in outcome.unsent} == {(s.model_id, s.task) for s in plan} - attempted
    if concurrency == 1:
        assert len(outcome.unsent) == len(plan) - len(attempted) > 0


def test_quota_from_the_key_endpoint_prevents_any_429() -> None:
    plan = specs(FREE[:4])  # 12 probes, 5 left today
    with SandboxServer(scenario(600, 50, requests_used_today=45)) as server:

        async def go() -> tuple[PlanOutcome, int | None]:
            cfg = plan_settings()
            async with build_http_client(cfg, base_url=server.base_url, api_key=KEY) as client:
                info = await fetch_key_info(client)
                assert info is not None
                limiter = RateLimiter(600, info.daily_remaining)
                outcome = await run_plan(client, plan, SUITE, cfg, limiter, run_id="it")
                after = await fetch_key_info(client)
                return outcome, after.daily_remaining if after else None

        outcome, remaining_after = asyncio.run(go())
        stats = server.stats()
    assert stats["rejected_429_account"] == 0
    assert len(outcome.results) == 5 and outcome.quota_exhausted
    assert len(outcome.unsent) == len(plan) - 5
    assert remaining_after == 0

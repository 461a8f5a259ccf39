"""Benchmark: what does a 50-request day buy, planned in rounds against planned up front?

The default sandbox (its catalog and seeded behaviours: 29 free models, among them a model without
endpoints, one excluded by the account's privacy settings, one whose free variant ended, one answering
an upstream 429, one answering 502, an empty reply, a wrong answer and a reasoning model that runs out
of tokens) is staged with a free account's limits: 20 requests per minute and 50 per day. Two sides
run at once, each against a sandbox of its own (two accounts), through the project's own code:

- **static**: the plan runs used before (:func:`tasks.plan_probes.plan_probes`: whole suites, family
  first, cut to the budget with a 10 % retry reserve), one scheduler plan per family sharing one
  limiter, retries at once;
- **adaptive**: the free signals (endpoints listings, ``models/user``), then the round plan of
  :mod:`freemodels.rounds` sent round by round (:func:`tasks.probe_round.run_rounds`).

Both are analysed and ranked by the pipeline's own steps. Figures per side: free models with a verdict
(working, degraded or failing), verdicts per request, requests sent to models a failure rules out
(wrong id, no endpoints, free variant ended, privacy, ...: the most any one of them got), rotation
models with the whole suite (of the primary and two fallbacks, the ids rotation.json puts in
``models``) and the time until every free model was judged, counted from the first chat request.
A model is judged once it answered, failed for good, was settled by its listing, or failed
transiently and had the look the plan gives it before moving on. The floor is one request per free
model at the staged pace: 29 models at 20 a minute, 87 s.

Real time, as the account allows it: a full run takes about two and a half minutes.

    uv run python bench/bench_quota.py            # 20/min, 50/day, ~2.5 minutes
    uv run python bench/bench_quota.py --quick    # 3000/min and answers in 20-60 ms (smoke run,
                                                  # a few seconds; the same requests and counts, but
                                                  # the time ratio is then bound by latency)

Prints a table, then the ratio lines last. Targets: at least 28 of the 29 free models with a verdict,
at most one request per model a failure rules out, at least 3 rotation models with the whole suite,
and every free model judged within 1.15 x the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import polars as pl

from freemodels import storage
from freemodels.catalog import parse_catalog
from freemodels.client import build_http_client, fetch_catalog_bytes, fetch_key_info
from freemodels.failures import SETTLING
from freemodels.records import ProbeResult, ProbeSpec, Verdict, probes_frame
from freemodels.rounds import RoundPlanner
from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from freemodels.scheduler import RateLimiter, run_plan
from freemodels.settings import OPENROUTER_MODELS_LIMIT, Settings
from freemodels.suite import TASKS, build_suite
from tasks.analyze_failures import analyze_run
from tasks.filter_free import free_models
from tasks.free_signals import read_free_signals
from tasks.plan_probes import plan_probes, plan_rounds
from tasks.probe_round import RoundContext, run_rounds
from tasks.rank import GENERAL, assign_tiers, build_rotation, providers_from_probes

KEY = "sk-or-v1-benchmark-quota-0000000000000000000"
DAY = 50
RPM = 20
QUICK_RPM = 3000
QUICK_TIMING = {"ttft_ms": 20, "reasoning_ms": 10, "total_ms": 60, "keepalive_ms": 0}
TARGET_VERDICTS = 28
TARGET_PER_DEFINITIVE = 1
TARGET_FULL_ROTATION = OPENROUTER_MODELS_LIMIT
TARGET_JUDGE_RATIO = 1.15
SETTLING_VALUES = frozenset(f.value for f in SETTLING)


@dataclass
class Side:
    """One side's run: what was sent, when each model was judged, what the pipeline made of it."""

    name: str
    free: int = 0
    requests: int = 0
    per_model: dict[str, int] = field(default_factory=dict)
    results: pl.DataFrame | None = None
    rotation: pl.DataFrame | None = None
    first_request: float | None = None  # wall clock
    judged_at: dict[str, float] = field(default_factory=dict)  # model -> wall clock
    rounds: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def verdicts(self) -> int:
        assert self.results is not None
        tested = (Verdict.WORKING.value, Verdict.DEGRADED.value, Verdict.FAILING.value)
        return int(self.results.get_column("verdict").is_in(tested).sum())

    @property
    def per_request(self) -> float:
        return self.verdicts / self.requests if self.requests else 0.0

    def definitive(self) -> dict[str, int]:
        """Models a failure rules out -> the requests each got."""
        assert self.results is not None
        ruled_out = self.results.filter(pl.col("root_cause").is_in(list(SETTLING_VALUES)))
        return {m: self.per_model.get(m, 0) for m in ruled_out.get_column("model_id").to_list()}

    def full_suite_rotation(self) -> tuple[int, list[str]]:
        """Of the primary and its fallbacks in ``models`` (rotation.json), those with the whole suite."""
        assert self.rotation is not None and self.results is not None
        chain = (
            self.rotation.filter(pl.col("purpose") == GENERAL)
            .sort("rank")
            .get_column("model_id")
            .head(OPENROUTER_MODELS_LIMIT)
            .to_list()
        )
        n = dict(self.results.select("model_id", "n").iter_rows())
        return sum(1 for m in chain if (n.get(m) or 0) >= len(TASKS)), chain

    def time_to_judge_all(self) -> float | None:
        """Seconds from the first chat request until every free model was judged (None: never)."""
        if len(self.judged_at) < self.free or self.first_request is None:
            return None
        return max(0.0, max(self.judged_at.values()) - self.first_request)


def scenario(rpm: int, *, quick: bool = False) -> Scenario:
    """The default sandbox with a free account's limits (``quick``: every answer in tens of ms; the
    behaviours stay the seed's)."""
    mapping: dict[str, Any] = {
        "limits": {"api_key": KEY, "requests_per_minute": rpm, "requests_per_day": DAY}
    }
    if quick:
        mapping["defaults"] = QUICK_TIMING
    return Scenario.from_mapping(mapping)


async def _prepare(client: httpx.AsyncClient, base_url: str) -> tuple[pl.DataFrame, pl.DataFrame, int | None]:
    catalog = parse_catalog(await fetch_catalog_bytes(client), origin=base_url)
    key = await fetch_key_info(client)
    return catalog, free_models(catalog), key.daily_remaining if key else None


def _first_started(results: Sequence[ProbeResult]) -> float | None:
    starts = [r.started_at for r in results if isinstance(r.started_at, datetime)]
    return min(starts).timestamp() if starts else None


def _conclude(
    side: Side,
    results: list[ProbeResult],
    free: pl.DataFrame,
    catalog: pl.DataFrame,
    endpoints: pl.DataFrame | None,
    stats: dict[str, Any],
) -> None:
    probes = probes_frame(results)
    analysed = analyze_run(probes, free, catalog.get_column("model_id").to_list(), "bench", [], endpoints)
    tiered = assign_tiers(analysed, min_samples=Settings().min_samples_for_tier)
    side.results = tiered
    side.rotation = build_rotation(tiered, catalog, run_id="bench", providers=providers_from_probes(probes))
    side.requests = int(stats["chat_requests"])
    side.per_model = {str(k): int(v) for k, v in stats["per_model"].items()}
    side.first_request = _first_started(results)
    side.free = free.height


async def run_static(
    base_url: str, settings: Settings, rpm: int
) -> tuple[Side, list[ProbeResult], pl.DataFrame, pl.DataFrame]:
    """The plan runs used before: whole suites, family first, cut to the budget; retries at once."""
    side = Side("static")
    results: list[ProbeResult] = []
    async with build_http_client(settings, base_url=base_url, api_key=KEY) as client:
        catalog, free, budget = await _prepare(client, base_url)
        plan = plan_probes(free, list(TASKS), samples=settings.samples_per_task, budget=budget)
        limiter = RateLimiter(rpm, budget)
        semaphore = asyncio.Semaphore(settings.max_concurrency)
        tasks = {t.name: t for t in build_suite(1)}

        def on_result(result: ProbeResult) -> None:
            results.append(result)
            done = storage.completed_probe_keys(probes_frame(results), max_attempts=settings.max_attempts)
            for model_id, _task, _sample in done:
                side.judged_at.setdefault(model_id, time.time())

        by_family: dict[str, list[ProbeSpec]] = {}
        for spec in plan.specs:
            by_family.setdefault(spec.family, []).append(spec)
        start = time.monotonic()
        await asyncio.gather(
            *(
                run_plan(
                    client,
                    specs,
                    tasks,
                    settings,
                    limiter,
                    run_id="bench",
                    on_result=on_result,
                    semaphore=semaphore,
                )
                for _, specs in sorted(by_family.items())
            )
        )
        side.wall_s = time.monotonic() - start
    return side, results, catalog, free


async def run_adaptive(
    base_url: str, settings: Settings, rpm: int
) -> tuple[Side, list[ProbeResult], pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The free signals, then the round plan."""
    side = Side("adaptive")
    results: list[ProbeResult] = []
    async with build_http_client(settings, base_url=base_url, api_key=KEY) as client:
        catalog, free, budget = await _prepare(client, base_url)
        endpoints = await read_free_signals(
            client,
            free,
            catalog.get_column("model_id").to_list(),
            run_id="bench",
            settings=settings,
            lists_endpoints=True,
            reads_user_models=True,
        )
        planner: RoundPlanner = plan_rounds(
            free,
            list(TASKS),
            endpoints=endpoints,
            done=probes_frame([]),
            samples=settings.samples_per_task,
            max_attempts=settings.max_attempts,
            batch=settings.rotation_models_limit,
        )
        limiter = RateLimiter(rpm, budget)
        stamp = _stamper(side, planner)
        stamp(None)  # those settled by their listings are judged before any chat request

        def on_result(result: ProbeResult) -> None:
            results.append(result)
            planner.observe(result)
            stamp(result)

        ctx = RoundContext(
            client=client,
            settings=settings,
            limiter=limiter,
            tasks={t.name: t for t in build_suite(1)},
            run_id="bench",
            on_result=on_result,
            attempt_offset={},
            semaphore=asyncio.Semaphore(settings.max_concurrency),
            cost_guard=False,
        )
        start = time.monotonic()
        await run_rounds(
            planner,
            ctx,
            starting=lambda r: side.rounds.append(f"{r.name} ({len(r.specs)})"),
            ended=lambda r, outcome: stamp(None),  # a deferred retry's end can judge a model
        )
        side.wall_s = time.monotonic() - start
    return side, results, catalog, free, endpoints


def _stamper(side: Side, planner: RoundPlanner) -> Callable[[ProbeResult | None], None]:
    def stamp(_result: ProbeResult | None) -> None:
        now = time.time()
        for model_id in planner.judged_models:
            side.judged_at.setdefault(model_id, now)

    return stamp


async def run_both(rpm: int, settings: Settings, *, quick: bool = False) -> tuple[Side, Side]:
    staged = scenario(rpm, quick=quick)
    with SandboxServer(staged) as static_box, SandboxServer(staged) as adaptive_box:
        (
            (static, s_results, s_catalog, s_free),
            (adaptive, a_results, a_catalog, a_free, endpoints),
        ) = await asyncio.gather(
            run_static(static_box.base_url, settings, rpm),
            run_adaptive(adaptive_box.base_url, settings, rpm),
        )
        _conclude(static, s_results, s_free, s_catalog, None, static_box.stats())
        _conclude(adaptive, a_results, a_free, a_catalog, endpoints, adaptive_box.stats())
    # The listing-settled models were judged before the first chat request: count them from it.
    if adaptive.first_request is not None:
        for model_id, at in adaptive.judged_at.items():
            adaptive.judged_at[model_id] = max(at, adaptive.first_request)
    return static, adaptive


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpm", type=int, default=RPM, help=f"staged requests per minute (default {RPM})")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_RPM} per minute, answers in tens of ms (smoke run)"
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    rpm = QUICK_RPM if args.quick else args.rpm
    if rpm < 1:
        parser.error("need --rpm >= 1")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The listings' own polite pace (240 a minute) is kept except in the smoke run; they are read before
    # the first chat request, so they are not part of the time to judge.
    listing_rpm = 100_000 if args.quick else Settings().listing_requests_per_minute
    settings = Settings(requests_per_minute=rpm, listing_requests_per_minute=listing_rpm)
    static, adaptive = asyncio.run(run_both(rpm, settings, quick=args.quick))

    floor_s = adaptive.free * 60 / rpm
    print(
        f"default sandbox: {adaptive.free} free models; staged limits {rpm}/min and {DAY}/day; "
        "both sides at once"
    )
    print(f"adaptive rounds: {', '.join(adaptive.rounds)}")
    header = (
        f"{'plan':9} {'requests':>8} {'verdicts':>8} {'per req':>8} {'ruled out':>9} {'max req':>7} "
        f"{'full rot':>8} {'judged s':>9} {'wall s':>7}"
    )
    print(header)
    figures: dict[str, dict[str, Any]] = {}
    for side in (static, adaptive):
        ruled = side.definitive()
        full, chain = side.full_suite_rotation()
        judged = side.time_to_judge_all()
        figures[side.name] = {
            "requests": side.requests,
            "verdicts": side.verdicts,
            "free": side.free,
            "verdicts_per_request": round(side.per_request, 4),
            "ruled_out_models": len(ruled),
            "ruled_out_requests": sum(ruled.values()),
            "max_requests_per_ruled_out": max(ruled.values(), default=0),
            "rotation_full_suite": full,
            "rotation_models": chain,
            "time_to_judge_all_s": None if judged is None else round(judged, 2),
            "judged": len(side.judged_at),
            "wall_s": round(side.wall_s, 2),
        }
        shown = f"{judged:9.1f}" if judged is not None else f"{'never':>9}"
        print(
            f"{side.name:9} {side.requests:8d} {side.verdicts:5d}/{side.free:<2d} {side.per_request:8.3f} "
            f"{len(ruled):9d} {max(ruled.values(), default=0):7d} {full:6d}/{len(chain)} {shown} "
            f"{side.wall_s:7.1f}"
        )
        if ruled:
            spent = ", ".join(f"{m} {n}" for m, n in sorted(ruled.items()))
            print(f"  {side.name}: requests to models a failure ruled out: {spent}")
    judged_s = adaptive.time_to_judge_all()
    ratio = judged_s / floor_s if judged_s is not None else float("inf")
    if args.json:
        print(
            json.dumps(
                {
                    "rpm": rpm,
                    "day": DAY,
                    "floor_s": round(floor_s, 2),
                    "ratio_judge": round(ratio, 4),
                    **figures,
                }
            )
        )

    a, s = figures["adaptive"], figures["static"]
    static_judge = (
        "never" if s["time_to_judge_all_s"] is None else f"{s['time_to_judge_all_s'] / floor_s:.3f}"
    )
    gain = (
        a["verdicts_per_request"] / s["verdicts_per_request"] if s["verdicts_per_request"] else float("inf")
    )
    print(
        f"ratio verdicts adaptive={a['verdicts']}/{a['free']} static={s['verdicts']}/{s['free']} "
        f"target>={TARGET_VERDICTS} {_verdict(a['verdicts'] >= TARGET_VERDICTS)}"
    )
    print(
        f"ratio verdicts_per_request adaptive={a['verdicts_per_request']:.3f} "
        f"static={s['verdicts_per_request']:.3f} adaptive/static={gain:.2f}"
    )
    print(
        f"ratio requests_per_ruled_out_model adaptive_max={a['max_requests_per_ruled_out']} "
        f"static_max={s['max_requests_per_ruled_out']} target<={TARGET_PER_DEFINITIVE} "
        f"{_verdict(a['max_requests_per_ruled_out'] <= TARGET_PER_DEFINITIVE)}"
    )
    print(
        f"ratio rotation_with_full_suite adaptive={a['rotation_full_suite']} "
        f"static={s['rotation_full_suite']} target>={TARGET_FULL_ROTATION} "
        f"{_verdict(a['rotation_full_suite'] >= TARGET_FULL_ROTATION)}"
    )
    print(
        f"ratio time_to_judge_all/floor={ratio:.3f} static={static_judge} floor={floor_s:.0f}s "
        f"target<={TARGET_JUDGE_RATIO:g} {_verdict(ratio <= TARGET_JUDGE_RATIO)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

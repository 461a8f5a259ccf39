"""Benchmark: how close does a run come to the bound its rate limit sets?

Runs the full suite (every free model of the sandbox catalog x every task) against the sandbox at a
staged account limit of R requests per minute, through the real scheduler (:func:`run_plan`), and
compares its wall time with the bound N / R (N = requests actually sent, retries included). Then it
sends the same probes the way a naive client does: one at a time, each waiting for the previous one,
and compares the two.

The staged latencies are longer than the pacing interval 60 / R, so a sequential client is bound by
latency while the scheduler, running several probes at once, is bound by the rate limit only.

Stalls: the suite runs twice more with 10 % of the models stalling (the stream opens, keep-alive
comments arrive, no token ever does) until the probe deadline D ends them; the scheduler retries such
timeouts (the taxonomy says a retry can help). Once with the stalling models first in the plan, once
spread over it. A stalled probe's attempts follow one another, so no scheduler that keeps the plan's
order and the retry policy can finish before ``i * 60 / R + k * D + backoffs`` (plan position i, k
attempts, the shortest backoffs the policy allows). The bound of a stall run is the larger of that
critical path and N / R.

    uv run python bench/bench_scheduler.py            # full suite, ~1.5 minutes
    uv run python bench/bench_scheduler.py --quick    # 8 models, ~30 seconds

Prints a table, then the ratio lines last: ``wall/bound`` for the plain run and both stall runs
(target: within 10 % of 1.0) and ``sequential/concurrent``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from freemodels.catalog import parse_catalog
from freemodels.client import build_http_client, fetch_catalog_bytes
from freemodels.probe import probe_once
from freemodels.records import ProbeResult, ProbeSpec
from freemodels.sandbox.catalog import build_catalog
from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from freemodels.scheduler import RateLimiter, run_plan
from freemodels.settings import Settings
from freemodels.suite import TASKS, build_suite

KEY = "sk-or-v1-benchmark00000000000000000000000"
QUICK_MODELS = 8
TARGET = 1.10


@dataclass(frozen=True, slots=True)
class RunStats:
    """One measured run."""

    label: str
    wall_s: float
    sent: int
    passed: int
    rejected_429: int
    max_in_60s: int
    results: list[ProbeResult]


def build_scenario(
    rpm: int, latency_ms: tuple[int, int], seed: int, stalling: Sequence[str] = ()
) -> Scenario:
    """The sandbox's seeded behaviours, with every free model's latency drawn from ``latency_ms``.

    Models in ``stalling`` open their stream and then send only keep-alive comments, forever.
    """
    rng = random.Random(seed)
    models: dict[str, dict[str, int | str]] = {}
    for model_id in sorted(build_catalog(Scenario.from_mapping({}).catalog).free_ids()):
        total = rng.randint(*latency_ms)
        models[model_id] = {"ttft_ms": max(1, total * 3 // 10), "total_ms": total, "keepalive_ms": 0}
    for model_id in stalling:
        models[model_id] = {"behavior": "stall", "ttft_ms": 100, "total_ms": 100, "keepalive_ms": 500}
    return Scenario.from_mapping(
        {
            "seed": seed,
            "limits": {"requests_per_minute": rpm, "requests_per_day": 1_000_000},
            "models": models,
        }
    )


async def _plan(base_url: str, settings: Settings, max_models: int | None) -> list[ProbeSpec]:
    async with build_http_client(settings, base_url=base_url, api_key=KEY) as client:
        catalog = parse_catalog(await fetch_catalog_bytes(client), origin=base_url)
    free = catalog.filter(pl.col("is_free") & ~pl.col("is_router")).sort("model_id")
    if max_models is not None:
        free = free.head(max_models)
    return [
        ProbeSpec(model_id=model_id, family=family, task=task)
        for model_id, family in free.select("model_id", "family").iter_rows()
        for task in TASKS
    ]


async def _scheduled(
    base_url: str, specs: list[ProbeSpec], settings: Settings, rpm: int, seed: int
) -> list[ProbeResult]:
    tasks = {t.name: t for t in build_suite(1)}
    async with build_http_client(settings, base_url=base_url, api_key=KEY) as client:
        outcome = await run_plan(
            client,
            specs,
            tasks,
            settings,
            RateLimiter(rpm, None),
            run_id="bench",
            rng=random.Random(seed),  # the same backoff jitter every time
        )
    return outcome.results


async def _sequential(base_url: str, specs: list[ProbeSpec], settings: Settings) -> list[ProbeResult]:
    tasks = {t.name: t for t in build_suite(1)}
    results = []
    async with build_http_client(settings, base_url=base_url, api_key=KEY) as client:
        for spec in specs:  # one at a time, no pacing, no retries: what a naive client does
            results.append(
                await probe_once(
                    client, run_id="bench", spec=spec, task=tasks[spec.task], settings=settings, attempt=1
                )
            )
    return results


def _measure(
    label: str, scenario: Scenario, run: Callable[[str], Coroutine[Any, Any, list[ProbeResult]]]
) -> RunStats:
    with SandboxServer(scenario) as server:
        start = time.monotonic()
        results = asyncio.run(run(server.base_url))
        wall = time.monotonic() - start
        stats = server.stats()
    return RunStats(
        label=label,
        wall_s=wall,
        sent=int(stats["chat_requests"]),
        passed=sum(r.passed for r in results),
        rejected_429=int(stats["rejected_429_account"]),
        max_in_60s=int(stats["max_requests_in_any_60s"]),
        results=results,
    )


def stalling_models(specs: Sequence[ProbeSpec], fraction: float, placement: str) -> list[str]:
    """``fraction`` of the plan's models (at least one): the first ones, or spread evenly over it."""
    order = list(dict.fromkeys(spec.model_id for spec in specs))
    count = max(1, round(len(order) * fraction))
    if placement == "first":
        return order[:count]
    return [order[int((k + 0.5) * len(order) / count)] for k in range(count)]


def critical_path_s(
    specs: Sequence[ProbeSpec],
    results: Sequence[ProbeResult],
    stalling: Sequence[str],
    rpm: int,
    settings: Settings,
) -> float:
    """The earliest a run that keeps the plan's order can finish its stalled probes' attempts.

    Probe i of the plan cannot start before ``i * 60 / R``; its k attempts each run the whole
    deadline, with at least the shortest backoff the policy allows between them (half a step).
    """
    attempts: dict[tuple[str, str, int], int] = {}
    for r in results:
        key = (r.model_id, r.task, r.sample)
        attempts[key] = max(attempts.get(key, 0), r.attempt)
    stalled = set(stalling)
    longest = 0.0
    for i, spec in enumerate(specs):
        if spec.model_id not in stalled:
            continue
        k = attempts.get((spec.model_id, spec.task, spec.sample), 1)
        waits = sum(
            min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (n - 1)) / 2 for n in range(1, k)
        )
        longest = max(longest, i * 60 / rpm + k * settings.probe_deadline_s + waits)
    return longest


def _verdict(ratio: float) -> str:
    return "PASS" if ratio <= TARGET else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpm", type=int, default=600, help="staged requests per minute (default 600)")
    parser.add_argument(
        "--latency-ms",
        default="150:400",
        help="range of staged total latencies per model, lo:hi in ms (default 150:400)",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="max probes in flight (default 16)")
    parser.add_argument("--seed", type=int, default=20261101, help="sandbox seed")
    parser.add_argument(
        "--stall-fraction", type=float, default=0.1, help="share of models that stall (default 0.1)"
    )
    parser.add_argument(
        "--stall-deadline-s",
        type=float,
        default=2.0,
        help="probe deadline in the stall runs, seconds (default 2)",
    )
    parser.add_argument("--models", type=int, help="only the first N free models")
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_MODELS} models (smoke run)")
    parser.add_argument("--json", action="store_true", help="also print the numbers as one JSON line")
    args = parser.parse_args(argv)
    lo, _, hi = args.latency_ms.partition(":")
    latency = (int(lo), int(hi or lo))
    if args.rpm < 1 or latency[0] < 1 or latency[1] < latency[0]:
        parser.error("need --rpm >= 1 and --latency-ms lo:hi with 1 <= lo <= hi")
    if not 0 < args.stall_fraction < 1 or args.stall_deadline_s <= 0:
        parser.error("need 0 < --stall-fraction < 1 and --stall-deadline-s > 0")
    max_models = QUICK_MODELS if args.quick else args.models

    settings = Settings(
        max_concurrency=args.concurrency,
        requests_per_minute=args.rpm,
        backoff_base_s=0.2,
        backoff_max_s=2.0,
        probe_deadline_s=10.0,
        read_timeout_s=5.0,
    )
    stall_settings = settings.model_copy(update={"probe_deadline_s": args.stall_deadline_s})
    scenario = build_scenario(args.rpm, latency, args.seed)
    with SandboxServer(scenario) as server:
        specs = asyncio.run(_plan(server.base_url, settings, max_models))

    def scheduled(run_settings: Settings) -> Callable[[str], Coroutine[Any, Any, list[ProbeResult]]]:
        return lambda url: _scheduled(url, specs, run_settings, args.rpm, args.seed)

    ours = _measure("scheduler (concurrent, paced)", scenario, scheduled(settings))
    naive = _measure("naive (sequential)", scenario, lambda url: _sequential(url, specs, settings))
    stall_runs: list[tuple[str, RunStats, float]] = []
    for placement in ("first", "spread"):
        stalling = stalling_models(specs, args.stall_fraction, placement)
        stats = _measure(
            f"scheduler, stalls {placement}",
            build_scenario(args.rpm, latency, args.seed, stalling),
            scheduled(stall_settings),
        )
        path = critical_path_s(specs, stats.results, stalling, args.rpm, stall_settings)
        stall_runs.append((placement, stats, path))

    bound_s = ours.sent / args.rpm * 60
    print(f"suite: {len(specs)} probes ({len(specs) // len(TASKS)} free models x {len(TASKS)} tasks)")
    print(
        f"staged limit: {args.rpm}/min (one start every {60 / args.rpm * 1000:.0f} ms); "
        f"staged latency {latency[0]}-{latency[1]} ms; concurrency {args.concurrency}"
    )
    print(
        f"stall runs: {args.stall_fraction:.0%} of the models stall until the probe deadline of "
        f"{args.stall_deadline_s:g} s"
    )
    header = f"{'run':32} {'wall s':>8} {'sent':>5} {'passed':>6} {'429s':>5} {'max/60s':>8} {'bound s':>8}"
    print(header)
    rows = [(ours, bound_s), (naive, None)]
    rows += [(stats, max(stats.sent / args.rpm * 60, path)) for _, stats, path in stall_runs]
    for r, bound in rows:
        shown = f"{bound:8.2f}" if bound is not None else f"{'':8}"
        print(
            f"{r.label:32} {r.wall_s:8.2f} {r.sent:5d} {r.passed:6d} {r.rejected_429:5d} "
            f"{r.max_in_60s:8d} {shown}"
        )
    print(f"bound N/R for the scheduled run: {ours.sent} / {args.rpm} per min = {bound_s:.2f} s")
    for placement, stats, path in stall_runs:
        print(
            f"bound for stalls {placement}: max(N/R = {stats.sent / args.rpm * 60:.2f} s, "
            f"critical path of the stalled probes = {path:.2f} s)"
        )
    wall_over_bound = ours.wall_s / bound_s
    sequential_over_concurrent = naive.wall_s / ours.wall_s
    stall_ratios = {
        placement: stats.wall_s / max(stats.sent / args.rpm * 60, path)
        for placement, stats, path in stall_runs
    }
    if args.json:
        print(json.dumps({
            "probes": len(specs), "rpm": args.rpm, "sent": ours.sent, "bound_s": round(bound_s, 3),
            "wall_s": round(ours.wall_s, 3), "sequential_wall_s": round(naive.wall_s, 3),
            "rejected_429": ours.rejected_429, "wall_over_bound": round(wall_over_bound, 4),
            "sequential_over_concurrent": round(sequential_over_concurrent, 4),
            **{f"stalls_{p}_wall_s": round(s.wall_s, 3) for p, s, _ in stall_runs},
            **{f"stalls_{p}_wall_over_bound": round(v, 4) for p, v in stall_ratios.items()},
        }))  # fmt: skip
    print(f"ratio wall/bound={wall_over_bound:.3f} target<={TARGET:g} {_verdict(wall_over_bound)}")
    for placement, ratio in stall_ratios.items():
        print(f"ratio stalls_{placement} wall/bound={ratio:.3f} target<={TARGET:g} {_verdict(ratio)}")
    print(f"ratio sequential/concurrent={sequential_over_concurrent:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: how close does a run come to the bound its rate limit sets?

Runs the full suite (every free model of the sandbox catalog x every task) against the sandbox at a
staged account limit of R requests per minute, through the real scheduler (:func:`run_plan`), and
compares its wall time with the bound N / R (N = requests actually sent, retries included). Then it
sends the same probes the way a naive client does: one at a time, each waiting for the previous one,
and compares the two.

The staged latencies are longer than the pacing interval 60 / R, so a sequential client is bound by
latency while the scheduler, running several probes at once, is bound by the rate limit only.

    uv run python bench/bench_scheduler.py            # full suite, ~1 minute
    uv run python bench/bench_scheduler.py --quick    # 8 models, ~15 seconds

Prints a table, then the ratios last: ``wall/bound`` (target: within 10 % of 1.0) and
``sequential/concurrent``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections.abc import Callable, Coroutine
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


@dataclass(frozen=True, slots=True)
class RunStats:
    """One measured run."""

    label: str
    wall_s: float
    sent: int
    passed: int
    rejected_429: int
    max_in_60s: int


def build_scenario(rpm: int, latency_ms: tuple[int, int], seed: int) -> Scenario:
    """The sandbox's seeded behaviours, with every free model's latency drawn from ``latency_ms``."""
    rng = random.Random(seed)
    models: dict[str, dict[str, int]] = {}
    for model_id in sorted(build_catalog(Scenario.from_mapping({}).catalog).free_ids()):
        total = rng.randint(*latency_ms)
        models[model_id] = {"ttft_ms": max(1, total * 3 // 10), "total_ms": total, "keepalive_ms": 0}
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
    base_url: str, specs: list[ProbeSpec], settings: Settings, rpm: int
) -> list[ProbeResult]:
    tasks = {t.name: t for t in build_suite(1)}
    async with build_http_client(settings, base_url=base_url, api_key=KEY) as client:
        outcome = await run_plan(client, specs, tasks, settings, RateLimiter(rpm, None), run_id="bench")
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
    )


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
    parser.add_argument("--quick", action="store_true", help=f"only {QUICK_MODELS} models (smoke run)")
    parser.add_argument("--json", action="store_true", help="also print the numbers as one JSON line")
    args = parser.parse_args(argv)
    lo, _, hi = args.latency_ms.partition(":")
    latency = (int(lo), int(hi or lo))
    if args.rpm < 1 or latency[0] < 1 or latency[1] < latency[0]:
        parser.error("need --rpm >= 1 and --latency-ms lo:hi with 1 <= lo <= hi")

    settings = Settings(
        max_concurrency=args.concurrency,
        requests_per_minute=args.rpm,
        backoff_base_s=0.2,
        backoff_max_s=2.0,
        probe_deadline_s=10.0,
        read_timeout_s=5.0,
    )
    scenario = build_scenario(args.rpm, latency, args.seed)
    with SandboxServer(scenario) as server:
        specs = asyncio.run(_plan(server.base_url, settings, QUICK_MODELS if args.quick else None))

    ours = _measure(
        "scheduler (concurrent, paced)", scenario, lambda url: _scheduled(url, specs, settings, args.rpm)
    )
    naive = _measure("naive (sequential)", scenario, lambda url: _sequential(url, specs, settings))

    bound_s = ours.sent / args.rpm * 60
    print(f"suite: {len(specs)} probes ({len(specs) // len(TASKS)} free models x {len(TASKS)} tasks)")
    print(
        f"staged limit: {args.rpm}/min (one start every {60 / args.rpm * 1000:.0f} ms); "
        f"staged latency {latency[0]}-{latency[1]} ms; concurrency {args.concurrency}"
    )
    print(f"{'run':32} {'wall s':>8} {'sent':>5} {'passed':>6} {'429s':>5} {'max/60s':>8}")
    for r in (ours, naive):
        print(f"{r.label:32} {r.wall_s:8.2f} {r.sent:5d} {r.passed:6d} {r.rejected_429:5d} {r.max_in_60s:8d}")
    print(f"bound N/R for the scheduled run: {ours.sent} / {args.rpm} per min = {bound_s:.2f} s")
    wall_over_bound = ours.wall_s / bound_s
    sequential_over_concurrent = naive.wall_s / ours.wall_s
    if args.json:
        print(json.dumps({
            "probes": len(specs), "rpm": args.rpm, "sent": ours.sent, "bound_s": round(bound_s, 3),
            "wall_s": round(ours.wall_s, 3), "sequential_wall_s": round(naive.wall_s, 3),
            "rejected_429": ours.rejected_429, "wall_over_bound": round(wall_over_bound, 4),
            "sequential_over_concurrent": round(sequential_over_concurrent, 4),
        }))  # fmt: skip
    print(f"wall/bound: {wall_over_bound:.3f}")
    print(f"sequential/concurrent: {sequential_over_concurrent:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

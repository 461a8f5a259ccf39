"""Benchmark: what does Prefect add to a whole discovery?

The same discovery runs twice per round on the sandbox catalog: once as the ``discovery`` flow (task
runs, states and logs sent to a Prefect API) and once as the same step functions called without
Prefect (:func:`flows.discovery.run_without_prefect`). Each run gets fresh data and docs folders and
the same scenario: every free model answers correctly after a staged latency of seconds (drawn per
model from ``--latency-ms``), under a limit high enough that the run is bound by latency, as a real one
is. Rounds alternate the order (A/B, then B/A); the ratio is the median over rounds of Prefect/plain.

Prefect talks to a throwaway local server (``prefect_test_harness``) whose startup is timed apart and
left out of the ratio; with ``PREFECT_API_URL`` already set, that server is used instead. One warm-up
run per side (two models, no staged latency) goes first and is not counted. The Prefect client then
counts the task runs of every measured flow run (one per probe round, one per other step).

    uv run python bench/bench_orchestration.py            # 29 models x 3 tasks, 2 rounds, ~3 minutes
    uv run python bench/bench_orchestration.py --quick    # 2 models, short latency, 1 round

Prints a table, then the ratio lines last. Targets: Prefect adds under 10 % (prefect/plain < 1.10), and
a discovery makes tens of task runs (fewer than 100).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

# Prefect's own settings, read when it is first imported: offline, and only warnings on the console
# (task-run lines would bury the figures; logs still go to the API, as in a real run).
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")

from flows.runner import configure_prefect

configure_prefect()

from flows.discovery import RunParameters, RunSummary, discovery, run_without_prefect  # noqa: E402
from freemodels import storage  # noqa: E402
from freemodels.sandbox.catalog import build_catalog  # noqa: E402
from freemodels.sandbox.scenario import Scenario  # noqa: E402

TARGET_RATIO = 1.10
TARGET_TASK_RUNS = 100
SEED = 20261128


def write_scenario(path: Path, latency_ms: tuple[int, int], seed: int) -> Path:
    """Every free model answers correctly after ``latency_ms`` (drawn per model); a high limit."""
    rng = random.Random(seed)
    models = {}
    for model_id in sorted(build_catalog(Scenario.from_mapping({}).catalog).free_ids()):
        total = rng.randint(*latency_ms)
        models[model_id] = {"ttft_ms": total * 3 // 10, "total_ms": total}
    scenario = {
        "seed": seed,
        "limits": {"requests_per_minute": 6000, "requests_per_day": 1_000_000},
        "defaults": {"behavior": "ok", "fault": "none", "keepalive_ms": 0},
        "models": models,
    }
    path.write_text(json.dumps(scenario, indent=1), encoding="utf-8")
    return path


@dataclass(frozen=True, slots=True)
class Run:
    """One measured discovery."""

    side: str
    round: int
    wall_s: float
    summary: RunSummary
    families: int
    task_runs: int | None = None
    probe_rounds: int | None = None


def _parameters(scenario: Path, folder: Path, max_models: int | None) -> dict[str, object]:
    return {
        "source": "sandbox",
        "scenario": str(scenario),
        "data_dir": str(folder / "data"),
        "docs_dir": str(folder / "docs"),
        "max_models": max_models,
    }


def _stored_run(summary: RunSummary) -> tuple[str | None, int]:
    """The run's Prefect flow run id and the number of families it probed, from its database."""
    con = storage.connect(summary.database, read_only=True)
    try:
        runs = storage.list_runs(con)
        flow_run_id = runs.filter(runs["run_id"] == summary.run_id).get_column("prefect_flow_run_id")[0]
        families = storage.query(
            con, "SELECT count(DISTINCT family) FROM probes WHERE run_id = ?", [summary.run_id]
        ).item()
    finally:
        con.close()
    return flow_run_id, int(families)


async def task_run_names(flow_run_id: str) -> list[str]:
    """The names of the task runs the Prefect API recorded for one flow run."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])), limit=200
        )
    return [run.name for run in runs]


def run_once(side: str, round_no: int, scenario: Path, folder: Path, max_models: int | None) -> Run:
    params = _parameters(scenario, folder, max_models)
    start = time.perf_counter()
    if side == "prefect":
        summary = asyncio.run(discovery(**params))  # type: ignore[arg-type]
    else:
        summary = asyncio.run(run_without_prefect(RunParameters(**params)))  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    if summary.status != "completed":
        raise SystemExit(f"{side} run ended {summary.status}: {summary.describe()}")
    flow_run_id, families = _stored_run(summary)
    task_runs = probe_rounds = None
    if side == "prefect":
        if flow_run_id is None:
            raise SystemExit("the flow run stored no Prefect flow run id")
        names = asyncio.run(task_run_names(flow_run_id))
        task_runs = len(names)
        probe_rounds = sum(1 for name in names if name.startswith("round-"))
    return Run(side, round_no, wall, summary, families, task_runs, probe_rounds)


@contextlib.contextmanager
def prefect_api() -> Iterator[float | None]:
    """A Prefect API to talk to: the configured one, or a throwaway server. Yields its startup time."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        yield None
        return
    from prefect.testing.utilities import prefect_test_harness

    start = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=180):
        yield time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, help="probe at most N free models (default: all)")
    parser.add_argument(
        "--latency-ms", default="1000:4000", help="staged total latency per model, lo:hi ms (1000:4000)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating the order (default 2)")
    parser.add_argument("--quick", action="store_true", help="2 models, 100-300 ms, 1 round (smoke run)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.latency_ms, args.rounds = 2, "100:300", 1
    lo, _, hi = args.latency_ms.partition(":")
    latency = (int(lo), int(hi or lo))
    if args.rounds < 1 or latency[0] < 0 or latency[1] < latency[0]:
        parser.error("need --rounds >= 1 and --latency-ms lo:hi with 0 <= lo <= hi")

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-orchestration-") as tmp:
        root = Path(tmp)
        scenario = write_scenario(root / "scenario.json", latency, SEED)
        warm = write_scenario(root / "warm-up.json", (0, 0), SEED)
        with prefect_api() as startup_s:
            for side in ("prefect", "plain"):
                run_once(side, 0, warm, root / f"warm-up-{side}", 2)
            for r in range(1, args.rounds + 1):
                order = ("prefect", "plain") if r % 2 == 1 else ("plain", "prefect")
                for side in order:
                    runs.append(run_once(side, r, scenario, root / f"{side}-{r}", args.models))

    first = runs[0].summary
    print(
        f"discovery on the sandbox catalog: {first.free_models} free models probed "
        f"({first.probes_sent} requests, {runs[0].families} families), staged latency "
        f"{latency[0]}-{latency[1]} ms per model, {args.rounds} round(s)"
    )
    if startup_s is None:
        print("Prefect API: the configured PREFECT_API_URL (startup not measured)")
    else:
        print(f"Prefect API: throwaway local server, started in {startup_s:.1f} s (not in the ratio)")
    print(f"{'round':>5} {'side':8} {'wall s':>8} {'requests':>9} {'working':>8} {'task runs':>10}")
    for run in runs:
        shown = "" if run.task_runs is None else str(run.task_runs)
        print(
            f"{run.round:5d} {run.side:8} {run.wall_s:8.2f} {run.summary.probes_sent:9d} "
            f"{run.summary.working_models:8d} {shown:>10}"
        )
    if len({(r.summary.probes_sent, r.summary.working_models) for r in runs}) != 1:
        print("note: the runs did not all send the same requests with the same outcome")
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        by_round.setdefault(run.round, {})[run.side] = run.wall_s
    ratio = statistics.median(r["prefect"] / r["plain"] for r in by_round.values())
    added_s = statistics.median(r["prefect"] - r["plain"] for r in by_round.values())
    task_runs = max(run.task_runs or 0 for run in runs)
    print(f"Prefect adds {added_s:.2f} s per discovery (median over rounds)")
    rounds = max(run.probe_rounds or 0 for run in runs)
    print(
        f"task runs per discovery: {task_runs} "
        f"({rounds} probe rounds, {task_runs - rounds} for the other steps)"
    )
    if args.json:
        print(
            json.dumps(
                {
                    "rounds": args.rounds,
                    "free_models": first.free_models,
                    "requests": first.probes_sent,
                    "families": runs[0].families,
                    "prefect_wall_s": [round(r.wall_s, 3) for r in runs if r.side == "prefect"],
                    "plain_wall_s": [round(r.wall_s, 3) for r in runs if r.side == "plain"],
                    "server_startup_s": None if startup_s is None else round(startup_s, 2),
                    "prefect_over_plain": round(ratio, 4),
                    "added_s": round(added_s, 3),
                    "task_runs": task_runs,
                }
            )
        )
    ok_ratio = "PASS" if ratio < TARGET_RATIO else "MISS"
    ok_runs = "PASS" if task_runs < TARGET_TASK_RUNS else "MISS"
    print(f"ratio prefect/plain={ratio:.3f} target<{TARGET_RATIO:g} {ok_ratio}")
    print(f"ratio task_runs_per_discovery={task_runs} target<{TARGET_TASK_RUNS} {ok_runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

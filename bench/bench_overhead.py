"""Benchmark: what does the harness cost per probe, next to a bare httpx streaming loop?

Both sides send the same chat requests (every free model of the sandbox catalog x every task, as many
samples as it takes to reach ``--probes``) to the same sandbox, with the same concurrency and the same
connection limits, and read every answer to its end:

- **tool**: the full probe path, i.e. :func:`~freemodels.scheduler.run_plan` (rate limiter, retry
  policy, concurrency cap) -> :func:`~freemodels.probe.probe_attempt` (streaming SSE parser, timing,
  grading, failure classification) -> :class:`~freemodels.checkpoint.CheckpointWriter` (Parquet
  checkpoints in a run folder);
- **raw**: ``httpx.AsyncClient.stream`` plus ``aiter_bytes()`` under an ``asyncio.Semaphore``.

The sandbox runs in its own process with zero staged latency and a limit of 1,000,000 requests per
minute, so what is left is overhead: the client's own work per probe plus the server's. Rounds
alternate the two sides (A/B, then B/A) so drift on a shared machine hits both alike; the figures are
medians over the rounds. Besides wall time per probe, the script reports this process's CPU time per
probe (the server's CPU is in the other process), which is the steadier measure on a busy machine.

    uv run python bench/bench_overhead.py            # 1,000 probes per side and round, ~1 minute
    uv run python bench/bench_overhead.py --quick    # 60 probes per side, 1 round (smoke run)

Prints a table of rounds, then the ratio lines last. Target: per-probe overhead (tool minus raw) under
2 ms, or tool/raw under 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import polars as pl

from freemodels.catalog import parse_catalog
from freemodels.client import build_http_client, fetch_catalog_bytes
from freemodels.probe import CHAT_PATH, build_request_body
from freemodels.records import ProbeSpec
from freemodels.scheduler import RateLimiter, run_plan
from freemodels.settings import Settings
from freemodels.storage import CheckpointWriter
from freemodels.suite import TASKS, TaskInstance, build_suite

KEY = "sk-or-v1-benchmark00000000000000000000000"
RPM = 1_000_000
TARGET_OVERHEAD_MS = 2.0
TARGET_RATIO = 1.5
WARMUP_PROBES = 50
_START_TIMEOUT_S = 30.0


@contextmanager
def sandbox_process(scenario: dict[str, object], workdir: Path) -> Iterator[str]:
    """The sandbox in a child process (``discovery sandbox``) on a free loopback port; yields its API root."""
    path = workdir / "scenario.json"
    path.write_text(json.dumps(scenario), encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (workdir / "sandbox.log").open("wb")
    command = [sys.executable, "-c", "from flows.cli import main; raise SystemExit(main())"]
    args = ["sandbox", "--port", str(port), "--scenario", str(path)]
    proc = subprocess.Popen([*command, *args], stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                httpx.get(f"{base_url}/models", timeout=1.0).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    output = (workdir / "sandbox.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(f"the sandbox did not start:\n{output}") from None
                time.sleep(0.05)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def zero_latency_scenario() -> dict[str, object]:
    """Every free model answers correctly at once; limits far above what the benchmark sends."""
    return {
        "limits": {"requests_per_minute": RPM, "requests_per_day": 10_000_000},
        "defaults": {"behavior": "ok", "fault": "none", "ttft_ms": 0, "total_ms": 0, "keepalive_ms": 0},
    }


def build_specs(models: list[tuple[str, str]], count: int) -> list[ProbeSpec]:
    """``count`` probes cycling over models, then tasks, then samples."""
    per_sample = len(models) * len(TASKS)
    specs = []
    for i in range(count):
        model_id, family = models[i % len(models)]
        task = TASKS[(i // len(models)) % len(TASKS)]
        specs.append(ProbeSpec(model_id, family, task, sample=i // per_sample))
    return specs


@dataclass(frozen=True, slots=True)
class Sample:
    """One side of one round."""

    side: str
    round: int
    probes: int
    wall_s: float
    cpu_s: float

    @property
    def wall_ms_per_probe(self) -> float:
        return self.wall_s * 1000 / self.probes

    @property
    def cpu_ms_per_probe(self) -> float:
        return self.cpu_s * 1000 / self.probes


class Bench:
    """Both sides against one sandbox, each with its own long-lived client."""

    def __init__(self, base_url: str, settings: Settings, tasks: dict[str, TaskInstance], workdir: Path):
        self.base_url = base_url
        self.settings = settings
        self.tasks = tasks
        self.workdir = workdir
        self.tool_client = build_http_client(settings, base_url=base_url, api_key=KEY)
        self.raw_client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=httpx.Timeout(**settings.timeouts()),
            limits=httpx.Limits(
                max_connections=settings.max_concurrency + 4,
                max_keepalive_connections=settings.max_concurrency + 4,
            ),
        )
        self._runs = 0

    async def aclose(self) -> None:
        await self.tool_client.aclose()
        await self.raw_client.aclose()

    async def models(self) -> list[tuple[str, str]]:
        catalog = parse_catalog(await fetch_catalog_bytes(self.tool_client), origin=self.base_url)
        free = catalog.filter(pl.col("is_free") & ~pl.col("is_router")).sort("model_id")
        return [(m, f) for m, f in free.select("model_id", "family").iter_rows()]

    async def tool(self, specs: list[ProbeSpec]) -> None:
        """The full probe path, recording every attempt into a fresh run folder."""
        self._runs += 1
        folder = self.workdir / "runs" / f"bench-{self._runs}"
        with CheckpointWriter(folder) as checkpoint:
            outcome = await run_plan(
                self.tool_client,
                specs,
                self.tasks,
                self.settings,
                RateLimiter(RPM, None),
                run_id=folder.name,
                on_result=checkpoint.add,
            )
        failed = [r for r in outcome.results if not r.passed]
        if failed or len(outcome.results) != len(specs):
            total = len(outcome.results)
            raise SystemExit(f"tool side: {len(failed)} of {total} probes failed: {failed[:1]}")

    async def raw(self, specs: list[ProbeSpec]) -> None:
        """A bare streaming loop: same bodies, same concurrency, every byte read."""
        sem = asyncio.Semaphore(self.settings.max_concurrency)
        bad: list[int] = []

        async def one(spec: ProbeSpec) -> None:
            body = build_request_body(spec, self.tasks[spec.task], self.settings, cost_guard=True)
            async with sem, self.raw_client.stream("POST", CHAT_PATH, json=body) as response:
                async for _chunk in response.aiter_bytes():
                    pass
                if response.status_code != 200:
                    bad.append(response.status_code)

        async with asyncio.TaskGroup() as group:
            for spec in specs:
                group.create_task(one(spec))
        if bad:
            raise SystemExit(f"raw side: {len(bad)} requests answered {sorted(set(bad))}")


async def _measure(side: str, round_no: int, run: Callable[[], Awaitable[None]], probes: int) -> Sample:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await run()
    return Sample(side, round_no, probes, time.perf_counter() - wall0, time.process_time() - cpu0)


async def run_rounds(
    base_url: str, probes: int, rounds: int, concurrency: int, workdir: Path
) -> list[Sample]:
    settings = Settings(
        max_concurrency=concurrency,
        requests_per_minute=RPM,
        probe_deadline_s=60.0,
        read_timeout_s=30.0,
    )
    bench = Bench(base_url, settings, {t.name: t for t in build_suite(20261128)}, workdir)
    try:
        models = await bench.models()
        specs = build_specs(models, probes)
        warmup = build_specs(models, min(WARMUP_PROBES, probes))
        await bench.tool(warmup)
        await bench.raw(warmup)
        samples = []
        for r in range(rounds):
            order = ("tool", "raw") if r % 2 == 0 else ("raw", "tool")
            for side in order:
                run = getattr(bench, side)
                samples.append(await _measure(side, r + 1, lambda run=run: run(specs), len(specs)))
        return samples
    finally:
        await bench.aclose()


def _median(samples: list[Sample], side: str, attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples if s.side == side)


def _paired_ratio(samples: list[Sample], attr: str) -> float:
    """Median over rounds of tool/raw within the same round."""
    by_round: dict[int, dict[str, float]] = {}
    for s in samples:
        by_round.setdefault(s.round, {})[s.side] = getattr(s, attr)
    return statistics.median(r["tool"] / r["raw"] for r in by_round.values())


def _verdict(overhead_ms: float, ratio: float) -> str:
    return "PASS" if overhead_ms < TARGET_OVERHEAD_MS or ratio < TARGET_RATIO else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probes", type=int, default=1000, help="probes per side and round (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, alternating A/B and B/A (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="probes in flight (default 8, as a run)")
    parser.add_argument("--quick", action="store_true", help="60 probes, 1 round (smoke run)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.quick:
        args.probes, args.rounds = 60, 1
    if args.probes < 1 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--probes, --rounds and --concurrency must be at least 1")

    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        workdir = Path(tmp)
        with sandbox_process(zero_latency_scenario(), workdir) as base_url:
            samples = asyncio.run(run_rounds(base_url, args.probes, args.rounds, args.concurrency, workdir))

    print(f"{args.probes} probes per side and round, {args.rounds} rounds, concurrency {args.concurrency}")
    print("sandbox in its own process: zero staged latency, 1,000,000 requests/min")
    print(f"{'round':>5} {'side':5} {'wall s':>8} {'wall ms/probe':>14} {'cpu ms/probe':>13}")
    for s in samples:
        print(
            f"{s.round:5d} {s.side:5} {s.wall_s:8.3f} {s.wall_ms_per_probe:14.3f} {s.cpu_ms_per_probe:13.3f}"
        )
    figures: dict[str, float] = {}
    for kind, attr in (("wall", "wall_ms_per_probe"), ("cpu", "cpu_ms_per_probe")):
        tool, raw = _median(samples, "tool", attr), _median(samples, "raw", attr)
        figures[f"{kind}_tool_ms"] = round(tool, 4)
        figures[f"{kind}_raw_ms"] = round(raw, 4)
        figures[f"{kind}_overhead_ms"] = round(tool - raw, 4)
        figures[f"{kind}_ratio"] = round(_paired_ratio(samples, attr), 4)
    print(
        f"median per probe: wall tool {figures['wall_tool_ms']:.3f} ms, raw {figures['wall_raw_ms']:.3f} ms; "
        f"cpu tool {figures['cpu_tool_ms']:.3f} ms, raw {figures['cpu_raw_ms']:.3f} ms"
    )
    if args.json:
        print(json.dumps({"probes": args.probes, "rounds": args.rounds, **figures}))
    for kind in ("wall", "cpu"):
        overhead, ratio = figures[f"{kind}_overhead_ms"], figures[f"{kind}_ratio"]
        print(
            f"ratio {kind}: overhead_per_probe_ms={overhead:.3f} tool/raw={ratio:.3f} "
            f"target: <{TARGET_OVERHEAD_MS:g} ms or <{TARGET_RATIO:g}x {_verdict(overhead, ratio)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

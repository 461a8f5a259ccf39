"""Benchmark: what does the daily watch cost on the default catalog?

One discovery on the default sandbox (its catalog and seeded behaviours, 29 free models) gives the
rotation; then the watch runs ``--watches`` times (default 5) on the same default catalog, through the
project's own code without a Prefect server (:func:`flows.watch.watch_without_prefect`), each against a
sandbox started for it, as ``discovery watch`` does. Figures per watch: wall time from the call to the
summary (sandbox start, catalog, the rotation's endpoints listings, comparison, DuckDB, exports), the
endpoints listings read, and the chat requests, as the watch counted them and as the sandbox counted
them itself (``/_sandbox/stats``). A watch spends no chat quota: the target is 0 chat requests.

    uv run python bench/bench_watch.py              # ~1 minute (the discovery takes most of it)
    uv run python bench/bench_watch.py --watches 10
    uv run python bench/bench_watch.py --quick      # every model answers in 20-60 ms, 2 watches (smoke)

Prints one line per watch, then the ratio lines last. Targets: 0 chat requests (sent and counted by the
sandbox), and a median wall time under 10 s. The listings are paced by the watch's own limiter
(``DISCOVERY_LISTING_REQUESTS_PER_MINUTE``, 240 by default, ``DISCOVERY_LISTING_CONCURRENCY`` at once),
which is most of a watch's time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.discovery import RunParameters, run_without_prefect
from flows.parameters import WatchParameters
from flows.watch import watch_without_prefect

TARGET_S = 10.0
QUICK: dict[str, object] = {
    "limits": {"requests_per_minute": 6000},
    "defaults": {"ttft_ms": 20, "reasoning_ms": 0, "total_ms": 60, "keepalive_ms": 0},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--watches", type=int, default=None, help="watches to time (default 5; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="fast answers and 2 watches (a smoke run)")
    parser.add_argument("--json", action="store_true", help="the figures as one JSON line before the ratios")
    args = parser.parse_args(argv)
    count = args.watches if args.watches is not None else (2 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        root = Path(tmp)
        os.environ["DISCOVERY_DATA_DIR"] = str(root / "data")
        os.environ["DISCOVERY_DOCS_DIR"] = str(root / "docs")
        scenario: str | None = None
        if args.quick:
            scenario = str(root / "quick.json")
            Path(scenario).write_text(json.dumps(QUICK), encoding="utf-8")
        started = time.perf_counter()
        run = asyncio.run(run_without_prefect(RunParameters(source="sandbox", scenario=scenario)))
        print(f"discovery {run.run_id}: {run.free_models} free models, {time.perf_counter() - started:.1f} s")
        walls: list[float] = []
        chats: list[int] = []
        counted: list[int] = []
        for i in range(count):
            started = time.perf_counter()
            summary = asyncio.run(watch_without_prefect(WatchParameters(source="sandbox", scenario=scenario)))
            wall = time.perf_counter() - started
            seen = int(str((summary.source_counted or {}).get("chat_requests", -1)))
            walls.append(wall)
            chats.append(summary.chat_requests)
            counted.append(seen)
            print(
                f"watch {i + 1}: {wall:.2f} s; {summary.rotation_models} rotation models, "
                f"{summary.listings_read} listings, {summary.catalog_models} catalog models; "
                f"chat requests {summary.chat_requests} (sandbox counted {seen}); lost {len(summary.lost)}"
            )
    median = statistics.median(walls)
    if args.json:
        print(json.dumps({"watch_wall_s": walls, "chat_requests": chats, "sandbox_chat_requests": counted}))
    quiet = sum(chats) == 0 and sum(counted) == 0
    verdict = "PASS" if quiet else "MISS"
    print(f"ratio chat_requests={sum(chats)} sandbox_counted={sum(counted)} target=0 {verdict}")
    fast = median < TARGET_S
    print(
        f"ratio watch_wall_s median={median:.2f} max={max(walls):.2f} n={len(walls)} "
        f"target<{TARGET_S:g} {'PASS' if fast else 'MISS'}"
    )
    return 0 if quiet else 1


if __name__ == "__main__":
    raise SystemExit(main())

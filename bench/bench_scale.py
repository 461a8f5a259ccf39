"""Benchmark: does the tool stay flat as catalogs and history grow?

**Catalog.** A synthetic catalog of 100,000 models is built from the real recorded catalogs
(``../shared/fixtures/openrouter/catalogs`` beside the repository; without them, from the sandbox's
catalog, and the output says so): every distinct real entry, then copies of them under new ids (the
author gets a ``-r<n>`` suffix, so copies form new families) until there are 100,000. It is served over
loopback HTTP and goes through the run's own steps in a fresh child process: fetch (the run's HTTP
client and catalog download), parse, filter (free models and families), and store twice (the first
run into an empty database, then the next month's run, with 1 % fewer models, whose changes are
computed against the first). The child reports each step's time and its peak resident memory. The
same child pipeline also runs on the real-size catalog (the distinct real entries), side by side, for
the cost per model.

**History.** A DuckDB file gets 120 monthly runs with 100 free models each (plus 200 paid ones in each
catalog), made by the pipeline's own analyze, rank and store steps from synthetic probes (seeded:
about three in four models working, the others failing in the taxonomy's ways). A fresh child
process then renders every document of the latest run, charts included, from the database and
writes them (``render_run``, as ``discovery report`` does): cold first, then warm, alternating with
the first run (a history of one) for comparison.

    uv run python bench/bench_scale.py            # 100,000 models and 120 runs, ~2 minutes
    uv run python bench/bench_scale.py --quick    # 2,000 models and 6 runs x 20 models

Prints the figures, then the ratio lines last. Targets: catalog through fetch, filter and store under
10 s and 1 GiB peak memory; rendering every document and the trend chart under 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_CATALOGS = REPO.parent / "shared" / "fixtures" / "openrouter" / "catalogs"
TARGET_CATALOG_S = 10.0
TARGET_CATALOG_MIB = 1024.0
TARGET_RENDER_S = 5.0
SEED = 20261128


# --------------------------------------------------------------------------------------------------
# Building the synthetic catalog


def real_entries() -> tuple[list[dict[str, Any]], str]:
    """Every distinct model entry of the recorded catalogs (first seen wins), and where they came from."""
    files = sorted(SHARED_CATALOGS.glob("*.json")) if SHARED_CATALOGS.is_dir() else []
    entries: dict[str, dict[str, Any]] = {}
    for path in files:
        document = json.loads(path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8"))
        data = document.get("data") if isinstance(document, dict) else document
        for entry in data if isinstance(data, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                entries.setdefault(entry["id"], entry)
    if entries:
        return list(entries.values()), f"{len(files)} recorded OpenRouter catalogs in {SHARED_CATALOGS}"
    from freemodels.sandbox.catalog import build_catalog

    listing = build_catalog().listing("all")
    return listing, f"the sandbox's catalog (recorded catalogs not found at {SHARED_CATALOGS})"


def _renamed(model_id: str, replica: int) -> str:
    author, slash, rest = model_id.partition("/")
    return f"{author}-r{replica}/{rest}" if slash else f"{model_id}-r{replica}"


def synthetic_catalog(entries: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """``size`` models: the real entries, then renamed copies of them."""
    models = []
    for i in range(size):
        base = entries[i % len(entries)]
        replica = i // len(entries)
        if replica == 0:
            models.append(base)
            continue
        copy = dict(base)
        copy["id"] = _renamed(base["id"], replica)
        if isinstance(base.get("canonical_slug"), str):
            copy["canonical_slug"] = _renamed(base["canonical_slug"], replica)
        if isinstance(base.get("name"), str):
            copy["name"] = f"{base['name']} (r{replica})"
        if isinstance(base.get("created"), int):
            copy["created"] = base["created"] - replica * 3600
        models.append(copy)
    return models


def catalog_body(models: list[dict[str, Any]]) -> bytes:
    return json.dumps({"data": models}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@contextmanager
def serve_catalog(body: bytes) -> Iterator[str]:
    """``GET /api/v1/models`` answers ``body`` on a loopback port (in this process); yields the API root."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path.split("?")[0].rstrip("/") != "/api/v1/models":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            view = memoryview(body)
            for start in range(0, len(body), 1 << 20):
                self.wfile.write(view[start : start + (1 << 20)])

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="catalog-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------------------------------------
# Child processes (clean timings and memory)


def _peak_mib() -> float:
    """This process's peak resident memory in MiB.

    Linux keeps ``ru_maxrss`` across ``exec``, so a child would report its parent's peak; the kernel's
    ``VmHWM`` belongs to the new program's address space alone.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def _child(args: list[str]) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_catalog(url: str, workdir: Path) -> dict[str, Any]:
    """Fetch, parse, filter and store the catalog at ``url``; times and peak memory."""
    started = time.perf_counter()
    import polars as pl

    from freemodels import storage
    from freemodels.catalog import parse_catalog
    from freemodels.client import build_http_client, fetch_catalog_bytes
    from freemodels.records import MODEL_RESULTS_SCHEMA, PROBES_SCHEMA, ROTATION_SCHEMA, RunInfo, empty_frame
    from freemodels.settings import Settings
    from tasks.filter_free import families, free_models
    from tasks.store import store_run_files

    out: dict[str, Any] = {"import_s": time.perf_counter() - started, "baseline_mib": _peak_mib()}
    cpu0 = time.process_time()  # this process's CPU time from here on (both stores included)
    settings = Settings(data_dir=workdir / "data", docs_dir=workdir / "docs", catalog_timeout_s=300)

    async def fetch() -> bytes:
        async with build_http_client(settings, base_url=url, api_key=None) as client:
            return await fetch_catalog_bytes(client, timeout_s=settings.catalog_timeout_s)

    t = time.perf_counter()
    raw = asyncio.run(fetch())
    out["fetch_s"] = time.perf_counter() - t
    out["bytes"] = len(raw)
    out["peak_fetch_mib"] = _peak_mib()
    t = time.perf_counter()
    catalog = parse_catalog(raw, origin=url)
    out["parse_s"] = time.perf_counter() - t
    out["peak_parse_mib"] = _peak_mib()
    del raw
    t = time.perf_counter()
    free = free_models(catalog)
    fams = families(free)
    out["filter_s"] = time.perf_counter() - t
    out.update(models=catalog.height, free=free.height, families=len(fams))

    def store(run_id: str, started_at: datetime, frame: pl.DataFrame) -> float:
        info = RunInfo(
            run_id=run_id,
            started_at=started_at,
            source="base_url",
            base_url=url,
            status="completed",
            finished_at=started_at,
            catalog_fetched_at=started_at,
        )
        folder = storage.run_dir(settings.runs_dir, run_id)
        t = time.perf_counter()
        storage.write_table(folder / "catalog.parquet", frame)
        store_run_files(
            settings.database,
            folder,
            info,
            empty_frame(PROBES_SCHEMA),
            empty_frame(MODEL_RESULTS_SCHEMA),
            empty_frame(ROTATION_SCHEMA),
            frame,
        )
        return time.perf_counter() - t

    now = datetime(2026, 11, 1, 6, tzinfo=UTC)
    out["store_first_s"] = store("20261001T060000Z-000001", now - timedelta(days=31), catalog)
    out["store_next_s"] = store("20261101T060000Z-000002", now, catalog.slice(catalog.height // 100))
    out["total_s"] = out["fetch_s"] + out["parse_s"] + out["filter_s"] + out["store_next_s"]
    out["cpu_s"] = time.process_time() - cpu0
    out["peak_mib"] = _peak_mib()
    return out


def child_render(db: Path, docs: Path, latest: str, first: str, repeats: int) -> dict[str, Any]:
    """Render every document of ``latest`` (cold, then warm) and of ``first``, from the database."""
    started = time.perf_counter()
    from tasks.render import render_run

    out: dict[str, Any] = {"import_s": time.perf_counter() - started}

    def timed(run_id: str, folder: Path) -> tuple[float, int]:
        t = time.perf_counter()
        outcome = render_run(db, folder, run_id)
        return time.perf_counter() - t, len(outcome.paths)

    out["cold_latest_s"], out["files"] = timed(latest, docs / "cold")
    latest_s, first_s = [], []
    for i in range(repeats):
        latest_s.append(timed(latest, docs / f"latest-{i}")[0])
        first_s.append(timed(first, docs / f"first-{i}")[0])
    out["warm_latest_s"] = statistics.median(latest_s)
    out["warm_first_s"] = statistics.median(first_s)
    out["peak_mib"] = _peak_mib()
    return out


# --------------------------------------------------------------------------------------------------
# Building the history


def build_history(
    db: Path, runs: int, models: int, entries: list[dict[str, Any]], workdir: Path
) -> list[str]:
    """``runs`` monthly runs with ``models`` free models each, stored by the pipeline's own steps."""
    import polars as pl

    from freemodels import storage
    from freemodels.catalog import parse_catalog
    from freemodels.failures import Failure
    from freemodels.records import ProbeResult, RunInfo, probes_frame
    from freemodels.suite import SUITE_VERSION, TASKS
    from tasks.analyze_failures import analyze
    from tasks.filter_free import free_models
    from tasks.rank import rank_task
    from tasks.store import store_run_files

    free_pool = [e for e in entries if str(e.get("id", "")).endswith(":free")]
    paid_pool = [e for e in entries if not str(e.get("id", "")).endswith(":free")]
    pool_size = models + models // 2
    free_entries = synthetic_catalog(free_pool, pool_size) if free_pool else []
    paid_entries = synthetic_catalog(paid_pool, 2 * models)
    pool = parse_catalog(catalog_body(free_entries + paid_entries), origin="history pool")
    pool_free = pool.filter(pl.col("is_free") & ~pl.col("is_router"))
    pool_ids = pool_free.get_column("model_id").to_list()
    paid = pool.filter(~pl.col("is_free"))
    failures = [
        (Failure.RATE_LIMIT_UPSTREAM, 429, 2),
        (Failure.PROVIDER_ERROR, 502, 3),
        (Failure.TIMEOUT, None, 2),
        (Failure.WRONG_ANSWER, 200, 1),
        (Failure.EMPTY_REPLY, 200, 1),
        (Failure.NO_ENDPOINTS, 404, 1),
    ]
    rng = random.Random(SEED)
    first_month = datetime(2026, 11, 1, 6, tzinfo=UTC)
    run_ids = []
    for k in range(runs):
        month = runs - 1 - k  # oldest first
        year, index = divmod(first_month.year * 12 + first_month.month - 1 - month, 12)
        started = first_month.replace(year=year, month=index + 1)
        run_id = f"{started:%Y%m%dT%H%M%SZ}-{k:06x}"
        ids = set((pool_ids * 2)[k % len(pool_ids) : k % len(pool_ids) + models])
        catalog = pl.concat([pool_free.filter(pl.col("model_id").is_in(ids)), paid])
        free = free_models(catalog)
        results: list[ProbeResult] = []
        for model_id, family in free.select("model_id", "family").iter_rows():
            broken = rng.random() < 0.25
            failure, status, attempts = rng.choice(failures) if broken else (None, 200, 1)
            base_ms = rng.lognormvariate(7.3, 0.7)
            for task in TASKS:
                for attempt in range(1, attempts + 1):
                    ok = failure is None
                    total = base_ms * rng.uniform(0.8, 1.3) if ok or failure is Failure.WRONG_ANSWER else None
                    results.append(
                        ProbeResult(
                            run_id=run_id,
                            model_id=model_id,
                            family=family,
                            task=task,
                            sample=0,
                            attempt=attempt,
                            started_at=started + timedelta(seconds=len(results) * 3),
                            http_status=status,
                            failure=failure,
                            passed=ok,
                            message=None if ok else f"synthetic {failure.value}",
                            ttft_any_ms=None if total is None else total * 0.3,
                            ttft_content_ms=None if total is None else total * 0.3,
                            total_ms=total,
                            completion_tokens=None if total is None else 12,
                            finish_reason="stop" if total is not None else None,
                            provider="Chutes",
                        )
                    )
        probes = probes_frame(results)
        verdicts = analyze(probes, free, run_id=run_id)
        verdicts, rotation = rank_task.fn(verdicts, catalog, run_id, 3, probes)
        info = RunInfo(
            run_id=run_id,
            started_at=started,
            source="sandbox",
            base_url="http://127.0.0.1:8765/api/v1",
            status="completed",
            finished_at=started + timedelta(minutes=20),
            catalog_fetched_at=started,
            suite_version=SUITE_VERSION,
            notes=["Synthetic history for bench/bench_scale.py."],
        )
        folder = storage.run_dir(workdir / "runs", run_id)
        storage.write_table(folder / "catalog.parquet", catalog)
        store_run_files(db, folder, info, probes, verdicts, rotation, catalog)
        run_ids.append(run_id)
    return run_ids


# --------------------------------------------------------------------------------------------------
# Main


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100_000, help="synthetic catalog size (100000)")
    parser.add_argument("--runs", type=int, default=120, help="monthly runs in the history (120)")
    parser.add_argument("--free", type=int, default=100, help="free models per run (100)")
    parser.add_argument("--repeats", type=int, default=3, help="warm renders per run (3)")
    parser.add_argument("--quick", action="store_true", help="2,000 models, 6 runs x 20 models (smoke run)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "catalog":
            result = child_catalog(rest[0], Path(rest[1]))
        else:
            result = child_render(Path(rest[0]), Path(rest[1]), rest[2], rest[3], int(rest[4]))
        print(json.dumps(result))
        return 0
    if args.quick:
        args.models, args.runs, args.free, args.repeats = 2_000, 6, 20, 1
    if min(args.models, args.runs, args.free, args.repeats) < 1:
        parser.error("--models, --runs, --free and --repeats must be at least 1")

    entries, origin = real_entries()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        big = catalog_body(synthetic_catalog(entries, args.models))
        build_catalog_s = time.perf_counter() - t
        with serve_catalog(catalog_body(entries)) as url:
            real = _child(["catalog", url, str(root / "real")])
        with serve_catalog(big) as url:
            large = _child(["catalog", url, str(root / "large")])
        del big

        t = time.perf_counter()
        db = root / "history" / "discovery.duckdb"
        run_ids = build_history(db, args.runs, args.free, entries, root / "history")
        build_history_s = time.perf_counter() - t
        render = _child(["render", str(db), str(root / "docs"), run_ids[-1], run_ids[0], str(args.repeats)])

    print(f"catalog entries from {origin}: {len(entries)} distinct models")
    print(f"synthetic catalog built in {build_catalog_s:.1f} s: {large['bytes'] / 1e6:.0f} MB of JSON")
    print(f"{'catalog':>10} {'models':>8} {'free':>7} {'families':>8} {'fetch s':>8} {'parse s':>8} "
          f"{'filter s':>8} {'store1 s':>8} {'store2 s':>8} {'total s':>8} {'peak MiB':>9}")  # fmt: skip
    for label, r in (("real", real), ("synthetic", large)):
        print(
            f"{label:>10} {r['models']:8d} {r['free']:7d} {r['families']:8d} {r['fetch_s']:8.2f} "
            f"{r['parse_s']:8.2f} {r['filter_s']:8.2f} {r['store_first_s']:8.2f} "
            f"{r['store_next_s']:8.2f} {r['total_s']:8.2f} {r['peak_mib']:9.0f}"
        )
    print(
        f"(total = fetch + parse + filter + store of the next month's run; the child's memory after "
        f"imports: {large['baseline_mib']:.0f} MiB; its CPU time for all five steps: "
        f"{large['cpu_s']:.2f} s)"
    )
    print(
        f"peak memory of the synthetic run: {large['peak_fetch_mib']:.0f} MiB after fetch, "
        f"{large['peak_parse_mib']:.0f} MiB after parse, {large['peak_mib']:.0f} MiB overall"
    )
    print(
        f"history: {args.runs} runs x {args.free} free models stored in {build_history_s:.1f} s; "
        f"render of the latest run writes {render['files']} files"
    )
    print(
        f"render latest run (history of {args.runs}): cold {render['cold_latest_s']:.2f} s, warm "
        f"{render['warm_latest_s']:.2f} s; first run (history of 1): warm {render['warm_first_s']:.2f} s; "
        f"imports {render['import_s']:.1f} s"
    )
    per_model_large = large["total_s"] / large["models"] * 1e6
    per_model_real = real["total_s"] / real["models"] * 1e6
    figures = {
        "models": large["models"],
        "catalog_total_s": round(large["total_s"], 3),
        "catalog_peak_mib": round(large["peak_mib"], 1),
        "us_per_model_large": round(per_model_large, 2),
        "us_per_model_real": round(per_model_real, 2),
        "render_cold_s": round(render["cold_latest_s"], 3),
        "render_warm_s": round(render["warm_latest_s"], 3),
        "render_first_warm_s": round(render["warm_first_s"], 3),
        "runs": args.runs,
    }
    if args.json:
        print(json.dumps({**figures, "large": large, "real": real, "render": render}))
    catalog_ok = large["total_s"] < TARGET_CATALOG_S and large["peak_mib"] < TARGET_CATALOG_MIB
    print(
        f"ratio catalog_{large['models']}_s={large['total_s']:.2f} peak_mib={large['peak_mib']:.0f} "
        f"target<{TARGET_CATALOG_S:g} s and <{TARGET_CATALOG_MIB:g} MiB {_verdict(catalog_ok)}"
    )
    print(f"ratio per_model {large['models']}/{real['models']}={per_model_large / per_model_real:.3f}")
    print(
        f"ratio render_{args.runs}_runs_s={render['cold_latest_s']:.2f} (cold) "
        f"target<{TARGET_RENDER_S:g} s {_verdict(render['cold_latest_s'] < TARGET_RENDER_S)}"
    )
    print(f"ratio render {args.runs}_runs/1_run={render['warm_latest_s'] / render['warm_first_s']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

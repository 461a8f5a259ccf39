"""Helpers for the flow-level reliability tests: staging a small sandbox, running the pipeline, and
reading back what a run stored."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from flows.discovery import RunParameters, RunSummary, run_without_prefect
from freemodels import storage
from freemodels.sandbox.catalog import build_catalog
from freemodels.sandbox.scenario import Scenario
from tests.conftest import REPO_ROOT

ALL_FREE: tuple[str, ...] = tuple(build_catalog(Scenario().catalog).free_ids())
"""Every free id the shipped sandbox catalog lists (routers included)."""

FREE: tuple[str, ...] = tuple(sorted(m for m in ALL_FREE if m.endswith(":free")))
"""The ``:free`` models, sorted: the ones a discovery probes."""


def only(models: Iterable[str]) -> dict[str, list[str]]:
    """A scenario ``[catalog]`` table that leaves exactly ``models`` as the free models."""
    keep = set(models)
    return {"remove": sorted(m for m in ALL_FREE if m not in keep)}


def write_scenario(path: Path, data: Mapping[str, Any]) -> Path:
    """Write a scenario as JSON (the sandbox reads ``.json`` scenarios as JSON) and validate it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    Scenario.from_mapping(data)  # fail here, not inside the run, on a mistake in the test
    return path


def run_plain(data_dir: Path, docs_dir: Path, **params: Any) -> RunSummary:
    """One discovery with the plain step functions (no Prefect server)."""
    return asyncio.run(
        run_without_prefect(RunParameters(data_dir=str(data_dir), docs_dir=str(docs_dir), **params))
    )


def table(db: Path, name: str, run_id: str | None = None) -> pl.DataFrame:
    """One table of the database (one run's rows when ``run_id`` is given)."""
    with storage.connect(db, read_only=True, wait_s=10) as con:
        if run_id is None:
            return storage.query(con, f"SELECT * FROM {name}")
        return storage.load_table(con, name, run_id)


def final_attempts(probes: pl.DataFrame) -> pl.DataFrame:
    """The last attempt of every (model, task, sample)."""
    key = ["model_id", "task", "sample"]
    return probes.sort([*key, "attempt"]).unique(subset=key, keep="last", maintain_order=True)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, *, every_s: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def subprocess_env(prefect_api_url: str, prefect_home: Path, **extra: str) -> dict[str, str]:
    """Environment of a ``discovery run`` child: the session's Prefect server, its own Prefect home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DISCOVERY_"))}
    env.pop("OPENROUTER_API_KEY", None)
    env.update(
        PREFECT_API_URL=prefect_api_url,
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def start_discovery(
    args: list[str], env: Mapping[str, str], log: Path, *, python_prelude: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m flows.cli run ARGS`` (after ``python_prelude`` if given); output to ``log``."""
    if python_prelude is None:
        command = [sys.executable, "-m", "flows.cli", "run", *args]
    else:
        script = f"{python_prelude}\nimport sys\nfrom flows.cli import main\nsys.exit(main(sys.argv[1:]))\n"
        command = [sys.executable, "-c", script, "run", *args]
    handle = log.open("wb")
    try:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=dict(env), stdout=handle, stderr=subprocess.STDOUT
        )
    finally:
        handle.close()


def checkpointed(folder: Path) -> pl.DataFrame:
    """The probe attempts checkpointed in a run folder so far."""
    return storage.read_probe_checkpoints(folder)


def run_folders(data_dir: Path) -> list[Path]:
    """The run folders under ``data_dir/runs`` (oldest first by name)."""
    runs = data_dir / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []

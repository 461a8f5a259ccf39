"""The drill of a stored run's rotation: as a step of the ``discovery`` flow and as ``discovery drill``.

:func:`drill_run` resolves the run's source the way the run itself did (its stored parameters:
source, base URL, key variable, sandbox scenario and seed), computes what is left of the budget,
runs :func:`tasks.drill.run_drill` (see :mod:`freemodels.drill`), writes ``drill.parquet`` into the
run folder and replaces the run's rows of the ``drill`` table. The flow calls it after the run is
stored and before the reports are rendered (step ``drilled``, only with the ``drill`` parameter);
``discovery drill`` calls it for a stored run and renders the reports again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.parameters import RunParameters
from freemodels import storage
from freemodels.drill import CLIENT_LABELS, INCIDENT_LABELS, DrillClient, Incident, summarise
from freemodels.errors import ConfigError, RunNotFoundError
from freemodels.records import RunInfo
from freemodels.settings import Settings
from freemodels.source import PROFILES, Source, SourceKind, open_source, required_key_missing
from freemodels.suite import build_suite
from tasks.drill import DrillResult, DrillTarget, run_drill

RunDrill = Callable[..., Awaitable[DrillResult]]
"""The drill itself: :func:`tasks.drill.run_drill`, or its Prefect task inside the flow."""


@dataclass(frozen=True, slots=True)
class DrillDone:
    """What a drill did: its rows and notes, and where they went."""

    result: DrillResult
    parquet: Path
    budget: int | None


def drill_budget(
    *, budget: int | None, settings: Settings, info: RunInfo, attempts_used: int, kind: SourceKind
) -> int | None:
    """Requests the drill may send: what is left of the run's budget (``budget``, else the
    ``requests_per_day`` setting, else the quota the source reported before the run, else the
    source's default) after the run's own attempts, and never more than the quota it reported after
    the run. None: unlimited."""
    total = budget
    if total is None:
        total = settings.requests_per_day
    if total is None:
        total = info.quota_before
    if total is None:
        total = PROFILES[kind].requests_per_day
    left = None if total is None else max(0, total - attempts_used)
    if info.quota_after is not None:
        left = info.quota_after if left is None else min(left, info.quota_after)
    return left


async def drill_run(
    *,
    settings: Settings,
    info: RunInfo,
    api_key_env: str | None,
    requests: int,
    budget: int | None,
    read_quota: bool = False,
    runner: RunDrill = run_drill,
    progress: Callable[[str], None] | None = None,
) -> DrillDone:
    """Drill run ``info``'s stored rotation against its own source (see the module docstring).

    ``budget`` caps the requests; without one and with ``read_quota``, the ``requests_per_day``
    setting or else the daily quota the source reports now (``GET key``) caps them.
    """
    try:
        kind = SourceKind(info.source)
    except ValueError:
        raise ConfigError(
            f"run {info.run_id} used the source {info.source!r}, which this program does not know"
        ) from None
    profile = PROFILES[kind]
    missing = required_key_missing(profile, settings, api_key_env)
    if missing is not None:
        raise ConfigError(f"cannot drill run {info.run_id} ({profile.run_label}): {missing}")
    folder = storage.run_dir(settings.runs_dir, info.run_id)
    rotation_file = folder / storage.TABLE_FILES["rotation"]
    if not rotation_file.is_file():
        raise RunNotFoundError(f"run {info.run_id} has no stored rotation yet; drill it once it is stored")
    rotation = storage.read_table(rotation_file)
    from flows.discovery import suite_seed

    scenario = None
    if profile.simulated and settings.sandbox_scenario:
        from freemodels.sandbox.scenario import load_scenario

        scenario = load_scenario(settings.sandbox_scenario)
    with open_source(settings, kind=kind, api_key_env=api_key_env) as source:
        key = source.api_key.get_secret_value() if source.api_key is not None else None
        if budget is None and read_quota:
            budget = await _quota_now(source, settings)
        target = DrillTarget(
            profile=profile,
            base_url=source.base_url,
            api_key=key,
            scenario=scenario,
            seed=settings.sandbox_seed,
        )
        result = await runner(
            run_id=info.run_id,
            rotation=rotation,
            target=target,
            settings=settings,
            tasks=build_suite(suite_seed(info.run_id)),
            requests=requests,
            budget=budget,
            requests_per_minute=source.requests_per_minute,
            progress=progress,
        )
    parquet = folder / storage.TABLE_FILES["drill"]
    storage.write_table(parquet, result.frame)
    con = storage.connect(settings.database)
    try:
        storage.store_drill(con, info.run_id, parquet)
    finally:
        con.close()
    return DrillDone(result=result, parquet=parquet, budget=budget)


async def _quota_now(source: Source, settings: Settings) -> int | None:
    """The requests a drill may send now: the setting, else the source's remaining daily quota."""
    if settings.requests_per_day is not None:
        return settings.requests_per_day
    if not source.profile.reads_quota:
        return source.profile.requests_per_day
    from freemodels.client import fetch_key_info

    async with source.client(settings) as client:
        quota = await fetch_key_info(client)
    if quota is not None and quota.daily_remaining is not None:
        return quota.daily_remaining
    return source.profile.requests_per_day


def describe(done: DrillDone, *, run_id: str, tail_min_answers: int) -> str:
    """The drill's figures as plain text (what ``discovery drill`` prints)."""
    result = done.result
    frame = result.frame
    sent = int((frame.get_column("attempts").fill_null(0)).sum()) if frame.height else 0
    budget = "no budget limit" if done.budget is None else f"budget {done.budget}"
    lines = [
        f"drill of run {run_id}: {result.requests} requests per workload, {result.cells} workloads, "
        f"{sent} HTTP attempts ({budget})"
    ]
    lines += [f"  note: {note}" for note in result.notes]
    summary = summarise(frame, tail_min_answers=tail_min_answers)
    header = (
        f"  {'incident':<42} {'client':<26} {'arm':<16} {'success':>12} {'P50':>8} {'P95':>12} {'att/req':>7}"
    )
    if summary.height:
        lines.append(header)
    for row in summary.iter_rows(named=True):
        incident = _label(INCIDENT_LABELS, Incident, row["incident"])
        client = _label(CLIENT_LABELS, DrillClient, row["client"]).replace("`", "")
        arm = {"rotation": "rotation", "primary": "primary alone", "free_router": "openrouter/free"}.get(
            row["arm"], row["arm"]
        )
        success = f"{row['n_ok']}/{row['n']}" + (f" ({row['not_sent']} unsent)" if row["not_sent"] else "")
        p50 = _seconds(row["p50_ms"])
        p95 = _seconds(row["p95_ms"]) if row["p95_ms"] is not None else f"— (n={row['n_answered']})"
        per = f"{row['attempts_per_request']:.1f}" if row["attempts_per_request"] is not None else "—"
        lines.append(f"  {incident:<42} {client:<26} {arm:<16} {success:>12} {p50:>8} {p95:>12} {per:>7}")
    lines.append(f"  stored: {done.parquet} and the drill table")
    return "\n".join(lines)


def _label(labels: dict[Any, str], kind: type[Any], value: str) -> str:
    try:
        return labels[kind(value)]
    except ValueError:
        return value


def _seconds(ms: float | None) -> str:
    return "—" if ms is None else f"{ms / 1000:.2f} s"


def stored_parameters(info: RunInfo) -> dict[str, object]:
    """The parameters a run was started with (as stored with it)."""
    from flows.prepare import stored_settings

    parameters = stored_settings(info).get("parameters")
    return parameters if isinstance(parameters, dict) else {}


async def drill_command(
    *,
    run_id: str | None,
    requests: int | None,
    budget: int | None,
    data_dir: str | None,
    docs_dir: str | None,
    logger: logging.Logger | None = None,
) -> tuple[DrillDone, str, list[Path]]:
    """``discovery drill``: drill a stored run (the latest completed one by default), store the
    rows, render the reports again. Returns what was done, the run id and the written documents."""
    from flows.prepare import settings_for
    from flows.runner import render_reports

    base = RunParameters(data_dir=data_dir, docs_dir=docs_dir)
    settings = settings_for(base)
    if not settings.database.exists():
        raise RunNotFoundError(f"no database at {settings.database}; run `discovery run` first")
    con = storage.connect(settings.database, read_only=True)
    try:
        chosen = run_id or storage.latest_run_id(con)
    finally:
        con.close()
    if chosen is None:
        raise RunNotFoundError(f"no completed run in {settings.database}")
    folder = storage.run_dir(settings.runs_dir, chosen)
    if not (folder / storage.RUN_INFO_FILE).is_file():
        raise RunNotFoundError(f"no run folder for run {chosen} in {settings.runs_dir}")
    info = storage.read_run_info(folder)
    params = base.resumed_from(stored_parameters(info), run_id=chosen)
    settings = settings_for(params)
    done = await drill_run(
        settings=settings,
        info=info,
        api_key_env=params.api_key_env,
        requests=requests or settings.drill_requests,
        budget=budget,
        read_quota=True,
        progress=(lambda line: logger.info("%s", line)) if logger is not None else print,
    )
    written = render_reports(run_id=chosen, data_dir=data_dir, docs_dir=docs_dir)
    return done, chosen, written

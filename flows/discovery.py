"""The ``discovery`` flow: catalog in, DuckDB history and reports out.

::

    fetch-catalog ─► filter-free ─► plan-probes ─► test-by-family (one task run per family)
        ─► analyze-failures ─► rank ─► store (Parquet → DuckDB, with the changes) ─► render

The flow owns the shared resources: the sandbox server (when the source is the sandbox), one
``httpx.AsyncClient`` and one account-wide rate limiter, created once and passed down. The family task
runs are awaited together on the flow's event loop, so they share the client and the limiter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.sources import ResolvedSource, open_source
from freemodels import storage
from freemodels.candidates import classify_candidate, read_candidates
from freemodels.client import KeyInfo
from freemodels.errors import ConfigError, RunNotFoundError
from freemodels.records import ProbeSpec, RunInfo
from freemodels.scheduler import PlanOutcome
from freemodels.settings import Settings, load_settings
from freemodels.storage import CheckpointWriter
from freemodels.suite import SUITE_VERSION, TASKS, build_suite
from tasks.analyze_failures import CandidateOutcome, analyze_failures_task
from tasks.fetch_catalog import fetch_catalog_task, fetch_quota_task, mark_unpriced_as_free
from tasks.filter_free import families, filter_free_task
from tasks.plan_probes import ProbePlan, plan_probes_task
from tasks.rank import rank_task
from tasks.render import RenderOutcome, render_task
from tasks.store import store_task
from tasks.test_by_family import FamilyContext, test_by_family_task, test_family


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a finished run reports back to the CLI and the Prefect UI."""

    run_id: str
    source: str
    base_url: str
    status: str
    catalog_models: int
    free_models: int
    tested_models: int
    working_models: int
    untested_models: int
    probes_sent: int
    quota_before: int | None
    quota_after: int | None
    database: str
    run_dir: str
    documents: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"run {self.run_id} ({self.source}, {self.base_url}): {self.status}",
            f"  catalog: {self.catalog_models} models, {self.free_models} free",
            f"  tested:  {self.tested_models} models with {self.probes_sent} requests; "
            f"{self.working_models} working",
        ]
        if self.untested_models:
            lines.append(
                f"  untested (quota): {self.untested_models} models — "
                "run `discovery run --resume` when the quota resets"
            )
        if self.quota_before is not None:
            lines.append(f"  daily quota: {self.quota_before} before, {self.quota_after} after")
        lines.append(f"  database: {self.database}")
        lines.append(f"  parquet:  {self.run_dir}")
        if self.documents:
            lines.append(f"  reports:  {Path(self.documents[0]).parent}/ ({len(self.documents)} files)")
        return "\n".join(lines)


def suite_seed(run_id: str) -> int:
    """The suite's prompt values depend on the run id: new per run, stable on resume."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:6], "big")


def _flow_run_name() -> str:
    """``<date>-<source>``: the UTC date and the source the run resolves to."""
    params = flow_run.parameters or {}
    if params.get("base_url"):
        source = "base-url"
    else:
        try:
            source = load_settings(source=params.get("source") or "auto").source_kind().value
        except ConfigError:
            source = str(params.get("source") or "auto")
    return f"{datetime.now(UTC):%Y-%m-%d}-{source.replace('_', '-')}"


@dataclass(frozen=True, slots=True)
class RunParameters:
    """The parameters of one discovery (the flow's parameters; the API key is never one)."""

    source: str = "auto"
    base_url: str | None = None
    api_key_env: str | None = None
    scenario: str | None = None
    seed: int | None = None
    budget: int | None = None
    candidates: str | None = None
    resume: bool = False
    max_models: int | None = None
    requests_per_minute: int | None = None
    data_dir: str | None = None
    docs_dir: str | None = None
    commit_docs: bool = False
    suite: str = "standard"

    def resumed_from(self, stored: Mapping[str, object]) -> RunParameters:
        """Fill what this call left unset from the parameters stored with the run being resumed."""
        keys = ("source", "base_url", "api_key_env", "scenario", "seed", "max_models", "requests_per_minute")
        updates: dict[str, object] = {}
        for key in keys:
            mine = getattr(self, key)
            if (mine is None or (key == "source" and mine == "auto")) and stored.get(key) is not None:
                updates[key] = stored[key]
        return replace(self, **updates)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Steps:
    """The pipeline's steps: Prefect tasks in the flow, their plain functions without Prefect."""

    fetch_catalog: Callable[..., Awaitable[tuple[pl.DataFrame, datetime]]]
    fetch_quota: Callable[..., Awaitable[KeyInfo | None]]
    filter_free: Callable[..., pl.DataFrame]
    plan_probes: Callable[..., ProbePlan]
    test_family: Callable[[str, Sequence[ProbeSpec], FamilyContext], Awaitable[PlanOutcome]]
    analyze: Callable[..., pl.DataFrame]
    rank: Callable[..., tuple[pl.DataFrame, pl.DataFrame]]
    store: Callable[..., pl.DataFrame]
    render: Callable[..., RenderOutcome]
    in_prefect: bool = False  # inside a flow run: tag it, publish artifacts, emit alert events


def _prefect_test_family(
    family: str, specs: Sequence[ProbeSpec], ctx: FamilyContext
) -> Awaitable[PlanOutcome]:
    return test_by_family_task.with_options(task_run_name=f"test-{family}")(family, specs, ctx)


PREFECT_STEPS = Steps(
    fetch_catalog=fetch_catalog_task,
    fetch_quota=fetch_quota_task,
    filter_free=filter_free_task,
    plan_probes=plan_probes_task,
    test_family=_prefect_test_family,
    analyze=analyze_failures_task,
    rank=rank_task,
    store=store_task,
    render=render_task,
    in_prefect=True,
)

PLAIN_STEPS = Steps(
    fetch_catalog=fetch_catalog_task.fn,
    fetch_quota=fetch_quota_task.fn,
    filter_free=filter_free_task.fn,
    plan_probes=plan_probes_task.fn,
    test_family=test_family,
    analyze=analyze_failures_task.fn,
    rank=rank_task.fn,
    store=store_task.fn,
    render=render_task.fn,
)


@flow(
    name="discovery",
    flow_run_name=_flow_run_name,
    description=(
        "Find out which free models work, how fast they are, why the others fail, and which to "
        "fall back to; store the run in DuckDB and render the reports into docs/."
    ),
    log_prints=True,
    persist_result=False,
)
async def discovery(
    source: str = "auto",
    base_url: str | None = None,
    api_key_env: str | None = None,
    scenario: str | None = None,
    seed: int | None = None,
    budget: int | None = None,
    candidates: str | None = None,
    resume: bool = False,
    max_models: int | None = None,
    requests_per_minute: int | None = None,
    data_dir: str | None = None,
    docs_dir: str | None = None,
    commit_docs: bool = False,
    suite: str = "standard",
) -> RunSummary:
    """Run one discovery. Parameters override settings; the API key never is a parameter."""
    params = RunParameters(
        source=source,
        base_url=base_url,
        api_key_env=api_key_env,
        scenario=scenario,
        seed=seed,
        budget=budget,
        candidates=candidates,
        resume=resume,
        max_models=max_models,
        requests_per_minute=requests_per_minute,
        data_dir=data_dir,
        docs_dir=docs_dir,
        commit_docs=commit_docs,
        suite=suite,
    )
    return await execute(params, steps=PREFECT_STEPS, logger=get_run_logger(), flow_run_id=flow_run.id)


async def run_without_prefect(params: RunParameters) -> RunSummary:
    """The same pipeline with the plain step functions: no Prefect server, task runs or artifacts.

    Used to measure what orchestration costs (bench/bench_orchestration.py).
    """
    return await execute(params, steps=PLAIN_STEPS, logger=logging.getLogger("discovery"), flow_run_id=None)


def _settings_for(params: RunParameters) -> Settings:
    return load_settings(
        source=params.base_url or params.source,
        sandbox_scenario=params.scenario,
        sandbox_seed=params.seed,
        requests_per_minute=params.requests_per_minute,
        data_dir=params.data_dir,
        docs_dir=params.docs_dir,
        max_models=params.max_models,
    )


def preflight(params: RunParameters) -> None:
    """Check the parameters a user gives before any flow run starts; raises the project's clear errors.

    The CLI calls this first, so a mistake (an invalid setting, nothing to resume, a missing candidates
    or scenario file) ends as one line, not as a failed flow run with a traceback in Prefect's log.
    """
    if params.suite != "standard":
        raise ConfigError(f"unknown suite {params.suite!r}; the only suite is 'standard'")
    settings = _settings_for(params)
    if params.resume and storage.latest_unfinished_run(settings.runs_dir) is None:
        raise RunNotFoundError(f"no unfinished run to resume in {settings.runs_dir}")
    if params.candidates:
        read_candidates(Path(params.candidates))
    if params.scenario:
        from freemodels.sandbox.scenario import load_scenario

        load_scenario(Path(params.scenario))
    if params.api_key_env:
        from freemodels.settings import read_env_secret

        if read_env_secret(params.api_key_env) is None:
            raise ConfigError(f"--api-key-env names {params.api_key_env}, but that variable is not set")
    if settings.source_kind().value == "openrouter" and settings.resolved_api_key() is None:
        raise ConfigError("source 'openrouter' needs OPENROUTER_API_KEY; unset it to use the sandbox")


async def execute(
    params: RunParameters,
    *,
    steps: Steps,
    logger: logging.Logger | logging.LoggerAdapter,
    flow_run_id: str | None,
) -> RunSummary:
    """Run one discovery with the given steps."""
    if params.suite != "standard":
        raise ConfigError(f"unknown suite {params.suite!r}; the only suite is 'standard'")
    settings = _settings_for(params)

    # ---- the run id: new, or the latest unfinished one -------------------------------------------
    runs_dir = settings.runs_dir
    previous_info: RunInfo | None = None
    if params.resume:
        run_id = storage.latest_unfinished_run(runs_dir)
        if run_id is None:
            raise RunNotFoundError(f"no unfinished run to resume in {runs_dir}")
        previous_info = storage.read_run_info(storage.run_dir(runs_dir, run_id))
        stored = json.loads(previous_info.settings_json or "{}").get("parameters", {})
        params = params.resumed_from(stored)
        settings = _settings_for(params)
        logger.info("Resuming run %s", run_id)
    else:
        run_id = storage.new_run_id(datetime.now(UTC))
    cand_ids = read_candidates(Path(params.candidates)) if params.candidates else []
    folder = storage.run_dir(runs_dir, run_id)
    folder.mkdir(parents=True, exist_ok=True)

    with open_source(settings, api_key_env=params.api_key_env) as src:
        info = _start_info(run_id, src, settings, params, previous_info, flow_run_id)
        storage.write_run_info(folder, info)
        return await _run(settings, src, info, folder, params, cand_ids, steps, logger)


def _start_info(
    run_id: str,
    src: ResolvedSource,
    settings: Settings,
    params: RunParameters,
    previous: RunInfo | None,
    flow_run_id: str | None,
) -> RunInfo:
    now = datetime.now(UTC)
    settings_json = json.dumps(
        {
            "source": src.kind,
            "base_url": src.base_url,
            "requests_per_minute": src.requests_per_minute,
            "max_tokens": settings.max_tokens,
            "samples_per_task": settings.samples_per_task,
            "probe_deadline_s": settings.probe_deadline_s,
            "sandbox_seed": settings.sandbox_seed if src.kind == "sandbox" else None,
            "parameters": {
                "source": params.source,
                "base_url": params.base_url,
                "api_key_env": params.api_key_env,
                "scenario": str(Path(params.scenario).resolve()) if params.scenario else None,
                "seed": params.seed,
                "max_models": params.max_models,
                "requests_per_minute": params.requests_per_minute,
            },
        },
        sort_keys=True,
    )
    if previous is not None:
        return replace(
            previous,
            status="running",
            prefect_flow_run_id=str(flow_run_id) if flow_run_id else previous.prefect_flow_run_id,
        )
    return RunInfo(
        run_id=run_id,
        started_at=now,
        source=src.kind,
        base_url=src.base_url,
        status="running",
        prefect_flow_run_id=str(flow_run_id) if flow_run_id else None,
        suite_version=SUITE_VERSION,
        settings_json=settings_json,
        notes=list(src.notes),
    )


async def _run(
    settings: Settings,
    src: ResolvedSource,
    info: RunInfo,
    folder: Path,
    params: RunParameters,
    cand_ids: list[str],
    steps: Steps,
    logger: logging.Logger | logging.LoggerAdapter,
) -> RunSummary:
    run_id = info.run_id
    in_prefect = steps.in_prefect and bool(flow_run.id)
    if in_prefect:
        from flows.artifacts import label_flow_run

        await label_flow_run(info.source, run_date=info.started_at.date())
    async with src.client() as client:
        catalog, fetched_at = await steps.fetch_catalog(
            client, origin=src.base_url, timeout_s=settings.catalog_timeout_s
        )
        if src.kind == "base_url":
            catalog, unpriced = mark_unpriced_as_free(catalog)
            if unpriced:
                src.note("The server lists no prices: every model it serves counts as free.")
        quota_before = await steps.fetch_quota(client)
        if quota_before is None and src.kind != "sandbox":
            src.note("The server has no /key endpoint: the daily quota is unknown, no budget applies.")
        info = replace(
            info,
            catalog_fetched_at=fetched_at,
            quota_before=info.quota_before
            if info.quota_before is not None
            else (quota_before.daily_remaining if quota_before else None),
            quota_limit=quota_before.daily_limit if quota_before else info.quota_limit,
        )
        storage.write_table(folder / "catalog.parquet", catalog)
        free = steps.filter_free(catalog, settings.max_models)
        fams = families(free)
        logger.info("Catalog: %d models, %d free in %d families", catalog.height, free.height, len(fams))

        done_probes = storage.read_probe_checkpoints(folder)
        done_keys = storage.completed_probe_keys(done_probes)
        effective_budget = src.daily_budget(params.budget, quota_before)
        plan = steps.plan_probes(free, list(TASKS), settings.samples_per_task, effective_budget, done_keys)
        logger.info(
            "Plan: %d probes to send over %d models; %d models untested for lack of quota; "
            "%d probes already done",
            len(plan.specs),
            len(plan.models),
            len(plan.untested),
            len(done_keys),
        )

        tasks_by_name = {t.name: t for t in build_suite(suite_seed(run_id))}
        attempt_offset = storage.max_attempts_by_probe(done_probes)
        limiter = src.rate_limiter(effective_budget)
        by_family: dict[str, list] = {}
        for spec in plan.specs:
            by_family.setdefault(spec.family, []).append(spec)
        with CheckpointWriter(folder) as checkpoint:
            ctx = FamilyContext(
                client=client,
                settings=settings,
                limiter=limiter,
                tasks=tasks_by_name,
                run_id=run_id,
                on_result=checkpoint.add,
                attempt_offset=attempt_offset,
                semaphore=asyncio.Semaphore(src.max_concurrency),
                cost_guard=src.kind == "openrouter",
            )
            outcomes = await asyncio.gather(
                *(steps.test_family(family, specs, ctx) for family, specs in sorted(by_family.items()))
            )
        quota_after = await steps.fetch_quota(client)

    unsent = [spec for outcome in outcomes for spec in outcome.unsent]
    quota_exhausted = any(outcome.quota_exhausted for outcome in outcomes)
    all_probes = storage.read_probe_checkpoints(folder)
    untested = sorted(set(plan.untested) | {spec.model_id for spec in unsent})

    catalog_ids = catalog.get_column("model_id").to_list()
    listed = set(catalog_ids)
    candidate_outcomes = []
    for cid in cand_ids:
        if cid in listed:
            continue
        failure, suggestions = classify_candidate(cid, catalog_ids)
        candidate_outcomes.append(CandidateOutcome(cid, failure, tuple(suggestions)))

    results = steps.analyze(all_probes, free, run_id, untested, candidate_outcomes)
    results, rotation = steps.rank(results, catalog, run_id, settings.min_samples_for_tier, all_probes)

    status = "partial" if (quota_exhausted or unsent or plan.untested) else "completed"
    info = replace(
        info,
        status=status,
        finished_at=datetime.now(UTC),
        quota_after=quota_after.daily_remaining if quota_after else None,
    )
    if (
        src.kind == "base_url"
        and not all_probes.is_empty()
        and all_probes.get_column("completion_tokens").is_null().all()
    ):
        src.note("The server reports no token usage in its streams: token counts are unknown.")
    if (
        src.kind == "base_url"
        and not all_probes.is_empty()
        and all_probes.get_column("server_ttft_ms").is_null().all()
    ):
        src.note("The server reports no timings of its own: only the timings measured here are shown.")
    info = replace(info, notes=list(dict.fromkeys([*info.notes, *src.notes])))
    steps.store(settings.database, folder, info, all_probes, results, rotation, catalog)
    rendered = steps.render(settings.database, settings.docs_dir, run_id)
    documents = rendered.paths
    if in_prefect:
        from flows.alerts import emit_lost_models, previous_rotation_of
        from flows.artifacts import publish_artifacts

        await publish_artifacts(rendered.summary_markdown, rendered.tiers, run_id)
        previous = previous_rotation_of(settings.database, run_id)
        lost = emit_lost_models(previous, results, catalog, run_id=run_id, source=info.source)
        for model in lost:
            logger.warning(
                "Lost from the previous rotation: %s (%s: %s)", model.model_id, model.reason, model.detail
            )
    if params.commit_docs:
        from flows.docs_commit import commit_docs as do_commit

        do_commit(settings.docs_dir, run_date=info.started_at.date().isoformat())

    working = results.filter(pl.col("verdict").is_in(["working", "degraded"])).height
    tested = results.filter(pl.col("n") > 0).height
    return RunSummary(
        run_id=run_id,
        source=info.source,
        base_url=info.base_url,
        status=status,
        catalog_models=catalog.height,
        free_models=free.height,
        tested_models=tested,
        working_models=working,
        untested_models=len(untested),
        probes_sent=all_probes.height,
        quota_before=info.quota_before,
        quota_after=info.quota_after,
        database=str(settings.database),
        run_dir=str(folder),
        documents=[str(p) for p in documents],
    )

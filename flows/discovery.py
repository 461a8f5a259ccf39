"""The ``discovery`` flow: catalog in, DuckDB history and reports out.

::

    prepare ─► fetch-catalog ─► filter-free ─► plan-probes ─► test-by-family (one task run per family)
        ─► analyze-failures ─► rank ─► store (Parquet → DuckDB, with the changes) ─► [drill]
        ─► render ─► artifacts ─► alerts ─► docs commit

The drill (parameter ``drill``, off by default) sends a small workload through the stored rotation's
exports within what is left of the budget (see :mod:`flows.drill`).

The flow only wires the steps. :func:`flows.prepare.prepare` resolves the parameters and checks the
machine before anything is written; :mod:`freemodels.runs` records the run's lifecycle; every step
is recorded when done, so a resumed run does only what is left. The flow owns the shared resources:
the source (the sandbox server when the source is the sandbox), one ``httpx.AsyncClient`` and one
account-wide rate limiter, created once and passed down. The family task runs are awaited together on
the flow's event loop, so they share the client and the limiter.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import polars as pl
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed

from flows.lifecycle import guarded, interrupted_line, quiet_expected_errors, sigterm_cancels_this_task
from flows.parameters import RunParameters, flow_signature
from flows.prepare import Prepared, prepare
from freemodels import storage
from freemodels.client import KeyInfo
from freemodels.drill import Staging
from freemodels.errors import DiscoveryError
from freemodels.records import ProbeSpec, RunInfo, RunStatus, RunStep
from freemodels.runs import RunRecorder
from freemodels.scheduler import PlanOutcome
from freemodels.settings import Settings
from freemodels.source import PROFILES, Source, choose_kind, open_source, profile_of, source_notes
from freemodels.storage import CheckpointWriter
from freemodels.suite import SUITE_VERSION, TASKS, TaskInstance, build_suite
from tasks.analyze_failures import analyze_failures_task
from tasks.drill import DrillResult, DrillTarget, drill_task, run_drill
from tasks.fetch_catalog import fetch_catalog_task, fetch_quota_task, mark_unpriced_as_free
from tasks.filter_free import families, filter_free_task
from tasks.plan_probes import ProbePlan, plan_probes_task
from tasks.rank import rank_task
from tasks.render import RenderOutcome, ReportOptions, render_task
from tasks.store import store_task
from tasks.test_by_family import FamilyContext, test_by_family_task, test_family


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run reports back to the CLI and the Prefect UI."""

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
    resumed: bool = False

    def describe(self) -> str:
        profile = profile_of(self.source)
        label = profile.run_label if profile else self.source
        lines = [
            f"run {self.run_id} ({label}, {self.base_url}): {self.status}",
            f"  catalog: {self.catalog_models} models, {self.free_models} free",
            f"  tested:  {self.tested_models} models with {self.probes_sent} requests; "
            f"{self.working_models} working",
        ]
        if self.untested_models:
            lines.append(
                f"  untested (quota): {self.untested_models} models — continue with "
                f"`discovery run --resume {self.run_id}` when the quota resets (00:00 UTC)"
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


# --------------------------------------------------------------------------------------------------
# the steps, as Prefect tasks in the flow and as plain functions without Prefect


class FetchCatalog(Protocol):
    def __call__(
        self, client: httpx.AsyncClient, origin: str, timeout_s: float | None = None
    ) -> Awaitable[tuple[pl.DataFrame, datetime]]: ...


class FetchQuota(Protocol):
    def __call__(self, client: httpx.AsyncClient) -> Awaitable[KeyInfo | None]: ...


class FilterFree(Protocol):
    def __call__(self, catalog: pl.DataFrame, max_models: int | None = None) -> pl.DataFrame: ...


class PlanProbes(Protocol):
    def __call__(
        self,
        free: pl.DataFrame,
        tasks: Sequence[str],
        samples: int = 1,
        budget: int | None = None,
        done: Any = (),
    ) -> ProbePlan: ...


class TestFamily(Protocol):
    def __call__(
        self, family: str, specs: Sequence[ProbeSpec], ctx: FamilyContext
    ) -> Awaitable[PlanOutcome]: ...


class Analyze(Protocol):
    def __call__(
        self,
        probes: pl.DataFrame,
        free: pl.DataFrame,
        catalog_ids: Sequence[str],
        run_id: str,
        candidates: Sequence[str],
    ) -> pl.DataFrame: ...


class Rank(Protocol):
    def __call__(
        self,
        model_results: pl.DataFrame,
        catalog: pl.DataFrame,
        run_id: str,
        min_samples: int,
        probes: pl.DataFrame | None = None,
    ) -> tuple[pl.DataFrame, pl.DataFrame]: ...


class Store(Protocol):
    def __call__(
        self,
        db_path: Path,
        folder: Path,
        info: RunInfo,
        probes: pl.DataFrame,
        results: pl.DataFrame,
        rotation: pl.DataFrame,
        catalog: pl.DataFrame,
    ) -> pl.DataFrame: ...


class Drill(Protocol):
    def __call__(
        self,
        *,
        run_id: str,
        rotation: pl.DataFrame,
        target: DrillTarget,
        settings: Settings,
        tasks: Sequence[TaskInstance],
        requests: int,
        budget: int | None,
        requests_per_minute: int,
        purpose: str = ...,
        staging: Staging | None = ...,
    ) -> Awaitable[DrillResult]: ...


class Render(Protocol):
    def __call__(
        self, db_path: Path, docs_dir: Path, run_id: str, *, options: ReportOptions | None = ...
    ) -> RenderOutcome: ...


@dataclass(frozen=True, slots=True)
class Steps:
    """The pipeline's steps: Prefect tasks in the flow, their plain functions without Prefect."""

    fetch_catalog: FetchCatalog
    fetch_quota: FetchQuota
    filter_free: FilterFree
    plan_probes: PlanProbes
    test_family: TestFamily
    analyze: Analyze
    rank: Rank
    store: Store
    render: Render
    drill: Drill = run_drill
    in_prefect: bool = False  # inside a flow run: tag it, publish artifacts, emit alert events


def _prefect_test_family(
    family: str, specs: Sequence[ProbeSpec], ctx: FamilyContext
) -> Awaitable[PlanOutcome]:
    # A callable name: Prefect formats a string name with the task's parameters, and a family name
    # comes from the catalog (a "{...}" in it must never be interpreted).
    name = f"test-{family}"
    run = test_by_family_task.with_options(task_run_name=lambda: name)(family, specs, ctx)
    return cast(Awaitable[PlanOutcome], run)  # a State only when the run is being interrupted


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
    drill=drill_task,
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


# --------------------------------------------------------------------------------------------------
# the flow


def flow_run_name() -> str:
    """``<date>-<source>``: the UTC date and the source the run resolves to."""
    from flows.artifacts import run_name
    from flows.prepare import settings_for

    params = flow_run.parameters or {}
    try:
        settings = settings_for(RunParameters(**params))
        kind = choose_kind(settings.source, key_present=settings.resolved_api_key() is not None)
        label = PROFILES[kind].run_label
    except (DiscoveryError, TypeError):
        label = "invalid-parameters"
    return run_name(datetime.now(UTC).date(), label)


@flow(
    name="discovery",
    flow_run_name=flow_run_name,
    description=(
        "Find out which free models work, how fast they are, why the others fail, and which to "
        "fall back to; store the run in DuckDB and render the reports into docs/."
    ),
    log_prints=True,
    persist_result=False,
)
@flow_signature
async def discovery(params: RunParameters) -> RunSummary | State:
    """Run one discovery. Parameters override settings; the API key never is a parameter."""
    logger = get_run_logger()
    quiet_expected_errors()
    try:
        with sigterm_cancels_this_task():
            return await execute(params, steps=PREFECT_STEPS, logger=logger, flow_run_id=flow_run.id)
    except DiscoveryError as exc:
        return Failed(message=str(exc), data=exc)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # handled here: the flow run ends as Cancelled, not by an exception
        return Cancelled(message=interrupted_line(getattr(exc, "run_id", None)))


async def run_without_prefect(params: RunParameters) -> RunSummary:
    """The same pipeline with the plain step functions: no Prefect server, task runs or artifacts.

    Used to measure what orchestration costs (bench/bench_orchestration.py) and in tests.
    """
    return await execute(params, steps=PLAIN_STEPS, logger=logging.getLogger("discovery"), flow_run_id=None)


async def execute(
    params: RunParameters,
    *,
    steps: Steps,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    flow_run_id: str | None,
) -> RunSummary:
    """Run (or resume) one discovery with the given steps."""
    prepared = prepare(params)
    settings = prepared.settings
    in_prefect = steps.in_prefect and bool(flow_run_id)
    if prepared.resumed is not None:
        logger.info("Resuming run %s", prepared.resumed.run_id)
    if prepared.resumed is not None and prepared.resumed.continuable():
        logger.info("%d models were left untested by the quota: probing them now", prepared.resumed.untested)

    recorder = _recorder(prepared, flow_run_id)
    if in_prefect:
        from flows.artifacts import label_flow_run

        await label_flow_run(prepared.profile.run_label, run_date=datetime.now(UTC).date())

    if recorder is None or not recorder.done(RunStep.PROBED):
        with open_source(settings, kind=prepared.kind, api_key_env=prepared.params.api_key_env) as source:
            async with source.client(settings) as client:
                # The catalog is the first request: an unreachable source stops the run here, before
                # anything is written (a resumed run keeps the catalog it started with).
                catalog, fetched_at = await steps.fetch_catalog(
                    client, origin=source.base_url, timeout_s=settings.catalog_timeout_s
                )
                if recorder is None:
                    recorder = _new_recorder(prepared, source, flow_run_id)
                else:
                    recorder.begin()
                async with guarded(recorder, logger):
                    await _probe(prepared, source, client, recorder, catalog, fetched_at, steps, logger)
    else:
        recorder.begin()
    async with guarded(recorder, logger):
        outcome = await _conclude(prepared, recorder, steps, in_prefect, logger)
        recorder.end(RunStatus.COMPLETED)
    return _summary(prepared, recorder, outcome)


def _recorder(prepared: Prepared, flow_run_id: str | None) -> RunRecorder | None:
    """The recorder of a resumed run (None for a new one: it is created once the source answers)."""
    if prepared.resumed is None:
        return None
    folder = storage.run_dir(prepared.settings.runs_dir, prepared.resumed.run_id)
    info = prepared.resumed.info
    if flow_run_id:
        info = replace(info, prefect_flow_run_id=str(flow_run_id))
    recorder = RunRecorder(folder, info, prepared.settings.database)
    if prepared.resumed.continuable():
        recorder.restart_steps()
    return recorder


def _new_recorder(prepared: Prepared, source: Source, flow_run_id: str | None) -> RunRecorder:
    settings = prepared.settings
    now = datetime.now(UTC)
    run_id = storage.new_run_id(now)
    settings_json = json.dumps(
        {
            "parameters": prepared.params.stored(),
            "identity": source.identity.as_dict(),
            "requests_per_minute": source.requests_per_minute,
            "max_tokens": settings.max_tokens,
            "samples_per_task": settings.samples_per_task,
            "min_samples_for_tier": settings.min_samples_for_tier,
            "probe_deadline_s": settings.probe_deadline_s,
            "drill_minute_clears_s": settings.drill_minute_clears_s,
        },
        sort_keys=True,
    )
    info = RunInfo(
        run_id=run_id,
        started_at=now,
        source=source.kind.value,
        base_url=source.base_url,
        prefect_flow_run_id=str(flow_run_id) if flow_run_id else None,
        suite_version=SUITE_VERSION,
        settings_json=settings_json,
    )
    folder = storage.run_dir(settings.runs_dir, run_id)
    recorder = RunRecorder(folder, info, settings.database)
    recorder.begin()
    if prepared.candidates:
        storage.write_candidates(folder, prepared.candidates)
    return recorder


async def _probe(
    prepared: Prepared,
    source: Source,
    client: httpx.AsyncClient,
    recorder: RunRecorder,
    fetched: pl.DataFrame,
    fetched_at: datetime,
    steps: Steps,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Probe every free model the plan and the budget allow; checkpoints hold every answer."""
    settings, folder, run_id = prepared.settings, recorder.folder, recorder.run_id
    catalog_file = folder / storage.TABLE_FILES["catalog"]
    if catalog_file.is_file():  # a resumed run keeps the catalog it started with
        catalog = storage.read_table(catalog_file)
    else:
        catalog = fetched
        if not source.profile.lists_prices:
            catalog, _ = mark_unpriced_as_free(catalog)
        storage.write_table(catalog_file, catalog)
        recorder.save(mirror=False, catalog_fetched_at=fetched_at)
    quota = await steps.fetch_quota(client)
    free = steps.filter_free(catalog, settings.max_models)
    logger.info(
        "Catalog: %d models, %d free in %d families", catalog.height, free.height, len(families(free))
    )

    done = storage.read_probe_checkpoints(folder)
    done_keys = storage.completed_probe_keys(done, max_attempts=settings.max_attempts)
    budget = source.daily_budget(prepared.params.budget, settings, quota)
    plan = steps.plan_probes(free, list(TASKS), settings.samples_per_task, budget, done_keys)
    logger.info(
        "Plan: %d probes to send over %d models; %d models untested for lack of quota; "
        "%d probes already done",
        len(plan.specs),
        len(plan.models),
        len(plan.untested),
        len(done_keys),
    )
    recorder.save(
        quota_before=recorder.info.quota_before
        if recorder.info.quota_before is not None
        else (quota.daily_remaining if quota else None),
        quota_limit=quota.daily_limit if quota else recorder.info.quota_limit,
    )
    by_family: dict[str, list[ProbeSpec]] = {}
    for spec in plan.specs:
        by_family.setdefault(spec.family, []).append(spec)
    with CheckpointWriter(
        folder, source=source.kind.value, on_disk_full=recorder.release_reserve
    ) as checkpoint:
        ctx = FamilyContext(
            client=client,
            settings=settings,
            limiter=source.rate_limiter(budget),
            tasks={t.name: t for t in build_suite(suite_seed(run_id))},
            run_id=run_id,
            on_result=checkpoint.add,
            attempt_offset=storage.max_attempts_by_probe(done),
            attempts_used=storage.attempts_used(done),
            semaphore=asyncio.Semaphore(source.max_concurrency),
            cost_guard=source.profile.cost_guard,
            reset_epoch_ms=source.profile.reset_header_epoch_ms,
        )
        await asyncio.gather(
            *(steps.test_family(family, specs, ctx) for family, specs in sorted(by_family.items()))
        )
    quota_after = await steps.fetch_quota(client)
    probes = storage.read_probe_checkpoints(folder)
    untested = _untested_models(free, probes, settings)
    notes = source_notes(
        source.profile,
        unpriced=not source.profile.lists_prices and catalog.get_column("pricing_json").is_null().all(),
        quota=quota,
        budget=budget,
        probes=probes,
    )
    recorder.save(
        mirror=False,
        quota_after=quota_after.daily_remaining if quota_after else None,
        untested_models=len(untested),
        notes=list(dict.fromkeys([*recorder.info.notes, *notes])),
    )
    recorder.step_done(RunStep.PROBED)


def _untested_models(free: pl.DataFrame, probes: pl.DataFrame, settings: Settings) -> list[str]:
    """Free models with a probe of the suite still to send (the quota ended probing before it)."""
    done = storage.completed_probe_keys(probes, max_attempts=settings.max_attempts)
    expected = [(t, s) for s in range(settings.samples_per_task) for t in TASKS]
    return [
        m for m in free.get_column("model_id").to_list() if any((m, t, s) not in done for t, s in expected)
    ]


@dataclass(frozen=True, slots=True)
class _Conclusion:
    results: pl.DataFrame
    catalog: pl.DataFrame
    free: pl.DataFrame
    probes: pl.DataFrame
    documents: list[Path]


async def _conclude(
    prepared: Prepared,
    recorder: RunRecorder,
    steps: Steps,
    in_prefect: bool,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> _Conclusion:
    """Analyse, rank and store the run, then render, publish, alert and commit: each step once."""
    settings, folder, run_id = prepared.settings, recorder.folder, recorder.run_id
    catalog = storage.read_table(folder / storage.TABLE_FILES["catalog"])
    free = steps.filter_free(catalog, settings.max_models)
    probes = storage.read_probe_checkpoints(folder)
    if not recorder.done(RunStep.STORED):
        results = steps.analyze(
            probes, free, catalog.get_column("model_id").to_list(), run_id, list(prepared.candidates)
        )
        results, rotation = steps.rank(results, catalog, run_id, settings.min_samples_for_tier, probes)
        steps.store(settings.database, folder, recorder.info, probes, results, rotation, catalog)
        recorder.step_done(RunStep.STORED)
    results = storage.read_table(folder / storage.TABLE_FILES["model_results"])
    if prepared.params.drill and not recorder.done(RunStep.DRILLED):
        await _drill(prepared, recorder, steps, logger)
        recorder.step_done(RunStep.DRILLED)

    documents: list[Path] = []
    publish = in_prefect and not recorder.done(RunStep.PUBLISHED)
    if not recorder.done(RunStep.RENDERED) or publish:
        rendered = steps.render(
            settings.database, settings.docs_dir, run_id, options=ReportOptions.of(settings)
        )
        documents = rendered.paths
        recorder.step_done(RunStep.RENDERED)
        if publish:
            from flows.artifacts import publish_artifacts

            await publish_artifacts(rendered.summary_markdown, rendered.tiers, run_id)
            recorder.step_done(RunStep.PUBLISHED)
    if in_prefect and not recorder.done(RunStep.ALERTED):
        from flows.alerts import emit_lost_models, previous_rotation_of

        previous = previous_rotation_of(settings.database, run_id)
        lost = emit_lost_models(previous, results, catalog, run_id=run_id, source=recorder.info.source)
        for model in lost:
            logger.warning(
                "Lost from the previous rotation: %s (%s: %s)", model.model_id, model.reason, model.detail
            )
        recorder.step_done(RunStep.ALERTED)
    if prepared.params.commit_docs and not recorder.done(RunStep.COMMITTED):
        from flows.docs_commit import commit_docs

        commit_docs(settings.docs_dir, run_date=recorder.info.started_at.date().isoformat())
        recorder.step_done(RunStep.COMMITTED)
    return _Conclusion(results=results, catalog=catalog, free=free, probes=probes, documents=documents)


async def _drill(
    prepared: Prepared,
    recorder: RunRecorder,
    steps: Steps,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """The drill step: what is left of the budget after the run's own attempts, then the drill."""
    from flows.drill import drill_budget, drill_run

    settings = prepared.settings
    attempts = storage.read_probe_checkpoints(recorder.folder).height
    budget = drill_budget(
        budget=prepared.params.budget,
        settings=settings,
        info=recorder.info,
        attempts_used=attempts,
        kind=prepared.kind,
    )
    done = await drill_run(
        settings=settings,
        info=recorder.info,
        api_key_env=prepared.params.api_key_env,
        requests=settings.drill_requests,
        budget=budget,
        runner=steps.drill,
    )
    result = done.result
    logger.info(
        "Drill: %d workloads of %d requests, %d requests recorded",
        result.cells,
        result.requests,
        result.frame.height,
    )
    for note in result.notes:
        logger.warning("Drill: %s", note)


def _summary(prepared: Prepared, recorder: RunRecorder, outcome: _Conclusion) -> RunSummary:
    info = recorder.info
    verdicts = outcome.results.get_column("verdict")
    return RunSummary(
        run_id=info.run_id,
        source=info.source,
        base_url=info.base_url,
        status=info.status,
        catalog_models=outcome.catalog.height,
        free_models=outcome.free.height,
        tested_models=int((outcome.results.get_column("n") > 0).sum()),
        working_models=int(verdicts.is_in(["working", "degraded"]).sum()),
        untested_models=info.untested_models or 0,
        probes_sent=outcome.probes.height,
        quota_before=info.quota_before,
        quota_after=info.quota_after,
        database=str(prepared.settings.database),
        run_dir=str(recorder.folder),
        documents=[str(p) for p in outcome.documents],
        resumed=prepared.resumed is not None,
    )

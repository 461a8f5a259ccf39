"""The ``discovery`` flow: catalog in, DuckDB history and reports out.

::

    prepare ─► fetch-catalog ─► filter-free ─► read-free-signals ─► plan-probes
        ─► probe-round (one task run per round: screening, retries, deepening, ...)
        ─► analyze-failures ─► rank ─► store (Parquet → DuckDB, with the changes) ─► [drill]
        ─► render ─► artifacts ─► alerts ─► docs commit

The drill (parameter ``drill``, off by default) sends a small workload through the stored rotation's
exports within what is left of the budget (see :mod:`flows.drill`).

The flow only wires the steps. :func:`flows.prepare.prepare` resolves the parameters and checks the
machine before anything is written; :mod:`freemodels.runs` records the run's lifecycle; every step
is recorded when done, so a resumed run does only what is left. The flow owns the shared resources:
the source (the sandbox server when the source is the sandbox), one ``httpx.AsyncClient`` and one
account-wide rate limiter, created once and passed down. The plan (:mod:`freemodels.rounds`) decides
each round when the one before has ended; every attempt goes to the checkpoint, the plan and the
progress line as it completes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import httpx
import polars as pl
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed

from flows.lifecycle import guarded, interrupted_line, quiet_expected_errors, sigterm_cancels_this_task
from flows.parameters import RunParameters, flow_signature
from flows.prepare import Prepared, check_source_reachable, prepare
from freemodels import storage
from freemodels.client import KeyInfo
from freemodels.drill import Staging
from freemodels.errors import DiscoveryError
from freemodels.progress import ProgressReporter, Snapshot, eta_s
from freemodels.records import ENDPOINTS_SCHEMA, ProbeResult, RunInfo, RunStatus, RunStep
from freemodels.rounds import ACCOUNT_LIMIT_STALLED, LeftUntested, Round, RoundPlanner, left_untested
from freemodels.runs import RunRecorder
from freemodels.scheduler import PlanOutcome, RateLimiter
from freemodels.secrets import install_log_redaction, printable, untrusted
from freemodels.settings import Settings
from freemodels.source import PROFILES, Source, choose_kind, open_source, profile_of, source_notes
from freemodels.storage import CheckpointWriter
from freemodels.suite import SUITE_VERSION, TASKS, TaskInstance, build_suite
from tasks.analyze_failures import analyze_failures_task
from tasks.drill import DrillResult, DrillTarget, drill_task, run_drill
from tasks.fetch_catalog import fetch_catalog_task, fetch_quota_task, mark_unpriced_as_free
from tasks.filter_free import families, filter_free_task
from tasks.free_signals import read_free_signals, read_free_signals_task
from tasks.plan_probes import plan_rounds_task
from tasks.probe_round import RoundContext, probe_round, probe_round_task, round_summary, run_rounds
from tasks.rank import rank_task
from tasks.render import RenderOutcome, ReportOptions, render_task
from tasks.store import store_task


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run reports back to the CLI and the Prefect UI."""

    run_id: str
    source: str
    base_url: str
    status: str
    catalog_models: int
    free_models: int
    tested_models: int  # free models with a verdict (probed, or settled by the free signals)
    working_models: int
    untested_models: int  # free models with probes left for a later run (no verdict, or part of the suite)
    probes_sent: int
    quota_before: int | None
    quota_after: int | None
    database: str
    run_dir: str
    documents: list[str] = field(default_factory=list)
    resumed: bool = False
    settled_models: int = 0  # settled by the free signals, without a chat request
    no_verdict_models: int = 0  # left without any verdict by the quota
    left_because: LeftUntested = field(default_factory=lambda: left_untested((), None, None))

    def describe(self) -> str:
        profile = profile_of(self.source)
        label = profile.run_label if profile else self.source
        settled = f", {self.settled_models} of them from their listings alone" if self.settled_models else ""
        lines = [
            f"run {self.run_id} ({label}, {self.base_url}): {self.status}",
            f"  catalog: {self.catalog_models} models, {self.free_models} free",
            f"  judged:  {self.tested_models} models{settled}; {self.probes_sent} requests; "
            f"{self.working_models} working",
        ]
        if self.untested_models:
            partial = self.untested_models - self.no_verdict_models
            left = ", ".join(
                text
                for count, text in (
                    (self.no_verdict_models, f"{self.no_verdict_models} without a verdict"),
                    (partial, f"{partial} with part of the suite"),
                )
                if count
            )
            why = self.left_because
            lines.append(
                f"  left for later ({why.short}): {left} — continue with "
                f"`discovery run --resume {self.run_id}` {why.resume_when}"
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
    ) -> Awaitable[tuple[pl.DataFrame, datetime, list[str]]]: ...


class FetchQuota(Protocol):
    def __call__(self, client: httpx.AsyncClient) -> Awaitable[KeyInfo | None]: ...


class FilterFree(Protocol):
    def __call__(self, catalog: pl.DataFrame, max_models: int | None = None) -> pl.DataFrame: ...


class ReadFreeSignals(Protocol):
    def __call__(
        self,
        client: httpx.AsyncClient,
        free: pl.DataFrame,
        catalog_ids: Sequence[str],
        *,
        run_id: str,
        settings: Settings,
        lists_endpoints: bool,
        reads_user_models: bool,
    ) -> Awaitable[pl.DataFrame]: ...


class PlanRounds(Protocol):
    def __call__(
        self,
        free: pl.DataFrame,
        tasks: Sequence[str],
        *,
        endpoints: pl.DataFrame,
        done: pl.DataFrame,
        samples: int = 1,
        max_attempts: int = 3,
        batch: int = 3,
        probe_all: bool = False,
    ) -> RoundPlanner: ...


class ProbeRound(Protocol):
    def __call__(self, plan_round: Round, ctx: RoundContext) -> Awaitable[PlanOutcome]: ...


class Analyze(Protocol):
    def __call__(
        self,
        probes: pl.DataFrame,
        free: pl.DataFrame,
        catalog_ids: Sequence[str],
        run_id: str,
        candidates: Sequence[str],
        endpoints: pl.DataFrame | None = None,
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
        progress: Callable[[str], None] | None = ...,
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
    read_free_signals: ReadFreeSignals
    plan_rounds: PlanRounds
    probe_round: ProbeRound
    analyze: Analyze
    rank: Rank
    store: Store
    render: Render
    drill: Drill = run_drill
    in_prefect: bool = False  # inside a flow run: tag it, publish artifacts, emit alert events


async def _prefect_probe_round(plan_round: Round, ctx: RoundContext) -> PlanOutcome:
    # A callable name: Prefect formats a string name with the task's parameters. The round's name is
    # project text only (``round-2-retries``), but a callable is never formatted at all.
    name = printable(plan_round.name)
    outcome = await probe_round_task.with_options(task_run_name=lambda: name)(plan_round, ctx)
    if not isinstance(outcome, PlanOutcome):
        # The task run ended as Cancelled: the run is being interrupted.
        raise asyncio.CancelledError("interrupted")
    return outcome


PREFECT_STEPS = Steps(
    fetch_catalog=fetch_catalog_task,
    fetch_quota=fetch_quota_task,
    filter_free=filter_free_task,
    read_free_signals=read_free_signals_task,
    plan_rounds=plan_rounds_task,
    probe_round=_prefect_probe_round,
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
    read_free_signals=read_free_signals,
    plan_rounds=plan_rounds_task.fn,
    probe_round=probe_round,
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


def started_from_deployment() -> bool:
    """Whether the current flow run was created from a deployment (``prefect deployment run``, the
    UI, the schedule): its parameters came from whoever can reach the Prefect API."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    return run is not None and run.deployment_id is not None


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
    """Run one discovery. Parameters override settings; the API key never is a parameter.

    A run started from the deployment (:func:`started_from_deployment`) has untrusted parameters: see
    :func:`flows.prepare.check_deployment_run`. A refusal, like every error the project raises, is one
    redacted line in the flow run's state message; so is a defect of this program (its traceback goes
    to the log, redacted)."""
    install_log_redaction()
    logger = get_run_logger()
    quiet_expected_errors()
    try:
        with sigterm_cancels_this_task():
            return await execute(
                params,
                steps=PREFECT_STEPS,
                logger=logger,
                flow_run_id=flow_run.id,
                deployment_run=started_from_deployment(),
            )
    except DiscoveryError as exc:
        return Failed(message=printable(str(exc)), data=exc)
    except Exception as exc:  # a defect: its message, redacted, not Prefect's own rendering of it
        line = printable(untrusted(f"internal error: {type(exc).__name__}: {exc}", 500))
        logger.error("%s", line, exc_info=exc)
        return Failed(message=line, data=exc)
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
    deployment_run: bool = False,
) -> RunSummary:
    """Run (or resume) one discovery with the given steps (``deployment_run``: its parameters came
    from the deployment and are checked as untrusted)."""
    prepared = prepare(params, deployment_run=deployment_run)
    settings = prepared.settings
    resumed = prepared.resumed
    if resumed is None or resumed.continuable() or RunStep.PROBED.value not in resumed.info.steps_done:
        check_source_reachable(prepared)  # it will be asked: a missing network is one line now
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
                catalog, fetched_at, catalog_notes = await steps.fetch_catalog(
                    client, origin=source.base_url, timeout_s=settings.catalog_timeout_s
                )
                if recorder is None:
                    recorder = _new_recorder(prepared, source, flow_run_id, notes=catalog_notes)
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


def _new_recorder(
    prepared: Prepared, source: Source, flow_run_id: str | None, *, notes: Sequence[str] = ()
) -> RunRecorder:
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
            "max_attempts": settings.max_attempts,
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
        notes=list(notes),
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
    endpoints = await _free_signals(source, client, recorder, catalog, free, steps, settings)

    done = storage.read_probe_checkpoints(folder)
    budget = source.daily_budget(prepared.params.budget, settings, quota)
    planner = steps.plan_rounds(
        free,
        list(TASKS),
        endpoints=endpoints,
        done=done,
        samples=settings.samples_per_task,
        max_attempts=settings.max_attempts,
        batch=settings.rotation_models_limit,
        probe_all=settings.probe_all,
    )
    limiter = source.rate_limiter(budget)
    logger.info(
        "Plan: %d free models, %d settled by the free signals, %d requests wanted, budget %s; "
        "%d attempts already done",
        free.height,
        len(planner.settled),
        planner.need(),
        "unlimited" if budget is None else budget,
        done.height,
    )
    recorder.save(
        quota_before=recorder.info.quota_before
        if recorder.info.quota_before is not None
        else (quota.daily_remaining if quota else None),
        quota_limit=quota.daily_limit if quota else recorder.info.quota_limit,
    )
    with CheckpointWriter(
        folder, source=source.kind.value, on_disk_full=recorder.release_reserve
    ) as checkpoint:
        progress = _reporter(planner, limiter, free.height, settings, logger)

        def on_result(result: ProbeResult) -> None:
            checkpoint.add(result)
            planner.observe(result)

        ctx = RoundContext(
            client=client,
            settings=settings,
            limiter=limiter,
            tasks={t.name: t for t in build_suite(suite_seed(run_id))},
            run_id=run_id,
            on_result=on_result,
            attempt_offset=storage.max_attempts_by_probe(done),
            attempts_used=storage.attempts_used(done),
            semaphore=asyncio.Semaphore(source.max_concurrency),
            cost_guard=source.profile.cost_guard,
            reset_epoch_ms=source.profile.reset_header_epoch_ms,
        )

        def ended(plan_round: Round, outcome: PlanOutcome) -> None:
            progress.clear()
            template, args = round_summary(plan_round, outcome)
            logger.info(template, *args)

        def starting(plan_round: Round) -> None:
            progress.round_name = plan_round.name

        async with progress.running():
            await run_rounds(planner, ctx, send=steps.probe_round, starting=starting, ended=ended)
    quota_after = await steps.fetch_quota(client)
    probes = storage.read_probe_checkpoints(folder)
    notes = source_notes(
        source.profile,
        unpriced=not source.profile.lists_prices and catalog.get_column("pricing_json").is_null().all(),
        quota=quota,
        budget=budget,
        probes=probes,
    )
    if planner.left_to_account_limit:
        logger.warning(ACCOUNT_LIMIT_STALLED)
        notes = [*notes, ACCOUNT_LIMIT_STALLED]
    recorder.save(
        mirror=False,
        quota_after=quota_after.daily_remaining if quota_after else None,
        untested_models=len(planner.models_left()),
        # An earlier process's account-limit note is this process's to say again (or not).
        notes=list(dict.fromkeys([*(n for n in recorder.info.notes if n != ACCOUNT_LIMIT_STALLED), *notes])),
    )
    recorder.step_done(RunStep.PROBED)


async def _free_signals(
    source: Source,
    client: httpx.AsyncClient,
    recorder: RunRecorder,
    catalog: pl.DataFrame,
    free: pl.DataFrame,
    steps: Steps,
    settings: Settings,
) -> pl.DataFrame:
    """The run's endpoints listings: read once before the first chat request, kept for a resume."""
    path = recorder.folder / storage.TABLE_FILES["endpoints"]
    if path.is_file():
        return storage.read_table(path, ENDPOINTS_SCHEMA)
    endpoints = await steps.read_free_signals(
        client,
        free,
        catalog.get_column("model_id").to_list(),
        run_id=recorder.run_id,
        settings=settings,
        lists_endpoints=source.profile.lists_endpoints,
        reads_user_models=source.reads_user_models,
    )
    storage.write_table(path, endpoints, schema=ENDPOINTS_SCHEMA)
    return endpoints


def _reporter(
    planner: RoundPlanner,
    limiter: RateLimiter,
    models: int,
    settings: Settings,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> ProgressReporter:
    """The run's progress line (:mod:`freemodels.progress`): what this process has sent and what the
    plan and the budget leave; live on a terminal, logged every ``progress_every_s`` otherwise."""
    start = limiter.used

    def snapshot() -> Snapshot:
        sent = limiter.used - start
        left = planner.planned(limiter.remaining)
        return Snapshot(
            sent=sent,
            planned=sent + left,
            judged=len(planner.judged_models),
            models=models,
            retries=planner.retries,
            quota_left=limiter.remaining,
            eta_s=eta_s(left, limiter.interval_s),
            round_name=reporter.round_name,
        )

    reporter = ProgressReporter(
        snapshot,
        live=sys.stderr.isatty(),
        write=lambda text: print(text, end="", file=sys.stderr, flush=True),
        log=lambda line: logger.info("%s", line),
        every_s=settings.progress_every_s,
    )
    return reporter


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
        endpoints_file = folder / storage.TABLE_FILES["endpoints"]
        endpoints = storage.read_table(endpoints_file, ENDPOINTS_SCHEMA) if endpoints_file.is_file() else None
        results = steps.analyze(
            probes,
            free,
            catalog.get_column("model_id").to_list(),
            run_id,
            list(prepared.candidates),
            endpoints,
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
        progress=lambda line: logger.info("%s", line),
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
        tested_models=int(verdicts.is_in(["working", "degraded", "failing"]).sum()),
        working_models=int(verdicts.is_in(["working", "degraded"]).sum()),
        untested_models=info.untested_models or 0,
        settled_models=int(((verdicts == "failing") & (outcome.results.get_column("n") == 0)).sum()),
        no_verdict_models=int((verdicts == "untested_quota").sum()),
        probes_sent=outcome.probes.height,
        quota_before=info.quota_before,
        quota_after=info.quota_after,
        database=str(prepared.settings.database),
        run_dir=str(recorder.folder),
        documents=[str(p) for p in outcome.documents],
        resumed=prepared.resumed is not None,
        left_because=left_untested(info.notes, prepared.params.budget, info.quota_after),
    )

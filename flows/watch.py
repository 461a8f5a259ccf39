"""The daily watch: keep the rotation true between monthly runs without spending chat quota.

::

    prepare ─► read what to compare with (the latest completed run's rotation, the previous watch)
        ─► fetch-catalog ─► read the rotation's endpoints listings (no chat quota)
        ─► liveness probes (only with ``liveness`` > 0: at most that many one-task chat requests)
        ─► findings (pure: :mod:`freemodels.watch`) ─► repair-rotation (the exports, the summary's notice)
        ─► store (Parquet under ``data/watches/<id>/`` → DuckDB) ─► events

The watch is a flow named ``discovery`` like the monthly discovery, so its deployment is
``discovery/watch``. It takes the same source options as a discovery (:class:`WatchParameters`); a
deployment run's parameters pass the same trust checks (:func:`flows.prepare.check_deployment_run`).
It never needs a key unless it is asked for liveness probes.

Nothing lost is a success; lost models are a success too (the watch did its job: it lists them,
repairs the exports and emits the events). Only a watch that could not do its work fails: one line,
like every error of the project.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Failed

from flows.alerts import watch_events
from flows.discovery import started_from_deployment, suite_seed
from flows.lifecycle import quiet_expected_errors
from flows.parameters import WatchParameters, flow_signature
from flows.prepare import check_deployment_run, settings_for
from freemodels import storage
from freemodels.checks import check_environment, check_reachable
from freemodels.client import fetch_key_info
from freemodels.errors import ConfigError, DiscoveryError
from freemodels.failures import Failure
from freemodels.listings import Listing, fetch_listings
from freemodels.records import (
    AVAILABILITY_SCHEMA,
    PROBES_SCHEMA,
    ROTATION_SCHEMA,
    WATCH_CHANGES_SCHEMA,
    WATCHES_SCHEMA,
    ProbeResult,
    ProbeSpec,
    probes_frame,
)
from freemodels.scheduler import run_plan
from freemodels.secrets import install_log_redaction, printable, real_url, untrusted
from freemodels.settings import Settings
from freemodels.source import (
    PROFILES,
    Source,
    SourceKind,
    SourceProfile,
    choose_kind,
    open_source,
    required_key_missing,
    resolve_identity,
)
from freemodels.suite import SCREENING_TASK, build_suite
from freemodels.watch import (
    REASON_WORDS,
    Change,
    Findings,
    Previous,
    find_lost,
    rotation_members,
    watch_findings,
)
from tasks.fetch_catalog import fetch_catalog_task, mark_unpriced_as_free
from tasks.rank import purposes
from tasks.repair import RepairOutcome, write_repair

WATCHES_DIR = "watches"
WATCH_TAG = "watch"


@dataclass(frozen=True, slots=True)
class WatchSummary:
    """What a watch reports back to the CLI and the Prefect UI."""

    watch_id: str
    source: str
    base_url: str
    based_on_run_id: str | None
    compared_with: str | None
    catalog_models: int
    free_models: int
    rotation_models: int
    listings_read: int
    chat_requests: int
    lost: list[tuple[str, str, str, bool]] = field(default_factory=list)  # model, reason, detail, new
    restored: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    expiring: list[tuple[str, str]] = field(default_factory=list)  # model, date
    repaired: bool = False
    written: list[str] = field(default_factory=list)
    skipped: str | None = None
    database: str = ""
    source_counted: Mapping[str, object] | None = None  # the sandbox's own counters
    events: list[dict[str, Any]] = field(
        default_factory=list
    )  # emitted inside Prefect (kwargs of emit_event)

    def describe(self) -> str:
        """A short summary, one fact a line (catalog text included: print it with ``printable``)."""
        profile = (
            PROFILES.get(SourceKind(self.source)) if self.source in SourceKind._value2member_map_ else None
        )
        label = profile.run_label if profile else self.source
        base = (
            f"the rotation of run {self.based_on_run_id} ({self.rotation_models} models)"
            if self.based_on_run_id
            else "no completed run yet, so no rotation"
        )
        lines = [
            f"watch {self.watch_id} ({label}, {self.base_url}): {base}",
            f"  catalog: {self.catalog_models} models, {self.free_models} free; "
            f"{self.listings_read} endpoints listings read; {self.chat_requests} chat requests",
        ]
        if self.source_counted is not None and "chat_requests" in self.source_counted:
            lines[-1] += f" (the sandbox counted {self.source_counted['chat_requests']})"
        if self.lost:
            for model_id, reason, detail, new in self.lost:
                lines.append(
                    f"  lost: {model_id} ({REASON_WORDS.get(reason, reason)}: {detail})"
                    + ("" if new else " (already reported)")
                )
        else:
            lines.append("  nothing lost" if self.based_on_run_id else "  nothing to lose")
        lines += [f"  back in the rotation: {m}" for m in self.restored]
        lines += [f"  added (new free model): {m}" for m in self.added]
        lines += [f"  no longer free or gone: {m}" for m in self.removed]
        lines += [f"  expiring: {m} on {when}" for m, when in self.expiring]
        if self.written:
            what = "repaired" if self.repaired else "restored to the measured rotation"
            lines.append(f"  rotation {what}: wrote {', '.join(Path(p).name for p in self.written)}")
        if self.skipped:
            lines.append(f"  exports: {self.skipped}")
        lines.append(f"  database: {self.database}")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class PreparedWatch:
    """A watch ready to start: its parameters, settings and source kind."""

    params: WatchParameters
    settings: Settings
    kind: SourceKind

    @property
    def profile(self) -> SourceProfile:
        return PROFILES[self.kind]


def prepare_watch(params: WatchParameters, *, deployment_run: bool = False) -> PreparedWatch:
    """Check the parameters and the machine before anything is sent or written (one line on a
    problem). A deployment run's parameters are untrusted, as a discovery's are."""
    params.check()
    if deployment_run:
        params = check_deployment_run(params, settings_for(params))
    settings = settings_for(params)
    kind = choose_kind(settings.source, key_present=settings.resolved_api_key() is not None)
    profile = PROFILES[kind]
    missing = required_key_missing(profile, settings, params.api_key_env)
    if missing is not None and (params.liveness > 0 or params.api_key_env):
        raise ConfigError(f"{missing} (liveness probes are chat requests)" if params.liveness else missing)
    if params.scenario and kind is SourceKind.SANDBOX:
        from freemodels.sandbox.scenario import load_scenario

        load_scenario(Path(params.scenario))
    check_environment(settings)
    return PreparedWatch(params=params, settings=settings, kind=kind)


def check_watch_reachable(prepared: PreparedWatch) -> None:
    """The source's host answers a connection (the sandbox is started by the watch itself)."""
    if prepared.profile.simulated:
        return
    identity = resolve_identity(prepared.settings, kind=prepared.kind)
    if identity.base_url:
        check_reachable(real_url(identity.base_url), timeout_s=prepared.settings.connect_timeout_s)


# --------------------------------------------------------------------------------------------------
# what to compare with


@dataclass(frozen=True, slots=True)
class Baseline:
    """The latest completed run of the source (its rotation) and the snapshot before this watch."""

    run: dict[str, Any] | None
    rotation: pl.DataFrame
    previous: Previous
    previous_watch_id: str | None


def read_baseline(database: Path, source: str) -> Baseline:
    """What the watch compares with, read from DuckDB (see :mod:`freemodels.watch`)."""
    con = storage.connect(database)
    try:
        run_id = storage.latest_run_id(con, source=source)
        run = storage.load_table(con, "runs", run_id).row(0, named=True) if run_id else None
        rotation = (
            storage.load_table(con, "rotation", run_id) if run_id else pl.DataFrame(schema=ROTATION_SCHEMA)
        )
        watch = storage.latest_watch(con, source=source)
        run_at = (run.get("catalog_fetched_at") or run.get("started_at")) if run else None
        if watch is not None and (run_at is None or watch["at"] >= run_at):
            watch_id = str(watch["watch_id"])
            changes = storage.watch_changes(con, watch_id)
            same_run = watch.get("based_on_run_id") == run_id
            lost_rows = changes.filter(pl.col("change") == Change.LOST.value) if same_run else changes.clear()
            expiring = changes.filter(pl.col("change") == Change.EXPIRING.value)
            previous = Previous(
                snapshot_id=watch_id,
                free=_free_in(storage.snapshot(con, watch_id)),
                lost=dict(lost_rows.select("model_id", "reason").iter_rows()),
                expiring=dict(expiring.select("model_id", "expiration_date").iter_rows()),
            )
        elif run_id is not None:
            earlier = watch  # older than the run: its expiring models were reported already
            expiring_rows = (
                storage.watch_changes(con, str(earlier["watch_id"])).filter(
                    pl.col("change") == Change.EXPIRING.value
                )
                if earlier is not None
                else pl.DataFrame(schema=WATCH_CHANGES_SCHEMA)
            )
            previous = Previous(
                snapshot_id=run_id,
                free=_free_in(storage.snapshot(con, run_id)),
                expiring=dict(expiring_rows.select("model_id", "expiration_date").iter_rows()),
            )
        else:
            previous = Previous(snapshot_id=None)
        return Baseline(
            run=run,
            rotation=rotation,
            previous=previous,
            previous_watch_id=str(watch["watch_id"]) if watch is not None else None,
        )
    finally:
        con.close()


def _free_in(snapshot: pl.DataFrame) -> frozenset[str]:
    return frozenset(snapshot.filter(pl.col("free").fill_null(False)).get_column("model_id").to_list())


# --------------------------------------------------------------------------------------------------
# reading the source


@dataclass(frozen=True, slots=True)
class Observation:
    """What the watch read from the source."""

    catalog: pl.DataFrame
    at: datetime
    notes: list[str]
    listings: dict[str, Listing]
    probes: pl.DataFrame  # PROBES_SCHEMA: the liveness probes' attempts
    probe_outcome: dict[str, Failure | None]  # model -> failure of its last attempt (None: passed)
    source_counted: Mapping[str, object] | None
    base_url: str  # as shown and stored (credentials masked)


async def liveness_probes(
    client: httpx.AsyncClient,
    source: Source,
    settings: Settings,
    *,
    models: Sequence[str],
    families: Mapping[str, str],
    most: int,
    watch_id: str,
) -> list[ProbeResult]:
    """At most ``most`` chat requests, one screening task per model (in order), through the
    scheduler with a budget of ``most`` (never more than the daily quota left)."""
    quota = await fetch_key_info(client)
    budget = source.daily_budget(most, settings, None)
    if quota is not None and quota.daily_remaining is not None:
        budget = min(budget if budget is not None else most, quota.daily_remaining)
    limit = min(most, budget if budget is not None else most)
    targets = list(models)[:limit]
    if not targets:
        return []
    specs = [ProbeSpec(model_id=m, family=families.get(m, m), task=SCREENING_TASK) for m in targets]
    results: list[ProbeResult] = []
    await run_plan(
        client,
        specs,
        {t.name: t for t in build_suite(suite_seed(watch_id))},
        settings,
        source.rate_limiter(limit),
        run_id=watch_id,
        on_result=results.append,
        cost_guard=source.profile.cost_guard,
        reset_epoch_ms=source.profile.reset_header_epoch_ms,
        retry_transient=False,
    )
    return results


def _probe_outcome(results: Sequence[ProbeResult]) -> dict[str, Failure | None]:
    last: dict[str, ProbeResult] = {}
    for result in sorted(results, key=lambda r: r.attempt):
        last[result.model_id] = result
    return {m: (None if r.passed else r.failure) for m, r in last.items()}


async def observe(prepared: PreparedWatch, members: Sequence[str], *, watch_id: str) -> Observation:
    """Read the catalog, the members' endpoints listings and, when asked, the liveness probes."""
    settings, params = prepared.settings, prepared.params
    with open_source(
        settings, kind=prepared.kind, api_key_env=params.api_key_env, need_key=params.liveness > 0
    ) as source:
        async with source.client(settings) as client:
            catalog, at, notes = await fetch_catalog_task.fn(
                client, origin=source.base_url, timeout_s=settings.catalog_timeout_s
            )
            if not source.profile.lists_prices:
                catalog, _ = mark_unpriced_as_free(catalog)
            listings: dict[str, Listing] = {}
            if source.profile.lists_endpoints and members:
                read = await fetch_listings(
                    client,
                    members,
                    requests_per_minute=settings.listing_requests_per_minute,
                    concurrency=settings.listing_concurrency,
                    timeout_s=settings.catalog_timeout_s,
                )
                listings = {listing.model_id: listing for listing in read}
            results: list[ProbeResult] = []
            if params.liveness > 0 and members:
                listed = dict(catalog.select("model_id", pl.col("is_free").fill_null(False)).iter_rows())
                unusable = {m for m, _, _ in find_lost(members, listed, listings, {})}
                families = dict(catalog.select("model_id", "family").iter_rows())
                results = await liveness_probes(
                    client,
                    source,
                    settings,
                    models=[m for m in members if m not in unusable],
                    families=families,
                    most=params.liveness,
                    watch_id=watch_id,
                )
            counted = dict(source.counters()) if source.counters is not None else None
            base_url = source.base_url
    return Observation(
        base_url=base_url,
        catalog=catalog,
        at=at,
        notes=notes,
        listings=listings,
        probes=probes_frame(results),
        probe_outcome=_probe_outcome(results),
        source_counted=counted,
    )


# --------------------------------------------------------------------------------------------------
# the watch


def watch_row(
    *,
    watch_id: str,
    prepared: PreparedWatch,
    baseline: Baseline,
    observation: Observation,
    findings: Findings,
    repair: RepairOutcome | None,
    flow_run_id: str | None,
    base_url: str,
) -> pl.DataFrame:
    """The ``watches`` row of a completed watch."""
    catalog = observation.catalog
    free = (
        int(
            (
                catalog.get_column("is_free").fill_null(False)
                & ~catalog.get_column("is_router").fill_null(False)
            ).sum()
        )
        if not catalog.is_empty()
        else 0
    )
    row = {
        "watch_id": watch_id,
        "at": observation.at,
        "finished_at": datetime.now(UTC),
        "source": prepared.kind.value,
        "base_url": base_url,
        "status": "completed",
        "status_reason": None,
        "based_on_run_id": baseline.run["run_id"] if baseline.run else None,
        "previous_watch_id": baseline.previous_watch_id,
        "catalog_models": catalog.height,
        "free_models": free,
        "rotation_models": len(findings.members),
        "listings_read": len(observation.listings),
        "chat_requests": observation.probes.height,
        "lost": len(findings.lost),
        "added": len(findings.ids(Change.ADDED)),
        "expiring": len(findings.ids(Change.EXPIRING)),
        "restored": len(findings.restored),
        "rotation_repaired": bool(repair and repair.repaired),
        "exports_rewritten": bool(repair and repair.written),
        "prefect_flow_run_id": flow_run_id,
        "notes": json.dumps(observation.notes + ([repair.skipped] if repair and repair.skipped else [])),
    }
    return pl.DataFrame([row], schema=WATCHES_SCHEMA)


def store_watch_folder(
    settings: Settings,
    watch_id: str,
    row: pl.DataFrame,
    findings: Findings,
    probes: pl.DataFrame,
) -> Path:
    """Write the watch's Parquet files and load them into DuckDB in one transaction."""
    folder = settings.data_dir / WATCHES_DIR / watch_id
    storage.write_table(folder / storage.WATCH_FILES["watches"], row, schema=WATCHES_SCHEMA)
    storage.write_table(
        folder / storage.WATCH_FILES["watch_changes"], findings.changes, schema=WATCH_CHANGES_SCHEMA
    )
    storage.write_table(
        folder / storage.WATCH_FILES["availability"], findings.availability, schema=AVAILABILITY_SCHEMA
    )
    if not probes.is_empty():
        storage.write_table(folder / "probes.parquet", probes, schema=PROBES_SCHEMA)
    con = storage.connect(settings.database)
    try:
        storage.store_watch(con, folder, watch_id)
    finally:
        con.close()
    return folder


async def execute_watch(
    params: WatchParameters,
    *,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    flow_run_id: str | None,
    in_prefect: bool = False,
    deployment_run: bool = False,
) -> WatchSummary:
    """One watch (see the module docstring)."""
    prepared = prepare_watch(params, deployment_run=deployment_run)
    check_watch_reachable(prepared)
    settings = prepared.settings
    now = datetime.now(UTC)
    watch_id = f"watch-{storage.new_run_id(now)}"
    if in_prefect:
        from flows.artifacts import label_flow_run

        await label_flow_run(prepared.profile.run_label, run_date=now.date(), kind=WATCH_TAG)
    baseline = read_baseline(settings.database, prepared.kind.value)
    members = rotation_members(baseline.rotation, purposes())
    observation = await observe(prepared, members, watch_id=watch_id)
    findings = watch_findings(
        watch_id=watch_id,
        source=prepared.kind.value,
        at=observation.at,
        catalog=observation.catalog,
        rotation=baseline.rotation,
        order=purposes(),
        listings=observation.listings,
        probes=observation.probe_outcome,
        previous=baseline.previous,
    )
    lost = [(m.model_id, m.reason.value, m.detail) for m in findings.lost]
    repair: RepairOutcome | None = None
    if baseline.run is not None:
        repair = write_repair(
            settings.docs_dir,
            rotation=baseline.rotation,
            lost=lost,
            run=baseline.run,
            watch_id=watch_id,
            on=observation.at.date().isoformat(),
            models_limit=settings.rotation_models_limit,
        )
    base_url = observation.base_url
    row = watch_row(
        watch_id=watch_id,
        prepared=prepared,
        baseline=baseline,
        observation=observation,
        findings=findings,
        repair=repair,
        flow_run_id=str(flow_run_id) if flow_run_id else None,
        base_url=base_url,
    )
    store_watch_folder(settings, watch_id, row, findings, observation.probes)
    for model in findings.lost:
        if model.new:
            logger.warning(
                "Lost from the rotation: %s (%s: %s)",
                untrusted(model.model_id),
                model.reason.value,
                untrusted(model.detail),  # may quote a catalog id
            )
    events = watch_events(
        findings.changes,
        watch_id=watch_id,
        run_id=baseline.run["run_id"] if baseline.run else None,
        source=prepared.kind.value,
    )
    if in_prefect:
        from prefect.events import emit_event

        for event in events:
            emit_event(**event)
    changes = findings.changes
    return WatchSummary(
        watch_id=watch_id,
        source=prepared.kind.value,
        base_url=base_url,
        based_on_run_id=baseline.run["run_id"] if baseline.run else None,
        compared_with=baseline.previous.snapshot_id,
        catalog_models=observation.catalog.height,
        free_models=int(row.item(0, "free_models")),
        rotation_models=len(findings.members),
        listings_read=len(observation.listings),
        chat_requests=observation.probes.height,
        lost=[(m.model_id, m.reason.value, m.detail, m.new) for m in findings.lost],
        restored=list(findings.restored),
        added=findings.ids(Change.ADDED),
        removed=[
            *findings.ids(Change.REMOVED),
            *findings.ids(Change.FREE_ENDED),
        ],
        expiring=[
            (m, str(d))
            for m, d in changes.filter(pl.col("change") == Change.EXPIRING.value)
            .select("model_id", "expiration_date")
            .iter_rows()
        ],
        repaired=bool(repair and repair.repaired),
        written=[str(p) for p in repair.written] if repair else [],
        skipped=repair.skipped if repair else None,
        database=str(settings.database),
        source_counted=observation.source_counted,
        events=events,
    )


def watch_run_name() -> str:
    """``<date>-watch-<source>``: the UTC date and the source the watch resolves to."""
    from flows.artifacts import run_name

    params = flow_run.parameters or {}
    try:
        settings = settings_for(WatchParameters(**params))
        kind = choose_kind(settings.source, key_present=settings.resolved_api_key() is not None)
        label = f"{WATCH_TAG}-{PROFILES[kind].run_label}"
    except (DiscoveryError, TypeError):
        label = f"{WATCH_TAG}-invalid-parameters"
    return run_name(datetime.now(UTC).date(), label)


@flow(
    name="discovery",
    flow_run_name=watch_run_name,
    description=(
        "Watch the rotation between monthly runs without chat quota: read the catalog and the "
        "rotation's endpoints listings, record availability, emit lost/expiring/added events, and "
        "repair docs/rotation.json and docs/litellm-router.yaml."
    ),
    log_prints=True,
    persist_result=False,
)
@flow_signature
async def watch(params: WatchParameters) -> WatchSummary | State:
    """Watch the latest rotation. Parameters override settings; the API key never is a parameter.

    A watch started from the deployment has untrusted parameters, checked as a discovery's are. A
    refusal, like every error the project raises, is one redacted line in the flow run's state."""
    install_log_redaction()
    logger = get_run_logger()
    quiet_expected_errors()
    try:
        summary = await execute_watch(
            params,
            logger=logger,
            flow_run_id=flow_run.id,
            in_prefect=bool(flow_run.id),
            deployment_run=started_from_deployment(),
        )
    except DiscoveryError as exc:
        return Failed(message=printable(str(exc)), data=exc)
    except Exception as exc:  # a defect: its message, redacted, not Prefect's own rendering of it
        line = printable(untrusted(f"internal error: {type(exc).__name__}: {exc}", 500))
        logger.error("%s", line, exc_info=exc)
        return Failed(message=line, data=exc)
    for line in summary.describe().splitlines():
        logger.info("%s", line)
    return summary


async def watch_without_prefect(params: WatchParameters) -> WatchSummary:
    """The same watch without a Prefect server (tests, the benchmark)."""
    return await execute_watch(params, logger=logging.getLogger("discovery.watch"), flow_run_id=None)

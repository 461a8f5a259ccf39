"""Step ``drill``: send a small workload through the exported rotation, per client, arm and incident.

See :mod:`freemodels.drill` for what is drilled and why. This step builds the exports exactly as the
render step writes them (``rotation.json``'s purpose and the ``litellm-router.yaml`` text, parsed
back), plans the cells within the budget, and runs them one after another: on the sandbox each cell
gets a fresh sandbox serving the run's scenario with the cell's incident laid over it; on any other
source every cell goes to the source as it is. All cells share one
:class:`~freemodels.scheduler.RateLimiter`: the run's pacing and what is left of its budget.

:func:`run_drill` returns the rows (:data:`~freemodels.records.DRILL_SCHEMA`) and one-line notes on
what could not be drilled (LiteLLM not installed, a budget too small, a source without OpenRouter's
routing). Writing and storing them is the caller's (:mod:`flows.drill`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

from freemodels import exports
from freemodels.client import build_http_client
from freemodels.drill import (
    ARM_LABELS,
    CLIENT_SHORT,
    FREE_ROUTER,
    INCIDENT_SHORT,
    STAGED_INCIDENTS,
    Cell,
    DrillArm,
    DrillClient,
    DrillOutcome,
    DrillRequest,
    Incident,
    Staging,
    drill_frame,
    plan_cells,
    requests_that_fit,
    staged_scenario,
)
from freemodels.drill_clients import (
    PacedTransport,
    Workload,
    litellm_available,
    litellm_workload,
    models_array_workload,
    router_config,
)
from freemodels.records import ROTATION_SCHEMA
from freemodels.sandbox.scenario import Scenario
from freemodels.scheduler import RateLimiter
from freemodels.settings import Settings
from freemodels.source import SourceProfile
from freemodels.suite import TaskInstance
from tasks.rank import GENERAL, purposes

LITELLM_MISSING = (
    "LiteLLM is not installed (optional dependency group `litellm`: `uv sync --group litellm`), so "
    "its router was not drilled; only OpenRouter's `models` array was."
)
NO_OPENROUTER_ROUTING = (
    "This source does not speak OpenRouter's `models` array or `openrouter/free`: only LiteLLM's "
    "router was drilled, with the rotation and with the primary alone."
)


@dataclass(frozen=True, slots=True)
class DrillTarget:
    """Where the drill's requests go: the source's profile, and how to reach it.

    ``base_url`` and ``api_key`` reach a live source; on a simulated one every cell starts its own
    sandbox from ``scenario`` and ``seed`` instead (``api_key``, if any, is the one it expects).
    """

    profile: SourceProfile
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    scenario: Scenario | None = None
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class DrillResult:
    """The drill's rows and what it could not do."""

    frame: pl.DataFrame
    notes: list[str]
    requests: int  # per cell, after fitting the budget
    cells: int


async def run_drill(
    *,
    run_id: str,
    rotation: pl.DataFrame,
    target: DrillTarget,
    settings: Settings,
    tasks: Sequence[TaskInstance],
    requests: int,
    budget: int | None,
    requests_per_minute: int,
    purpose: str = GENERAL,
    staging: Staging | None = None,
    progress: Callable[[str], None] | None = None,
) -> DrillResult:
    """Drill ``purpose``'s rotation (see the module docstring). ``progress`` receives a line (project
    text only) after each workload."""
    chain = rotation.filter(pl.col("purpose") == purpose).sort("rank").get_column("model_id").to_list()
    if not chain:
        return DrillResult(drill_frame([]), ["No rotation to drill: no model worked."], 0, 0)
    profile = target.profile
    notes: list[str] = []
    has_litellm = litellm_available()
    if not has_litellm:
        notes.append(LITELLM_MISSING)
    if not profile.openrouter_routing:
        notes.append(NO_OPENROUTER_ROUTING)
    incidents = STAGED_INCIDENTS if profile.simulated else (Incident.LIVE,)
    cells = plan_cells(incidents, litellm=has_litellm, openrouter_routing=profile.openrouter_routing)
    fitted = requests_that_fit(len(cells), requests, budget)
    if fitted < requests:
        notes.append(
            f"The budget left ({budget} requests) allowed {fitted} requests per workload instead of "
            f"{requests}."
        )
    if fitted == 0 or not cells:
        return DrillResult(drill_frame([]), notes, fitted, len(cells))
    staging = Staging(
        requests=fitted,
        minute_clears_in_s=staging.minute_clears_in_s if staging else settings.drill_minute_clears_s,
        burst=staging.burst if staging else None,
    )
    exported = _exports(rotation, run_id=run_id, target=target, settings=settings)
    limiter = RateLimiter(requests_per_minute, budget)
    rows: list[DrillRequest] = []
    for number, cell in enumerate(cells, start=1):
        workload = Workload(run_id=run_id, cell=cell, purpose=purpose, requests=fitted, tasks=tasks)
        with _reach(target, cell.incident, chain[0], staging) as (base_url, key):
            done = await _run_cell(workload, exported, chain[0], base_url, key, target, settings, limiter)
        rows += done
        if progress is not None:
            progress(workload_line(number, len(cells), cell, done))
    if limiter.day_exhausted:
        notes.append("The budget ran out during the drill: the requests it left are counted as not sent.")
    return DrillResult(drill_frame(rows), notes, fitted, len(cells))


def workload_line(number: int, total: int, cell: Cell, done: Sequence[DrillRequest]) -> str:
    """One finished workload in a line: which, how many answered right, its wall time, its attempts."""
    answered = sum(1 for r in done if r.outcome == DrillOutcome.OK.value)
    seconds = sum((r.latency_ms or 0.0) for r in done) / 1000
    attempts = sum(r.attempts for r in done)
    return (
        f"drill {number}/{total}: {INCIDENT_SHORT[cell.incident]}, {CLIENT_SHORT[cell.client]}, "
        f"{ARM_LABELS[cell.arm]}: {answered}/{len(done)} answered right in {seconds:.1f} s, "
        f"{attempts} requests"
    ).replace("`", "")


@dataclass(frozen=True, slots=True)
class _Exports:
    """The purpose as rotation.json gives it, and the LiteLLM configuration as the YAML gives it."""

    fields: dict[str, Any]  # {"model": ..., "models": [...]}
    litellm: dict[str, Any]  # {"model_list": [...], "router_settings": {...}}


def _exports(rotation: pl.DataFrame, *, run_id: str, target: DrillTarget, settings: Settings) -> _Exports:
    source = target.profile.kind.value
    document = exports.rotation_json(
        rotation.select(list(ROTATION_SCHEMA)),
        run_id=run_id,
        source=source,
        generated_at=None,
        order=purposes(),
        models_limit=settings.rotation_models_limit,
    )
    text = exports.litellm_router_yaml(
        rotation, run_id=run_id, source=source, base_url=target.base_url or None, order=purposes()
    )
    return _Exports(fields=document["purposes"][GENERAL], litellm=yaml.safe_load(text))


@contextlib.contextmanager
def _reach(
    target: DrillTarget, incident: Incident, primary: str, staging: Staging
) -> Iterator[tuple[str, str | None]]:
    """The base URL and key of one cell: a fresh staged sandbox, or the live source."""
    if not target.profile.simulated:
        yield target.base_url, target.api_key
        return
    from freemodels.sandbox.server import SandboxServer
    from freemodels.source import SANDBOX_PLACEHOLDER_KEY

    scenario = staged_scenario(target.scenario or Scenario(), incident, primary, staging)
    with SandboxServer(scenario, seed=target.seed) as server:
        yield server.base_url, target.api_key or SANDBOX_PLACEHOLDER_KEY


async def _run_cell(
    workload: Workload,
    exported: _Exports,
    primary: str,
    base_url: str,
    key: str | None,
    target: DrillTarget,
    settings: Settings,
    limiter: RateLimiter,
) -> list[DrillRequest]:
    cell: Cell = workload.cell
    profile = target.profile
    if cell.client is DrillClient.MODELS_ARRAY:
        model, models = {
            DrillArm.ROTATION: (exported.fields["model"], exported.fields["models"]),
            DrillArm.PRIMARY: (primary, None),
            DrillArm.FREE_ROUTER: (FREE_ROUTER, None),
        }[cell.arm]
        async with build_http_client(settings, base_url=base_url, api_key=key) as client:
            return await models_array_workload(
                client,
                workload,
                model=model,
                models=models,
                settings=settings,
                limiter=limiter,
                cost_guard=profile.cost_guard,
                reset_epoch_ms=profile.reset_header_epoch_ms,
            )
    if cell.arm is DrillArm.FREE_ROUTER:
        only = [{"model_name": FREE_ROUTER, "litellm_params": {"model": profile.litellm_model(FREE_ROUTER)}}]
        config = router_config(exported.litellm, api_base=base_url, api_key=key, only=only)
        name = FREE_ROUTER
    else:
        config = router_config(exported.litellm, api_base=base_url, api_key=key)
        name = GENERAL if cell.arm is DrillArm.ROTATION else primary
    extra = (
        {"provider": {"max_price": {"prompt": 0, "completion": 0, "request": 0}}}
        if profile.cost_guard
        else None
    )
    transport = PacedTransport(limiter, secret=key)
    try:
        return await litellm_workload(
            workload, config=config, model_name=name, settings=settings, transport=transport, extra_body=extra
        )
    finally:
        await transport.aclose()


drill_task = task(name="drill", cache_policy=NO_CACHE)(run_drill)

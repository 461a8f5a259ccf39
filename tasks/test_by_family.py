"""Step ``test-by-family``: send one family's probes through the shared client and limiter."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Cancelled

from freemodels.records import ProbeResult, ProbeSpec
from freemodels.scheduler import PlanOutcome, RateLimiter, run_plan
from freemodels.settings import Settings
from freemodels.suite import TaskInstance


@dataclass(frozen=True, slots=True)
class FamilyContext:
    """Shared by every family of a run: one client, one limiter, one concurrency cap."""

    client: httpx.AsyncClient
    settings: Settings
    limiter: RateLimiter
    tasks: Mapping[str, TaskInstance]
    run_id: str
    on_result: Callable[[ProbeResult], None]
    attempt_offset: Mapping[tuple[str, str, int], int]
    semaphore: asyncio.Semaphore
    cost_guard: bool
    attempts_used: Mapping[tuple[str, str, int], int] = field(default_factory=dict)
    reset_epoch_ms: bool = True


async def test_family(family: str, specs: Sequence[ProbeSpec], ctx: FamilyContext) -> PlanOutcome:
    """Probe one family's models; every attempt goes to ``ctx.on_result`` as it completes."""
    return await run_plan(
        ctx.client,
        specs,
        ctx.tasks,
        ctx.settings,
        ctx.limiter,
        run_id=ctx.run_id,
        on_result=ctx.on_result,
        semaphore=ctx.semaphore,
        attempt_offset=ctx.attempt_offset,
        attempts_used=ctx.attempts_used,
        cost_guard=ctx.cost_guard,
        reset_epoch_ms=ctx.reset_epoch_ms,
    )


@task(name="test-by-family", cache_policy=NO_CACHE)
async def test_by_family_task(
    family: str, specs: Sequence[ProbeSpec], ctx: FamilyContext
) -> PlanOutcome | State[PlanOutcome]:
    try:
        outcome = await test_family(family, specs, ctx)
    except asyncio.CancelledError:
        # The run is being interrupted: the task run ends as Cancelled (one INFO line), not as a
        # crash. The flow run's own cancellation carries on regardless.
        return Cancelled(message="interrupted")
    ok = sum(1 for r in outcome.results if r.failure is None)
    get_run_logger().info(
        "%s: %d attempts over %d probes, %d passed, %d not sent",
        family,
        len(outcome.results),
        len(specs),
        ok,
        len(outcome.unsent),
    )
    return outcome

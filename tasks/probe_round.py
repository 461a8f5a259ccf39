"""Step ``probe-round``: send one round of the adaptive plan through the shared client and limiter.

The plan (:mod:`freemodels.rounds`) decides what a round holds; the scheduler
(:func:`freemodels.scheduler.run_plan`) sends it, with the account-wide pacing and the one retry loop.
A round is one Prefect task run, named after the round (``round-1-screening``): project text only,
never catalog text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Cancelled

from freemodels.failures import FAILURE_INFO, Failure
from freemodels.records import ProbeResult, ProbeSpec
from freemodels.rounds import Round, RoundPlanner
from freemodels.scheduler import PlanOutcome, RateLimiter, run_plan
from freemodels.secrets import printable
from freemodels.settings import Settings
from freemodels.suite import TaskInstance


@dataclass(frozen=True, slots=True)
class RoundContext:
    """Shared by every round of a run: one client, one limiter, one concurrency cap.

    ``attempt_offset`` and ``attempts_used`` start from the checkpoints of an earlier process and are
    kept up to date round after round (:meth:`record`), so a probe retried in a later round numbers
    its attempts on and gets only the attempts it has left.
    """

    client: httpx.AsyncClient
    settings: Settings
    limiter: RateLimiter
    tasks: Mapping[str, TaskInstance]
    run_id: str
    on_result: Callable[[ProbeResult], None]
    attempt_offset: dict[tuple[str, str, int], int]
    semaphore: asyncio.Semaphore
    cost_guard: bool
    attempts_used: dict[tuple[str, str, int], int] = field(default_factory=dict)
    reset_epoch_ms: bool = True

    def record(self, result: ProbeResult) -> None:
        """One attempt completed: count it, then hand it on to ``on_result``."""
        key = (result.model_id, result.task, result.sample)
        self.attempt_offset[key] = max(self.attempt_offset.get(key, 0), result.attempt)
        if result.failure is not Failure.RATE_LIMIT_ACCOUNT:  # the model was never asked
            self.attempts_used[key] = self.attempts_used.get(key, 0) + 1
        self.on_result(result)


async def probe_round(plan_round: Round, ctx: RoundContext) -> PlanOutcome:
    """Send one round; every attempt goes to ``ctx.on_result`` as it completes."""
    return await run_plan(
        ctx.client,
        plan_round.specs,
        ctx.tasks,
        ctx.settings,
        ctx.limiter,
        run_id=ctx.run_id,
        on_result=ctx.record,
        semaphore=ctx.semaphore,
        attempt_offset=dict(ctx.attempt_offset),  # as the round starts: its own attempts count on
        attempts_used=dict(ctx.attempts_used),
        cost_guard=ctx.cost_guard,
        reset_epoch_ms=ctx.reset_epoch_ms,
        retry_transient=plan_round.retry_transient,
        not_before=plan_round.not_before,
    )


class SendRound(Protocol):
    def __call__(self, plan_round: Round, ctx: RoundContext) -> Awaitable[PlanOutcome]: ...


async def run_rounds(
    planner: RoundPlanner,
    ctx: RoundContext,
    *,
    send: SendRound = probe_round,
    starting: Callable[[Round], None] | None = None,
    ended: Callable[[Round, PlanOutcome], None] | None = None,
) -> int:
    """Send round after round until the plan has nothing left or the budget is spent; returns the
    number of rounds sent. ``send`` sends one round (the Prefect task in a flow); ``starting`` and
    ``ended`` are told about each round. Every attempt reaches the plan through ``ctx.on_result``.
    """
    limiter = ctx.limiter
    sent = 0
    while (plan_round := planner.next_round(limiter.remaining)) is not None:
        if starting is not None:
            starting(plan_round)
        asked_before = planner.requests
        outcome = await send(plan_round, ctx)
        sent += 1
        planner.end_round({_key(d.spec): d.not_before for d in outcome.deferred})
        if ended is not None:
            ended(plan_round, outcome)
        if outcome.quota_exhausted or limiter.day_exhausted or planner.requests == asked_before:
            break  # the budget is spent, or a round changed nothing: the next would repeat it
    return sent


def _key(spec: ProbeSpec) -> tuple[str, str, int]:
    return (spec.model_id, spec.task, spec.sample)


RULED_OUT_SHOWN = 5
"""Ruled-out models a round's log line names (the rest are counted)."""


def round_summary(plan_round: Round, outcome: PlanOutcome) -> tuple[str, tuple[object, ...]]:
    """A log line (template and arguments: no server text in the template) for a finished round.

    It names the models the round ruled out (a failure no retry can help), escaped for the console.
    """
    passed = sum(1 for r in outcome.results if r.failure is None)
    ruled_out = sorted(
        {
            f"{printable(r.model_id)} ({r.failure.value})"
            for r in outcome.results
            if r.failure is not None and FAILURE_INFO[r.failure].settles_model
        }
    )
    named = ", ".join(ruled_out[:RULED_OUT_SHOWN])
    if len(ruled_out) > RULED_OUT_SHOWN:
        named += f" and {len(ruled_out) - RULED_OUT_SHOWN} more"
    return (
        "%s: %d requests to %d models, %d passed, %d retries left for later, %d not sent; ruled out: %s",
        (
            plan_round.name,
            len(outcome.results),
            len(plan_round.models),
            passed,
            len(outcome.deferred),
            len(outcome.unsent),
            named or "none",
        ),
    )


@task(name="probe-round", cache_policy=NO_CACHE)
async def probe_round_task(plan_round: Round, ctx: RoundContext) -> PlanOutcome | State[PlanOutcome]:
    """One round as a task run (the flow logs its summary line when it ends)."""
    try:
        return await probe_round(plan_round, ctx)
    except asyncio.CancelledError:
        # The run is being interrupted: the task run ends as Cancelled (one INFO line), not as a
        # crash. The flow run's own cancellation carries on regardless.
        return Cancelled(message="interrupted")

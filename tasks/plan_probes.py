"""Step ``plan-probes``: decide which (model, task, sample) probes to send within the quota.

A run plans adaptively, in rounds decided as the answers arrive (:func:`plan_rounds`, the rules are in
:mod:`freemodels.rounds`): screening, deferred retries, deepening. It starts from the free signals (the
endpoints listings and ``models/user``: models they settle are not probed unless ``probe_all``) and
from the attempts already checkpointed (a resumed run continues the rounds).

:func:`plan_probes` is the static plan runs used before, kept as the baseline the quota benchmark
(``bench/bench_quota.py``) compares against. Rule (family-first):

1. Within each family the models are ordered newest first (catalog ``created``, then id), so a family's
   representative is its newest free model.
2. Probes are grouped into rounds: round 0 holds the full suite for the first model of every family,
   round 1 the second model of every family, and so on. Rounds are sent in order, so every family is
   covered before any family gets a second model.
3. When the budget cannot hold every probe, the plan keeps whole models (all their tasks) in round
   order until the budget is used up; a part of the budget (``retry_reserve``) is held back for
   retries. Models that do not fit are returned as ``untested`` (recorded as ``untested (quota)``,
   never as failures).
4. Probes that already have a result (a resumed run) are left out, and their budget is not needed.

Only models the catalog lists are planned; candidates the catalog does not list are handled apart.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from freemodels.listings import listed_providers, settlements
from freemodels.records import ProbeSpec
from freemodels.rounds import RoundPlanner, attempts_from_frame, plan_models
from freemodels.suite import SCREENING_TASK

ProbeKey = tuple[str, str, int]  # (model_id, task, sample)


@dataclass(frozen=True, slots=True)
class ProbePlan:
    """What to send, in order, and which models were left out for lack of quota."""

    specs: tuple[ProbeSpec, ...]
    untested: tuple[str, ...]
    already_done: int
    budget: int | None

    @property
    def models(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for spec in self.specs:
            seen.setdefault(spec.model_id)
        return tuple(seen)


def retry_reserve(budget: int, needed: int) -> int:
    """Requests held back for retries when the budget is short: 10% of it, at least 1."""
    if budget >= needed or budget <= 1:
        return 0
    return max(1, math.ceil(budget * 0.1))


def plan_probes(
    free: pl.DataFrame,
    tasks: Sequence[str],
    *,
    samples: int = 1,
    budget: int | None = None,
    done: Collection[ProbeKey] = (),
) -> ProbePlan:
    """Order the probes family-first and cut them to ``budget`` requests (None = no limit)."""
    ordered = free.sort(["family", "created", "model_id"], descending=[False, True, False], nulls_last=True)
    by_family: dict[str, list[str]] = {}
    for family, model_id in ordered.select("family", "model_id").iter_rows():
        by_family.setdefault(family, []).append(model_id)

    done_set = set(done)
    rounds = max((len(ids) for ids in by_family.values()), default=0)
    per_model: list[tuple[int, str, str, list[ProbeSpec]]] = []
    for round_no in range(rounds):
        for family in sorted(by_family):
            ids = by_family[family]
            if round_no >= len(ids):
                continue
            model_id = ids[round_no]
            specs = [
                ProbeSpec(model_id, family, task_name, sample, priority=round_no)
                for sample in range(samples)
                for task_name in tasks
                if (model_id, task_name, sample) not in done_set
            ]
            per_model.append((round_no, family, model_id, specs))

    needed = sum(len(specs) for *_, specs in per_model)
    usable = None if budget is None else budget - retry_reserve(budget, needed)
    chosen: list[ProbeSpec] = []
    untested: list[str] = []
    for _round, _family, model_id, specs in per_model:
        if not specs:
            continue
        if usable is not None and len(chosen) + len(specs) > usable:
            untested.append(model_id)
            continue
        chosen.extend(specs)
    return ProbePlan(
        specs=tuple(chosen),
        untested=tuple(untested),
        already_done=len(done_set),
        budget=budget,
    )


def plan_rounds(
    free: pl.DataFrame,
    tasks: Sequence[str],
    *,
    endpoints: pl.DataFrame,
    done: pl.DataFrame,
    samples: int = 1,
    max_attempts: int = 3,
    batch: int = 3,
    probe_all: bool = False,
    screening_task: str = SCREENING_TASK,
) -> RoundPlanner:
    """The adaptive plan of a run over the ``free`` models (see :mod:`freemodels.rounds`).

    ``endpoints`` are the run's endpoints listings (the free signals); ``done`` the attempts already
    checkpointed. ``batch`` is how many models a deepening round takes while the budget is short.
    """
    free_ids = set(free.get_column("model_id").to_list())
    settled = {} if probe_all else {m: s.failure for m, s in settlements(endpoints).items() if m in free_ids}
    return RoundPlanner(
        plan_models(free, listed_providers(endpoints)),
        tasks,
        screening_task=screening_task if screening_task in tasks else tasks[0],
        samples=samples,
        max_attempts=max_attempts,
        batch=batch,
        settled=settled,
        history=attempts_from_frame(done),
    )


plan_rounds_task = task(name="plan-probes", cache_policy=NO_CACHE)(plan_rounds)

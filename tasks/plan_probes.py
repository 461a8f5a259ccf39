"""Step ``plan-probes``: decide which (model, task, sample) probes to send within the quota.

Rule (family-first):

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

from freemodels.records import ProbeSpec

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


@task(name="plan-probes")
def plan_probes_task(
    free: pl.DataFrame,
    tasks: Sequence[str],
    samples: int = 1,
    budget: int | None = None,
    done: Collection[ProbeKey] = (),
) -> ProbePlan:
    return plan_probes(free, tasks, samples=samples, budget=budget, done=done)

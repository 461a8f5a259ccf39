"""Family-first probe planning within the quota."""

from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from tasks.plan_probes import plan_probes, retry_reserve

TASKS = ["arithmetic", "json_object", "reverse_words"]


def free_frame(models: dict[str, list[tuple[str, int]]]) -> pl.DataFrame:
    rows = [
        {"model_id": mid, "family": fam, "created": created}
        for fam, entries in models.items()
        for mid, created in entries
    ]
    return pl.DataFrame(rows, schema={"model_id": pl.String, "family": pl.String, "created": pl.Int64})


FREE = free_frame(
    {
        "meta-llama/llama-3.3": [
            ("meta-llama/llama-3.3-70b-instruct:free", 2),
            ("meta-llama/llama-3.3-8b-instruct:free", 1),
        ],
        "google/gemma-3": [
            ("google/gemma-3-27b-it:free", 5),
            ("google/gemma-3-12b-it:free", 4),
            ("google/gemma-3-4b-it:free", 3),
        ],
        "qwen/qwen3": [("qwen/qwen3-235b-a22b:free", 7)],
    }
)


def test_unlimited_budget_plans_every_probe() -> None:
    plan = plan_probes(FREE, TASKS)
    assert len(plan.specs) == 6 * 3
    assert plan.untested == ()


def test_family_first_covers_every_family_before_a_second_model() -> None:
    plan = plan_probes(FREE, TASKS)
    seen_families: list[str] = []
    firsts: dict[str, int] = {}
    for i, spec in enumerate(plan.specs):
        firsts.setdefault(spec.model_id, i)
    order = sorted(firsts, key=firsts.get)
    for model_id in order[:3]:
        fam = next(s.family for s in plan.specs if s.model_id == model_id)
        seen_families.append(fam)
    assert sorted(seen_families) == ["google/gemma-3", "meta-llama/llama-3.3", "qwen/qwen3"]
    # the representative is the newest model of its family
    assert "google/gemma-3-27b-it:free" in order[:3]
    assert "meta-llama/llama-3.3-70b-instruct:free" in order[:3]


def test_short_budget_keeps_whole_models_and_reports_untested() -> None:
    plan = plan_probes(FREE, TASKS, budget=10)
    # 10% reserve -> 9 usable -> three whole models, one per family
    assert len(plan.specs) == 9
    assert {s.family for s in plan.specs} == {"google/gemma-3", "meta-llama/llama-3.3", "qwen/qwen3"}
    assert len(plan.untested) == 3
    assert all(spec.priority == 0 for spec in plan.specs)


def test_done_probes_are_not_repeated() -> None:
    done = {("qwen/qwen3-235b-a22b:free", t, 0) for t in TASKS} | {
        ("google/gemma-3-27b-it:free", "arithmetic", 0)
    }
    plan = plan_probes(FREE, TASKS, done=done)
    keys = {(s.model_id, s.task, s.sample) for s in plan.specs}
    assert not keys & done
    assert len(plan.specs) == 18 - 4


def test_retry_reserve() -> None:
    assert retry_reserve(100, 50) == 0
    assert retry_reserve(50, 90) == 5
    assert retry_reserve(1, 90) == 0


@given(st.integers(min_value=0, max_value=40), st.integers(min_value=1, max_value=3))
def test_plan_never_exceeds_budget_and_is_family_first(budget: int, samples: int) -> None:
    plan = plan_probes(FREE, TASKS, samples=samples, budget=budget)
    assert len(plan.specs) <= budget
    rounds = [s.priority for s in plan.specs]
    assert rounds == sorted(rounds)
    planned = {s.model_id for s in plan.specs}
    assert planned.isdisjoint(plan.untested)
    assert len(planned) + len(plan.untested) == 6

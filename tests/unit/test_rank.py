"""Tiers and the rotation."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freemodels.records import (
    CATALOG_SCHEMA,
    MODEL_RESULTS_SCHEMA,
    PROBES_SCHEMA,
    ROTATION_SCHEMA,
    Verdict,
)
from tasks.rank import (
    BALANCED,
    FAST,
    GENERAL,
    JSON,
    LONG_CONTEXT,
    LONG_CONTEXT_MIN_TOKENS,
    SLOW,
    TOO_FEW_SAMPLES,
    ULTRA_FAST,
    Candidate,
    assign_tiers,
    build_rotation,
    diverse_chain,
    final_attempts,
    providers_from_probes,
    rank_task,
    tier_purpose,
)


def result(model_id: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(MODEL_RESULTS_SCHEMA)
    row.update(
        run_id="r1",
        model_id=model_id,
        family=model_id.rsplit("-", 1)[0],
        verdict=Verdict.WORKING.value,
        n=3,
        n_ok=3,
        n_passed=3,
        success_rate=1.0,
        p50_total_ms=1000.0,
        tasks_passed="arithmetic,json_object,reverse_words",
        tasks_failed="",
    )
    row.update(kw)
    return row


def results(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=MODEL_RESULTS_SCHEMA)


def catalog(*ids: str, context: dict[str, int] | None = None) -> pl.DataFrame:
    context = context or {}
    rows = [{"model_id": i, "context_length": context.get(i, 32_768), "is_free": True} for i in ids]
    return pl.DataFrame(rows, schema={k: CATALOG_SCHEMA[k] for k in rows[0]} if rows else None)


def tiers_of(frame: pl.DataFrame) -> dict[str, str | None]:
    return dict(frame.select("model_id", "tier").iter_rows())


# --- tiers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p50", "tier"),
    [
        (1.0, ULTRA_FAST),
        (1999.9, ULTRA_FAST),
        (2000.0, FAST),
        (4999.0, FAST),
        (5000.0, BALANCED),
        (14999.0, BALANCED),
        (15000.0, SLOW),
        (120000.0, SLOW),
    ],
)
def test_tier_bounds_belong_to_the_slower_tier(p50: float, tier: str) -> None:
    out = assign_tiers(results(result("m-1", p50_total_ms=p50)), min_samples=3)
    assert tiers_of(out) == {"m-1": tier}


def test_too_few_samples_and_non_working_models() -> None:
    frame = results(
        result("few-1", n_ok=2),
        result("nop50-1", p50_total_ms=None),
        result("nan-1", p50_total_ms=float("nan")),
        result("enough-1", n_ok=3, p50_total_ms=900.0),
        result("failing-1", verdict=Verdict.FAILING.value, n_ok=0, p50_total_ms=None),
        result("degraded-1", verdict=Verdict.DEGRADED.value, p50_total_ms=900.0),
        result("untested-1", verdict=Verdict.UNTESTED_QUOTA.value, n=0, n_ok=0),
    )
    out = assign_tiers(frame, min_samples=3)
    assert tiers_of(out) == {
        "few-1": TOO_FEW_SAMPLES,
        "nop50-1": TOO_FEW_SAMPLES,
        "nan-1": TOO_FEW_SAMPLES,
        "enough-1": ULTRA_FAST,
        "failing-1": None,
        "degraded-1": None,
        "untested-1": None,
    }
    assert out.schema == pl.Schema(MODEL_RESULTS_SCHEMA)
    # Lowering the requirement tiers the two-sample model.
    assert tiers_of(assign_tiers(frame, min_samples=2))["few-1"] == ULTRA_FAST


def test_min_samples_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_samples"):
        assign_tiers(results(result("m-1")), min_samples=0)


# --- rotation ----------------------------------------------------------------------------------


def chain(rotation: pl.DataFrame, purpose: str) -> list[str]:
    return rotation.filter(pl.col("purpose") == purpose).sort("rank").get_column("model_id").to_list()


def test_primary_is_the_most_reliable_then_fastest() -> None:
    frame = assign_tiers(
        results(
            result("a-1", family="a", success_rate=1.0, p50_total_ms=3000.0),
            result("b-1", family="b", success_rate=1.0, p50_total_ms=800.0),
            result("c-1", family="c", success_rate=0.67, p50_total_ms=300.0),
        ),
        min_samples=3,
    )
    rotation = build_rotation(frame, catalog("a-1", "b-1", "c-1"), run_id="r1")
    assert chain(rotation, GENERAL) == ["b-1", "a-1", "c-1"]
    assert rotation.schema == pl.Schema(ROTATION_SCHEMA)
    assert rotation.get_column("run_id").unique().to_list() == ["r1"]
    general = rotation.filter(pl.col("purpose") == GENERAL).sort("rank")
    assert general.get_column("rank").to_list() == [1, 2, 3]


def test_fallbacks_prefer_another_family_over_a_faster_sibling() -> None:
    frame = assign_tiers(
        results(
            result("llama-small", family="llama", p50_total_ms=500.0),
            result("llama-big", family="llama", p50_total_ms=600.0),
            result("gemma-1", family="gemma", p50_total_ms=4000.0),
        ),
        min_samples=3,
    )
    rotation = build_rotation(frame, catalog("llama-small", "llama-big", "gemma-1"), run_id="r")
    assert chain(rotation, GENERAL) == ["llama-small", "gemma-1", "llama-big"]


def test_fallbacks_prefer_another_provider_among_new_families() -> None:
    frame = assign_tiers(
        results(
            result("a-1", family="a", p50_total_ms=500.0),
            result("b-1", family="b", p50_total_ms=600.0),
            result("c-1", family="c", p50_total_ms=700.0),
        ),
        min_samples=3,
    )
    providers = {"a-1": "Chutes", "b-1": "Chutes", "c-1": "Together"}
    rotation = build_rotation(frame, catalog("a-1", "b-1", "c-1"), run_id="r", providers=providers)
    assert chain(rotation, GENERAL) == ["a-1", "c-1", "b-1"]
    # Without provider information only families count.
    assert chain(build_rotation(frame, catalog("a-1", "b-1", "c-1"), run_id="r"), GENERAL) == [
        "a-1",
        "b-1",
        "c-1",
    ]


def test_answers_only_in_reasoning_come_after_every_content_answer() -> None:
    frame = assign_tiers(
        results(
            result("think-1", family="think", p50_total_ms=300.0, caveat="answer_in_reasoning"),
            result("a-1", family="a", p50_total_ms=3000.0),
            result("a-2", family="a", p50_total_ms=3500.0),
        ),
        min_samples=3,
    )
    assert tiers_of(frame)["think-1"] == ULTRA_FAST  # still working and tiered on its speed
    rotation = build_rotation(frame, catalog("think-1", "a-1", "a-2"), run_id="r")
    assert chain(rotation, GENERAL) == ["a-1", "a-2", "think-1"]


def test_purposes_select_their_candidates() -> None:
    frame = assign_tiers(
        results(
            result("fast-1", family="f", p50_total_ms=900.0, tasks_passed="arithmetic"),
            result("mid-1", family="m", p50_total_ms=3000.0),
            result("slow-1", family="s", p50_total_ms=20000.0),
            result("few-1", family="x", n_ok=1, p50_total_ms=100.0),
            result("bad-1", family="b", verdict=Verdict.FAILING.value, p50_total_ms=None),
        ),
        min_samples=3,
    )
    cat = catalog("fast-1", "mid-1", "slow-1", "few-1", "bad-1", context={"slow-1": LONG_CONTEXT_MIN_TOKENS})
    rotation = build_rotation(frame, cat, run_id="r")
    # Tiered models first; the untiered one last even though it is the fastest.
    assert chain(rotation, GENERAL) == ["fast-1", "mid-1", "slow-1", "few-1"]
    assert chain(rotation, JSON) == ["mid-1", "slow-1", "few-1"]
    assert chain(rotation, LONG_CONTEXT) == ["slow-1"]
    assert chain(rotation, tier_purpose(ULTRA_FAST)) == ["fast-1"]
    assert chain(rotation, tier_purpose(FAST)) == ["mid-1"]
    assert chain(rotation, tier_purpose(SLOW)) == ["slow-1"]
    assert chain(rotation, tier_purpose(BALANCED)) == []
    assert "bad-1" not in rotation.get_column("model_id").to_list()


def test_no_working_model_gives_an_empty_rotation() -> None:
    frame = assign_tiers(results(result("bad-1", verdict=Verdict.FAILING.value)), min_samples=3)
    rotation = build_rotation(frame, catalog("bad-1"), run_id="r")
    assert rotation.is_empty()
    assert rotation.schema == pl.Schema(ROTATION_SCHEMA)


def test_chains_are_capped() -> None:
    rows = [result(f"m{i}-1", family=f"f{i}", p50_total_ms=100.0 * (i + 1)) for i in range(9)]
    frame = assign_tiers(results(*rows), min_samples=3)
    ids = [r["model_id"] for r in rows]
    assert len(chain(build_rotation(frame, catalog(*ids), run_id="r"), GENERAL)) == 5
    assert len(chain(build_rotation(frame, catalog(*ids), run_id="r", max_length=2), GENERAL)) == 2
    with pytest.raises(ValueError, match="max_length"):
        build_rotation(frame, catalog(*ids), run_id="r", max_length=0)


candidate_lists = st.lists(
    st.builds(
        Candidate,
        model_id=st.text("abcdefgh", min_size=1, max_size=4),
        family=st.sampled_from(["f1", "f2", "f3", "f4"]),
        tier=st.sampled_from([ULTRA_FAST, FAST, BALANCED, SLOW, TOO_FEW_SAMPLES]),
        success_rate=st.sampled_from([0.5, 0.67, 1.0]),
        p50_total_ms=st.one_of(st.none(), st.floats(10, 60_000)),
        provider=st.one_of(st.none(), st.sampled_from(["p1", "p2", "p3"])),
        answers_in_content=st.booleans(),
    ),
    max_size=12,
    unique_by=lambda c: c.model_id,
)


@settings(max_examples=200, deadline=None)
@given(candidate_lists, st.integers(1, 6))
def test_chain_properties(candidates: list[Candidate], max_length: int) -> None:
    picked = diverse_chain(candidates, max_length=max_length)
    assert len(picked) == min(len(candidates), max_length)
    assert len({c.model_id for c in picked}) == len(picked)
    in_content = [c for c in candidates if c.answers_in_content]
    if candidates:
        assert picked[0] == min(in_content or candidates, key=Candidate.quality_key)
    # Models answering only in the reasoning channel come after every model answering in content.
    kinds = [c.answers_in_content for c in picked]
    assert kinds == sorted(kinds, reverse=True)
    # As long as unused families remain, each next pick brings a new family (within each group).
    picked_content = [c for c in picked if c.answers_in_content]
    families = {c.family for c in in_content}
    expected_distinct = min(len(families), len(picked_content))
    assert len({c.family for c in picked_content[:expected_distinct]}) == expected_distinct
    # The same input in another order gives the same chain.
    assert diverse_chain(list(reversed(candidates)), max_length=max_length) == picked


# --- probes ------------------------------------------------------------------------------------


def probe(model_id: str, task: str, attempt: int, failure: str | None, provider: str | None):
    row: dict[str, Any] = dict.fromkeys(PROBES_SCHEMA)
    row.update(
        run_id="r",
        model_id=model_id,
        task=task,
        sample=0,
        attempt=attempt,
        failure=failure,
        passed=failure is None,
        provider=provider,
    )
    return row


def test_final_attempt_is_the_one_that_counts() -> None:
    probes = pl.DataFrame(
        [
            probe("m", "t1", 2, None, "B"),
            probe("m", "t1", 1, "provider_error", "A"),
            probe("m", "t2", 1, "timeout", None),
        ],
        schema=PROBES_SCHEMA,
    )
    finals = final_attempts(probes)
    assert finals.height == 2
    assert dict(finals.select("task", "attempt").iter_rows()) == {"t1": 2, "t2": 1}
    assert final_attempts(probes.clear()).is_empty()


def test_providers_from_probes_takes_the_most_common_successful_provider() -> None:
    probes = pl.DataFrame(
        [
            probe("m", "t1", 1, None, "Chutes"),
            probe("m", "t2", 1, None, "Together"),
            probe("m", "t3", 1, None, "Together"),
            probe("m", "t4", 1, "provider_error", "Chutes"),
            probe("n", "t1", 1, None, "B"),
            probe("n", "t2", 1, None, "A"),
            probe("o", "t1", 1, "timeout", "X"),
        ],
        schema=PROBES_SCHEMA,
    )
    assert providers_from_probes(probes) == {"m": "Together", "n": "A"}
    assert providers_from_probes(probes.clear()) == {}


def test_rank_task_tiers_and_uses_the_probes_providers() -> None:
    frame = results(
        result("a-1", family="a", p50_total_ms=500.0),
        result("b-1", family="b", p50_total_ms=600.0),
        result("c-1", family="c", p50_total_ms=700.0),
    )
    probes = pl.DataFrame(
        [probe("a-1", "t", 1, None, "P"), probe("b-1", "t", 1, None, "P"), probe("c-1", "t", 1, None, "Q")],
        schema=PROBES_SCHEMA,
    )
    # The task's function without the Prefect engine (the flow runs it as a task).
    tiered, rotation = rank_task.fn(frame, catalog("a-1", "b-1", "c-1"), "r9", 3, probes)
    assert tiers_of(tiered) == {"a-1": ULTRA_FAST, "b-1": ULTRA_FAST, "c-1": ULTRA_FAST}
    assert chain(rotation, GENERAL) == ["a-1", "c-1", "b-1"]
    assert rotation.get_column("run_id").unique().to_list() == ["r9"]


def test_passed_over_says_why_a_better_model_is_not_next() -> None:
    from tasks.rank import PassedOver, diverse_chain, passed_over

    def c(model_id: str, family: str, provider: str, p50: float) -> Candidate:
        return Candidate(
            model_id=model_id,
            family=family,
            tier=ULTRA_FAST,
            success_rate=1.0,
            p50_total_ms=p50,
            provider=provider,
        )

    pool = [
        c("a", "f", "P", 100.0),
        c("b", "f", "Q", 200.0),
        c("c", "g", "P", 300.0),
        c("d", "h", "R", 400.0),
    ]
    chain = [x.model_id for x in diverse_chain(pool)]
    assert chain == ["a", "d", "c", "b"]
    assert passed_over(chain, pool) == [
        PassedOver("b", 200.0, 1.0, rank=2, placed="d", reason="family", shared="f", shared_with="a"),
        PassedOver("c", 300.0, 1.0, rank=2, placed="d", reason="provider", shared="P", shared_with="a"),
    ]
    # A chain in plain quality order passes over nobody.
    assert passed_over(["a", "b"], pool[:2]) == []

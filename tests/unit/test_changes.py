"""compute_changes: every change kind, and the cases that must not count as a change."""

from __future__ import annotations

from datetime import date
from typing import Any

import polars as pl
import pytest

from freemodels.changes import CHANGE_KINDS, compute_changes
from freemodels.records import CATALOG_SCHEMA, CHANGES_SCHEMA, MODEL_RESULTS_SCHEMA

TODAY = date(2026, 3, 1)


def frame(schema: dict[str, pl.DataType], rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame with exactly ``schema``; keys a row leaves out are null."""
    return pl.DataFrame([{name: row.get(name) for name in schema} for row in rows], schema=schema)


def catalog_row(model_id: str, *, free: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "family": model_id.split(":")[0],
        "is_free": free,
        "is_router": False,
        "free_rule": "suffix" if free else None,
        "price_prompt": 0.0 if free else 1e-6,
        "price_completion": 0.0 if free else 2e-6,
        "supported_parameters": ["max_tokens"],
        "input_modalities": ["text"],
        **extra,
    }


def catalog(*rows: dict[str, Any]) -> pl.DataFrame:
    return frame(CATALOG_SCHEMA, list(rows))


def result_row(model_id: str, verdict: str, tier: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"run_id": "r", "model_id": model_id, "verdict": verdict, "tier": tier, "n": 3, **extra}


def results(*rows: dict[str, Any]) -> pl.DataFrame:
    return frame(MODEL_RESULTS_SCHEMA, list(rows))


def changes(
    prev_cat: pl.DataFrame,
    cur_cat: pl.DataFrame,
    prev_res: pl.DataFrame | None = None,
    cur_res: pl.DataFrame | None = None,
    **kw: Any,
) -> pl.DataFrame:
    return compute_changes(
        run_id="cur",
        prev_run_id="prev",
        prev_catalog=prev_cat,
        cur_catalog=cur_cat,
        prev_results=prev_res if prev_res is not None else results(),
        cur_results=cur_res if cur_res is not None else results(),
        today=TODAY,
        **kw,
    )


def as_set(df: pl.DataFrame) -> set[tuple[str, str, str | None]]:
    return set(df.select("change", "model_id", "detail").iter_rows())


def test_no_previous_run_gives_an_empty_frame_with_the_schema() -> None:
    out = compute_changes(
        run_id="cur",
        prev_run_id=None,
        prev_catalog=None,
        cur_catalog=catalog(catalog_row("a/x:free", expiration_date="2026-03-02")),
        prev_results=None,
        cur_results=results(result_row("a/x:free", "working", "fast")),
        today=TODAY,
    )
    assert out.is_empty()
    assert out.schema == pl.Schema(CHANGES_SCHEMA)


def test_identical_runs_have_no_changes() -> None:
    cat = catalog(catalog_row("a/x:free"), catalog_row("a/y", free=False))
    res = results(result_row("a/x:free", "working", "fast"))
    assert changes(cat, cat, res, res).is_empty()


def test_added_newly_listed_and_paid_turned_free() -> None:
    prev = catalog(catalog_row("a/x:free"), catalog_row("b/z", free=False))
    cur = catalog(
        catalog_row("a/x:free"),
        catalog_row("a/new:free"),
        catalog_row("b/z", free=True, free_rule="zero_price"),
        catalog_row("c/paid", free=False),  # new but paid: not a change
    )
    out = changes(prev, cur)
    assert as_set(out) == {
        ("added", "a/new:free", "newly listed"),
        ("added", "b/z", "now free (was paid)"),
    }
    assert out.get_column("run_id").unique().to_list() == ["cur"]
    assert out.get_column("prev_run_id").unique().to_list() == ["prev"]


def test_removed_only_counts_free_models() -> None:
    prev = catalog(catalog_row("a/x:free"), catalog_row("a/gone:free"), catalog_row("p/q", free=False))
    cur = catalog(catalog_row("a/x:free"))
    assert as_set(changes(prev, cur)) == {("removed", "a/gone:free", "no longer listed")}


def test_free_ended_listed_but_no_longer_free() -> None:
    prev = catalog(catalog_row("z/model", free=True, free_rule="zero_price"))
    cur = catalog(catalog_row("z/model", free=False))
    assert as_set(changes(prev, cur)) == {("free_ended", "z/model", "still listed, no longer free")}


def test_free_ended_when_the_free_id_is_gone_and_the_base_id_stays_paid() -> None:
    prev = catalog(catalog_row("v/m:free"), catalog_row("v/m", free=False))
    cur = catalog(catalog_row("v/m", free=False))
    assert as_set(changes(prev, cur)) == {("free_ended", "v/m:free", "only the paid v/m remains")}


def test_free_id_gone_with_a_free_base_is_a_removal_not_free_ended() -> None:
    prev = catalog(catalog_row("v/m:free"), catalog_row("v/m", free=True, free_rule="zero_price"))
    cur = catalog(catalog_row("v/m", free=True, free_rule="zero_price"))
    assert as_set(changes(prev, cur)) == {("removed", "v/m:free", "no longer listed")}


def test_newly_working_and_newly_broken() -> None:
    ids = ["a/up:free", "a/down:free", "a/deg:free", "a/same:free"]
    cat = catalog(*(catalog_row(m) for m in ids))
    prev = results(
        result_row("a/up:free", "failing"),
        result_row("a/down:free", "working", "fast"),
        result_row("a/deg:free", "degraded"),
        result_row("a/same:free", "failing"),
    )
    cur = results(
        result_row("a/up:free", "working", "fast"),
        result_row("a/down:free", "failing", root_cause="provider_error"),
        result_row("a/deg:free", "working", "slow"),
        result_row("a/same:free", "failing"),
    )
    assert as_set(changes(cat, cat, prev, cur)) == {
        ("newly_working", "a/up:free", "failing -> working"),
        ("newly_working", "a/deg:free", "degraded -> working"),
        ("newly_broken", "a/down:free", "working -> failing (provider_error)"),
    }


@pytest.mark.parametrize("untested", ["untested_quota", "not_listed"])
def test_untested_models_are_not_compared(untested: str) -> None:
    cat = catalog(catalog_row("a/x:free"), catalog_row("a/y:free"))
    prev = results(result_row("a/x:free", untested), result_row("a/y:free", "working", "fast"))
    cur = results(result_row("a/x:free", "working", "fast"), result_row("a/y:free", untested))
    assert changes(cat, cat, prev, cur).is_empty()


def test_results_of_models_that_are_no_longer_free_are_not_compared() -> None:
    prev_cat = catalog(catalog_row("z/m", free=True, free_rule="zero_price"))
    cur_cat = catalog(catalog_row("z/m", free=False))
    prev = results(result_row("z/m", "working", "fast"))
    cur = results(result_row("z/m", "failing"))
    assert {c for c, _, _ in as_set(changes(prev_cat, cur_cat, prev, cur))} == {"free_ended"}


def test_tier_changed_between_real_tiers_only() -> None:
    ids = ["a/t1:free", "a/t2:free", "a/t3:free"]
    cat = catalog(*(catalog_row(m) for m in ids))
    prev = results(
        result_row("a/t1:free", "working", "fast"),
        result_row("a/t2:free", "working", "too few samples"),
        result_row("a/t3:free", "working", "ultra-fast"),
    )
    cur = results(
        result_row("a/t1:free", "working", "balanced"),
        result_row("a/t2:free", "working", "fast"),
        result_row("a/t3:free", "working", "ultra-fast"),
    )
    assert as_set(changes(cat, cat, prev, cur)) == {("tier_changed", "a/t1:free", "fast -> balanced")}


def test_expiring_within_the_window_including_dates_already_passed() -> None:
    cat = catalog(
        catalog_row("e/soon:free", expiration_date="2026-03-31"),  # 30 days: in
        catalog_row("e/later:free", expiration_date="2026-04-01"),  # 31 days: out
        catalog_row("e/past:free", expiration_date="2026-02-01"),  # passed, still listed: in
        catalog_row("e/time:free", expiration_date="2026-03-05T00:00:00Z"),  # date-time: in
        catalog_row("e/junk:free", expiration_date="someday"),  # unreadable: ignored
        catalog_row("e/paid", free=False, expiration_date="2026-03-02"),  # not free: ignored
    )
    assert as_set(changes(cat, cat)) == {
        ("expiring", "e/soon:free", "2026-03-31"),
        ("expiring", "e/past:free", "2026-02-01"),
        ("expiring", "e/time:free", "2026-03-05"),
    }
    wider = changes(cat, cat, expiry_window_days=31)
    assert ("expiring", "e/later:free", "2026-04-01") in as_set(wider)


def test_rows_are_sorted_by_kind_then_model_and_kinds_are_known() -> None:
    prev = catalog(catalog_row("a/b:free"), catalog_row("a/a:free"), catalog_row("x/w:free"))
    cur = catalog(
        catalog_row("x/w:free", expiration_date="2026-03-02"),
        catalog_row("n/z:free"),
        catalog_row("n/y:free"),
    )
    out = changes(prev, cur)
    assert out.select("change", "model_id").rows() == [
        ("added", "n/y:free"),
        ("added", "n/z:free"),
        ("removed", "a/a:free"),
        ("removed", "a/b:free"),
        ("expiring", "x/w:free"),
    ]
    assert set(out.get_column("change")) <= set(CHANGE_KINDS)


def test_catalog_frames_from_the_database_with_a_run_id_column_work() -> None:
    prev = catalog(catalog_row("a/x:free")).with_columns(pl.lit("prev").alias("run_id"))
    cur = catalog(catalog_row("a/y:free"))
    assert {c for c, _, _ in as_set(changes(prev, cur))} == {"added", "removed"}

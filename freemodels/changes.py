"""What changed since the previous run: a pure comparison of two catalogs and two sets of results.

Only free models matter: a paid model appearing, disappearing or changing price is not a change
here. The kinds, in the order they are listed:

``added``
    free now, and was not free in the previous run (newly listed, or a paid model became free).
``removed``
    was free, and the catalog no longer lists it.
``free_ended``
    was free, and is still listed but no longer free; or its ``:free`` id is gone while the base id
    (without ``:free``) is still listed and paid.
``newly_working``
    free now; the previous run tested it and it was ``degraded`` or ``failing``; now ``working``.
``newly_broken``
    free now; it was ``working`` and is now ``degraded`` or ``failing``. Models that were not
    tested in one of the two runs (``untested_quota``, ``not_listed``, no result) are not compared.
``tier_changed``
    free now, with a speed tier in both runs that differs (detail ``"fast -> balanced"``);
    ``too few samples`` is not a tier, so going to or from it is not a tier change.
``expiring``
    free now, with an ``expiration_date`` no later than ``today + expiry_window_days`` (a date that
    has already passed while the model is still listed counts too); detail is the date.

Without a previous run there is nothing to compare with, and the result is empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

import polars as pl

from freemodels.records import CHANGES_SCHEMA, Verdict, empty_frame

CHANGE_KINDS: tuple[str, ...] = (
    "added",
    "removed",
    "free_ended",
    "newly_working",
    "newly_broken",
    "tier_changed",
    "expiring",
)
UNRANKED_TIER = "too few samples"
FREE_SUFFIX = ":free"

_NOT_WORKING = frozenset({Verdict.DEGRADED.value, Verdict.FAILING.value})


def _catalog_free(catalog: pl.DataFrame | None) -> dict[str, bool]:
    """model_id -> is_free (a null flag is not free)."""
    if catalog is None or catalog.is_empty():
        return {}
    rows = catalog.select("model_id", pl.col("is_free").fill_null(False)).iter_rows()
    return {model_id: bool(free) for model_id, free in rows}


def _results(results: pl.DataFrame | None) -> dict[str, tuple[str | None, str | None, str | None]]:
    """model_id -> (verdict, tier, root_cause)."""
    if results is None or results.is_empty():
        return {}
    rows = results.select("model_id", "verdict", "tier", "root_cause").iter_rows()
    return {model_id: (verdict, tier, cause) for model_id, verdict, tier, cause in rows}


def expiration_of(value: str | None) -> date | None:
    """The date of an ``expiration_date`` value (``2026-05-15`` or a full ISO date-time)."""
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def _is_tier(tier: str | None) -> bool:
    return tier is not None and tier != UNRANKED_TIER


def listing_of(model_id: str, listed: Mapping[str, bool]) -> str:
    """Where a free model of an earlier run stands in a catalog (``listed``: id -> is free).

    ``"free"``: listed and free; ``"no_longer_free"``: listed but not free, or its ``:free`` id is gone
    while the paid slug stays; ``"gone"``: neither the id nor its paid slug is listed.
    """
    if model_id in listed:
        return "free" if listed[model_id] else "no_longer_free"
    base = model_id.removesuffix(FREE_SUFFIX)
    if base != model_id and base in listed:
        return "no_longer_free" if not listed[base] else "gone"
    return "gone"


def compute_changes(
    *,
    run_id: str,
    prev_run_id: str | None,
    prev_catalog: pl.DataFrame | None,
    cur_catalog: pl.DataFrame,
    prev_results: pl.DataFrame | None,
    cur_results: pl.DataFrame | None,
    today: date,
    expiry_window_days: int = 30,
) -> pl.DataFrame:
    """The changes from ``prev_run_id`` to ``run_id`` (CHANGES_SCHEMA), sorted by kind then model.

    Catalogs have the CATALOG_SCHEMA columns (``model_id``, ``is_free``, ``expiration_date`` are
    used; extra columns such as ``run_id`` are fine); results have MODEL_RESULTS_SCHEMA columns
    (``model_id``, ``verdict``, ``tier``, ``root_cause``). No previous run -> an empty frame.
    """
    if prev_run_id is None or prev_catalog is None:
        return empty_frame(CHANGES_SCHEMA)

    prev_cat = _catalog_free(prev_catalog)
    cur_cat = _catalog_free(cur_catalog)
    prev_free = {m for m, free in prev_cat.items() if free}
    cur_free = {m for m, free in cur_cat.items() if free}
    rows: list[tuple[str, str, str | None]] = []  # (change, model_id, detail)

    for model_id in cur_free - prev_free:
        detail = "now free (was paid)" if model_id in prev_cat else "newly listed"
        rows.append(("added", model_id, detail))

    for model_id in prev_free - cur_free:
        where = listing_of(model_id, cur_cat)
        if where == "no_longer_free" and model_id in cur_cat:
            rows.append(("free_ended", model_id, "still listed, no longer free"))
        elif where == "no_longer_free":
            rows.append(
                ("free_ended", model_id, f"only the paid {model_id.removesuffix(FREE_SUFFIX)} remains")
            )
        else:
            rows.append(("removed", model_id, "no longer listed"))

    prev_res = _results(prev_results)
    cur_res = _results(cur_results)
    for model_id in cur_free & prev_res.keys() & cur_res.keys():
        before, prev_tier, _ = prev_res[model_id]
        after, cur_tier, cause = cur_res[model_id]
        if before in _NOT_WORKING and after == Verdict.WORKING.value:
            rows.append(("newly_working", model_id, f"{before} -> {after}"))
        elif before == Verdict.WORKING.value and after in _NOT_WORKING:
            rows.append(("newly_broken", model_id, f"{before} -> {after}" + (f" ({cause})" if cause else "")))
        if _is_tier(prev_tier) and _is_tier(cur_tier) and prev_tier != cur_tier:
            rows.append(("tier_changed", model_id, f"{prev_tier} -> {cur_tier}"))

    horizon = today + timedelta(days=expiry_window_days)
    if not cur_catalog.is_empty():
        expiring = cur_catalog.select("model_id", "expiration_date").iter_rows()
        for model_id, raw in expiring:
            when = expiration_of(raw)
            if model_id in cur_free and when is not None and when <= horizon:
                rows.append(("expiring", model_id, when.isoformat()))

    order = {kind: i for i, kind in enumerate(CHANGE_KINDS)}
    rows = sorted(set(rows), key=lambda r: (order[r[0]], r[1]))
    return pl.DataFrame(
        {
            "run_id": [run_id] * len(rows),
            "prev_run_id": [prev_run_id] * len(rows),
            "model_id": [r[1] for r in rows],
            "change": [r[0] for r in rows],
            "detail": [r[2] for r in rows],
        },
        schema=CHANGES_SCHEMA,
    )

"""Step ``filter-free``: keep the free, non-router models and group them into families."""

from __future__ import annotations

import polars as pl
from prefect import task


def free_models(catalog: pl.DataFrame, *, max_models: int | None = None) -> pl.DataFrame:
    """The free models of a parsed catalog (routers excluded), sorted by family then id.

    ``max_models`` keeps the first N after spreading over families (one model per family first), so a
    capped run still covers as many families as it can.
    """
    free = catalog.filter(pl.col("is_free") & ~pl.col("is_router")).sort(["family", "model_id"])
    if max_models is None or free.height <= max_models:
        return free
    ranked = free.with_columns(pl.col("model_id").cum_count().over("family").alias("_rank_in_family")).sort(
        ["_rank_in_family", "family", "model_id"]
    )
    return ranked.head(max_models).drop("_rank_in_family").sort(["family", "model_id"])


def families(free: pl.DataFrame) -> dict[str, list[str]]:
    """Family -> model ids (sorted), for the free models."""
    grouped: dict[str, list[str]] = {}
    for family, model_id in free.select("family", "model_id").iter_rows():
        grouped.setdefault(family, []).append(model_id)
    return {family: sorted(ids) for family, ids in sorted(grouped.items())}


@task(name="filter-free")
def filter_free_task(catalog: pl.DataFrame, max_models: int | None = None) -> pl.DataFrame:
    return free_models(catalog, max_models=max_models)

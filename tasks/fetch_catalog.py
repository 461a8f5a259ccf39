"""Step ``fetch-catalog``: GET /models (and /key for the quota), parsed into the catalog frame."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State

from freemodels.catalog import parse_catalog_with_notes
from freemodels.client import KeyInfo, fetch_catalog_bytes, fetch_key_info
from freemodels.errors import SourceError


def mark_unpriced_as_free(catalog: pl.DataFrame) -> tuple[pl.DataFrame, bool]:
    """For servers without OpenRouter's pricing (llama.cpp, vLLM, ...): every model counts as free.

    Returns the frame and whether the server lacked pricing altogether.
    """
    unpriced = catalog.height > 0 and catalog.get_column("pricing_json").is_null().all()
    if not unpriced:
        return catalog, False
    return (
        catalog.with_columns(
            pl.lit(True).alias("is_free"),
            pl.lit("no_pricing").alias("free_rule"),
            pl.lit(False).alias("is_router"),
        ),
        True,
    )


def retry_if_transient(task: object, task_run: object, state: State[object]) -> bool:
    """Prefect's retry condition: only a failure that may pass by itself (a 5xx, a timeout) is tried
    again; an unreachable host or a refused connection fails at once, with one line."""
    error = state.data
    return isinstance(error, SourceError) and error.transient


@task(
    name="fetch-catalog",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
async def fetch_catalog_task(
    client: httpx.AsyncClient, origin: str, timeout_s: float | None = None
) -> tuple[pl.DataFrame, datetime, list[str]]:
    """The catalog, when it was fetched, and notes on entries skipped or dropped (for the run's notes)."""
    raw = await fetch_catalog_bytes(client, timeout_s=timeout_s)
    catalog, notes = parse_catalog_with_notes(raw, origin=origin)
    return catalog, datetime.now(UTC), notes


@task(name="read-quota", cache_policy=NO_CACHE)
async def fetch_quota_task(client: httpx.AsyncClient) -> KeyInfo | None:
    return await fetch_key_info(client)

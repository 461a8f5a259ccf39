"""Step ``read-free-signals``: each free model's endpoints listing and the key's ``models/user``.

No chat quota is spent (see :mod:`freemodels.listings`). The result is the run's ``endpoints`` table;
the plan settles models from it without a chat request, and the reports set what the source reports
beside what was measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from freemodels.listings import (
    Listing,
    endpoints_frame,
    fetch_listings,
    fetch_user_models,
    routable_ids,
)
from freemodels.records import ENDPOINTS_SCHEMA
from freemodels.settings import Settings


async def read_free_signals(
    client: httpx.AsyncClient,
    free: pl.DataFrame,
    catalog_ids: Sequence[str],
    *,
    run_id: str,
    settings: Settings,
    lists_endpoints: bool,
    reads_user_models: bool,
) -> pl.DataFrame:
    """The ``endpoints`` rows of the run (empty when the source offers neither read)."""
    model_ids = free.get_column("model_id").to_list()
    fetched_at = datetime.now(UTC)
    listings: list[Listing] = []
    if lists_endpoints and model_ids:
        listings = await fetch_listings(
            client,
            model_ids,
            requests_per_minute=settings.listing_requests_per_minute,
            concurrency=settings.listing_concurrency,
            timeout_s=settings.catalog_timeout_s,
        )
    routable = None
    if reads_user_models:
        routable = routable_ids(
            await fetch_user_models(client, timeout_s=settings.catalog_timeout_s), catalog_ids
        )
    if not listings and routable is None:
        return pl.DataFrame(schema=ENDPOINTS_SCHEMA)
    return endpoints_frame(run_id, listings, routable=routable, fetched_at=fetched_at, model_ids=model_ids)


read_free_signals_task = task(name="read-free-signals", cache_policy=NO_CACHE)(read_free_signals)

"""Free signals: what a source says about its models without spending any chat quota.

Two reads, before the first chat request:

- ``GET models/{author}/{slug}/endpoints`` per free model: the providers that serve it, each with
  its status, uptime over 5 minutes, 30 minutes and a day, and latency (time to first token, in
  seconds) and throughput (tokens per second) percentiles over the last 30 minutes. A listing with
  no endpoint settles the model as *no endpoints* without a chat request.
- ``GET models/user`` (bearer key): the models the key may route under the account's privacy
  settings, provider preferences and guardrails. A free model the catalog lists but this leaves out
  is settled as excluded by the account's settings (:attr:`~freemodels.failures.Failure.PRIVACY_EXCLUDED`;
  which setting excludes it cannot be told without a chat request: ``--probe-all`` sends one).

Neither counts toward the free daily quota, but both are paced politely: listings go through a
:class:`~freemodels.scheduler.RateLimiter` of their own (``listing_requests_per_minute``) with a few
in flight (``listing_concurrency``). Any failure is quiet: a model whose listing cannot be read is
simply screened with a chat request. A source without these endpoints (an OpenAI-compatible server:
its :class:`~freemodels.source.SourceProfile` says so) is not asked; a 404 is recorded as
``not_found`` and nothing else.

Everything here is server text: names, tags and quantizations are redacted and cut before they are
kept; numbers are taken only when finite. The rows (:data:`~freemodels.records.ENDPOINTS_SCHEMA`)
are stored per run in the ``endpoints`` table; latencies there are milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import httpx
import polars as pl

from freemodels.client import DEFAULT_CATALOG_MAX_BYTES, sent_secret
from freemodels.failures import Failure
from freemodels.records import ENDPOINTS_SCHEMA
from freemodels.scheduler import RateLimiter
from freemodels.secrets import redact

LISTING_MAX_BYTES = 2_000_000
"""Cap on one endpoints listing (a recorded one is about 3 KB)."""
TEXT_CHARS = 200
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*/[A-Za-z0-9][A-Za-z0-9._~:-]*")
_PERCENTILES = ("p50", "p75", "p90", "p99")


class ListingStatus(StrEnum):
    """What ``GET models/{id}/endpoints`` gave."""

    ENDPOINTS = "endpoints"  # at least one endpoint
    EMPTY = "empty"  # a listing without any endpoint: no provider serves the model
    NOT_FOUND = "not_found"  # 404: the server does not know the model under this id
    UNREADABLE = "unreadable"  # another status, no answer, or a body of another shape


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One provider endpoint of a model, as the source reports it."""

    provider: str | None
    name: str | None = None
    tag: str | None = None
    status: int | None = None
    uptime_5m: float | None = None
    uptime_30m: float | None = None
    uptime_1d: float | None = None
    latency_ms: Mapping[str, float] | None = None  # p50..p99, milliseconds
    throughput: Mapping[str, float] | None = None  # p50..p99, tokens per second
    context_length: int | None = None
    max_completion_tokens: int | None = None
    quantization: str | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """One model's endpoints listing."""

    model_id: str
    status: ListingStatus
    endpoints: tuple[Endpoint, ...] = ()
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """A model settled without a chat request: its class and the evidence (project text)."""

    failure: Failure
    evidence: str


NO_ENDPOINTS_EVIDENCE = "GET /models/{id}/endpoints lists no endpoint (no chat request sent)"
NOT_ROUTABLE_EVIDENCE = (
    "not in GET /models/user, the models this key may route under the account's privacy settings, "
    "provider preferences and guardrails (no chat request sent)"
)


# --- parsing (pure) ------------------------------------------------------------------------------


def _text(value: object, secret: str | None = None) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return redact(value[:2000], secret)[:TEXT_CHARS] or None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _integer(value: object) -> int | None:
    number = _number(value)
    if number is None or abs(number) >= 2**62:
        return None
    return int(number)


def _percentiles(value: object, scale: float) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    found = {}
    for name in _PERCENTILES:
        number = _number(value.get(name))
        if number is not None and number >= 0:
            found[name] = number * scale
    return found or None


def parse_endpoint(raw: object, secret: str | None = None) -> Endpoint | None:
    """One endpoint object of a listing (None when it is not an object)."""
    if not isinstance(raw, dict):
        return None
    return Endpoint(
        provider=_text(raw.get("provider_name"), secret),
        name=_text(raw.get("name"), secret),
        tag=_text(raw.get("tag"), secret),
        status=_integer(raw.get("status")),
        uptime_5m=_number(raw.get("uptime_last_5m")),
        uptime_30m=_number(raw.get("uptime_last_30m")),
        uptime_1d=_number(raw.get("uptime_last_1d")),
        latency_ms=_percentiles(raw.get("latency_last_30m"), 1000.0),  # reported in seconds
        throughput=_percentiles(raw.get("throughput_last_30m"), 1.0),
        context_length=_integer(raw.get("context_length")),
        max_completion_tokens=_integer(raw.get("max_completion_tokens")),
        quantization=_text(raw.get("quantization"), secret),
    )


def parse_listing(model_id: str, body: bytes | str, secret: str | None = None) -> Listing:
    """A ``200`` listing body: ``{"data": {..., "endpoints": [...]}}``; anything else is unreadable."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return Listing(model_id, ListingStatus.UNREADABLE, http_status=200)
    data = document.get("data") if isinstance(document, dict) else None
    raw = data.get("endpoints") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return Listing(model_id, ListingStatus.UNREADABLE, http_status=200)
    endpoints = tuple(e for item in raw if (e := parse_endpoint(item, secret)) is not None)
    status = ListingStatus.ENDPOINTS if endpoints else ListingStatus.EMPTY
    if raw and not endpoints:  # a list of something else than endpoint objects
        status = ListingStatus.UNREADABLE
    return Listing(model_id, status, endpoints, http_status=200)


def parse_user_models(body: bytes | str) -> frozenset[str] | None:
    """The model ids of a ``GET models/user`` body (``{"data": [{"id": ...}, ...]}``), or None."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    data = document.get("data") if isinstance(document, dict) else document
    if not isinstance(data, list):
        return None
    return frozenset(
        item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)
    )


def listing_path(model_id: str) -> str | None:
    """``models/{author}/{slug}/endpoints`` for a model id of that form, else None (never asked)."""
    if not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        return None
    author, slug = model_id.split("/")
    return f"models/{quote(author, safe='')}/{quote(slug, safe=':')}/endpoints"


# --- reading (network) ---------------------------------------------------------------------------


async def _read(response: httpx.Response, max_bytes: int) -> bytes | None:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            return None
    return bytes(body)


async def fetch_listing(
    client: httpx.AsyncClient, model_id: str, *, timeout_s: float = 30.0, max_bytes: int = LISTING_MAX_BYTES
) -> Listing:
    """One model's listing; never raises for anything the server does."""
    path = listing_path(model_id)
    if path is None:
        return Listing(model_id, ListingStatus.UNREADABLE)
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("GET", path, headers={"Accept": "application/json"}) as response:
                if response.status_code == 404:
                    return Listing(model_id, ListingStatus.NOT_FOUND, http_status=404)
                if response.status_code != 200:
                    return Listing(model_id, ListingStatus.UNREADABLE, http_status=response.status_code)
                body = await _read(response, max_bytes)
    except (httpx.HTTPError, TimeoutError):
        return Listing(model_id, ListingStatus.UNREADABLE)
    if body is None:
        return Listing(model_id, ListingStatus.UNREADABLE, http_status=200)
    return parse_listing(model_id, body, sent_secret(client))


async def fetch_listings(
    client: httpx.AsyncClient,
    model_ids: Sequence[str],
    *,
    requests_per_minute: int,
    concurrency: int,
    timeout_s: float = 30.0,
    limiter: RateLimiter | None = None,
) -> list[Listing]:
    """The listings of ``model_ids`` (in that order), paced by a limiter of their own."""
    pacing = limiter if limiter is not None else RateLimiter(requests_per_minute, None, margin_s=0.0)
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(model_id: str) -> Listing:
        async with slots:
            await pacing.acquire()
            return await fetch_listing(client, model_id, timeout_s=timeout_s)

    return list(await asyncio.gather(*(one(m) for m in model_ids)))


async def fetch_user_models(
    client: httpx.AsyncClient, *, timeout_s: float = 30.0, max_bytes: int = DEFAULT_CATALOG_MAX_BYTES
) -> frozenset[str] | None:
    """The ids ``GET models/user`` lists for the client's key, or None (no answer, not 200, or
    another shape)."""
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("GET", "models/user", headers={"Accept": "application/json"}) as resp:
                if resp.status_code != 200:
                    return None
                body = await _read(resp, max_bytes)
    except (httpx.HTTPError, TimeoutError):
        return None
    return parse_user_models(body) if body is not None else None


# --- the endpoints table (pure) ------------------------------------------------------------------


def routable_ids(user_models: frozenset[str] | None, catalog_ids: Iterable[str]) -> frozenset[str] | None:
    """``user_models`` when it can be trusted: it must name at least one model of the catalog (a list
    of other ids would be another naming, not a verdict on every model), else None."""
    if user_models is None:
        return None
    return user_models if user_models & set(catalog_ids) else None


def endpoints_frame(
    run_id: str,
    listings: Sequence[Listing],
    *,
    routable: frozenset[str] | None,
    fetched_at: datetime,
    model_ids: Sequence[str] = (),
) -> pl.DataFrame:
    """Rows of :data:`~freemodels.records.ENDPOINTS_SCHEMA`: one per endpoint, and one with no
    provider for a model whose listing has no endpoint (or could not be read). ``model_ids`` adds a
    row for models without a listing when only ``routable`` is known."""
    rows: list[dict[str, Any]] = []
    listed = {listing.model_id for listing in listings}
    for listing in listings:
        base = {
            "run_id": run_id,
            "model_id": listing.model_id,
            "listing": listing.status.value,
            "routable": None if routable is None else listing.model_id in routable,
            "fetched_at": fetched_at,
        }
        if not listing.endpoints:
            rows.append(base)
        for e in listing.endpoints:
            lat = e.latency_ms or {}
            thr = e.throughput or {}
            rows.append(
                base
                | {
                    "provider": e.provider,
                    "endpoint": e.name,
                    "tag": e.tag,
                    "status": e.status,
                    "uptime_5m": e.uptime_5m,
                    "uptime_30m": e.uptime_30m,
                    "uptime_1d": e.uptime_1d,
                    **{f"latency_{p}_ms": lat.get(p) for p in _PERCENTILES},
                    **{f"throughput_{p}": thr.get(p) for p in _PERCENTILES},
                    "context_length": e.context_length,
                    "max_completion_tokens": e.max_completion_tokens,
                    "quantization": e.quantization,
                }
            )
    if routable is not None:
        for model_id in model_ids:
            if model_id not in listed:
                rows.append(
                    {
                        "run_id": run_id,
                        "model_id": model_id,
                        "listing": None,
                        "routable": model_id in routable,
                        "fetched_at": fetched_at,
                    }
                )
    if not rows:
        return pl.DataFrame(schema=ENDPOINTS_SCHEMA)
    return pl.DataFrame([{c: r.get(c) for c in ENDPOINTS_SCHEMA} for r in rows], schema=ENDPOINTS_SCHEMA)


def settlements(endpoints: pl.DataFrame) -> dict[str, Settlement]:
    """Models the free signals settle: an empty listing (no endpoints), else not routable for the key."""
    if endpoints.is_empty():
        return {}
    found: dict[str, Settlement] = {}
    per_model = endpoints.group_by("model_id", maintain_order=True).agg(
        pl.col("listing").first(), pl.col("routable").first()
    )
    for model_id, listing, routable in per_model.iter_rows():
        if listing == ListingStatus.EMPTY.value:
            found[model_id] = Settlement(Failure.NO_ENDPOINTS, NO_ENDPOINTS_EVIDENCE)
        elif routable is False:
            found[model_id] = Settlement(Failure.PRIVACY_EXCLUDED, NOT_ROUTABLE_EVIDENCE)
    return found


def listed_providers(endpoints: pl.DataFrame) -> dict[str, str]:
    """Model id -> the first provider its listing names (for spreading the plan over providers)."""
    named = endpoints.filter(pl.col("provider").is_not_null())
    if named.is_empty():
        return {}
    first = named.group_by("model_id", maintain_order=True).agg(pl.col("provider").first())
    return dict(first.iter_rows())


@dataclass(frozen=True, slots=True)
class Reported:
    """What the source reports of a model across its endpoints (medians; None when unknown)."""

    latency_p50_ms: float | None
    uptime_30m: float | None
    uptime_1d: float | None
    throughput_p50: float | None
    providers: tuple[str, ...]


def reported(endpoints: pl.DataFrame) -> dict[str, Reported]:
    """Per model: the median over its endpoints of the reported p50 latency, uptimes and throughput."""
    if endpoints.is_empty():
        return {}
    found: dict[str, Reported] = {}
    rows = endpoints.filter(pl.col("provider").is_not_null() | pl.col("latency_p50_ms").is_not_null())
    for model_id, group in rows.group_by("model_id", maintain_order=True):
        key = str(model_id[0])
        found[key] = Reported(
            latency_p50_ms=_median(group.get_column("latency_p50_ms")),
            uptime_30m=_median(group.get_column("uptime_30m")),
            uptime_1d=_median(group.get_column("uptime_1d")),
            throughput_p50=_median(group.get_column("throughput_p50")),
            providers=tuple(p for p in group.get_column("provider").to_list() if p),
        )
    return found


def _median(column: pl.Series) -> float | None:
    values = column.drop_nulls()
    if values.is_empty():
        return None
    value = values.median()
    return float(value) if isinstance(value, int | float) else None


LATENCY_FACTOR = 2.0
"""Measured and reported time to first token disagree when one is more than this many times the other
(and they are ``LATENCY_MIN_GAP_MS`` apart)."""
LATENCY_MIN_GAP_MS = 500.0
UPTIME_UP = 90.0
"""Reported uptime (percent) from which the source calls a model up."""
UPTIME_DOWN = 50.0
"""Reported uptime below which the source calls a model down."""


def disagreements(
    rep: Reported,
    *,
    measured_ttft_ms: float | None,
    success_rate: float | None,
    transient_cause: str | None,
) -> list[str]:
    """Where what the source reports and what was measured disagree, as short phrases (project text).

    Latency: the measured P50 TTFT is more than :data:`LATENCY_FACTOR` times the reported P50 (or
    less than its inverse) and at least :data:`LATENCY_MIN_GAP_MS` away. Uptime (30 minutes, else a
    day): reported up (from :data:`UPTIME_UP`) while every probe failed for a transient cause
    (``transient_cause``, a failure title), or reported down (below :data:`UPTIME_DOWN`) while most
    probes passed. The source leaves rate-limited requests out of its uptime, so an upstream 429 shows
    as a disagreement on purpose: the figure does not count what stops a free user.
    """
    found: list[str] = []
    reported_ms = rep.latency_p50_ms
    if measured_ttft_ms is not None and reported_ms is not None and reported_ms > 0 and measured_ttft_ms > 0:
        ratio = measured_ttft_ms / reported_ms
        gap = abs(measured_ttft_ms - reported_ms)
        if gap >= LATENCY_MIN_GAP_MS and ratio > LATENCY_FACTOR:
            found.append(f"TTFT {ratio:.1f}× the reported")
        elif gap >= LATENCY_MIN_GAP_MS and ratio < 1 / LATENCY_FACTOR:
            found.append(f"TTFT {1 / ratio:.1f}× faster than reported")
    uptime = rep.uptime_30m if rep.uptime_30m is not None else rep.uptime_1d
    if uptime is not None and success_rate is not None:
        if uptime >= UPTIME_UP and success_rate == 0 and transient_cause:
            cause = transient_cause.lower()
            found.append(f"reported up ({round(uptime, 1):g} %), every probe failed: {cause}")
        elif uptime < UPTIME_DOWN and success_rate >= 0.5:
            found.append(f"reported down ({round(uptime, 1):g} %), answered here")
    return found

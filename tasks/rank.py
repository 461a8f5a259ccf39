"""Step ``rank``: speed tiers for the working models and a rotation (primary plus fallbacks) per purpose.

Tiers
-----
Only models whose verdict is ``working`` get a tier; every other model keeps ``tier = None``. A working
model is tiered on its measured P50 *total* latency (request sent to last content token):

=================  =====================
tier               P50 total latency
=================  =====================
``ultra-fast``     below 2 s
``fast``           2 s up to 5 s
``balanced``       5 s up to 15 s
``slow``           15 s and more
=================  =====================

Each bound belongs to the slower tier (exactly 2 s is ``fast``). A working model with fewer latency
samples than ``min_samples`` (``n_ok``: probes that got an answer, so a measured total time) or without a
P50 is shown as ``too few samples`` instead of being tiered on noise.

Rotation
--------
For each purpose the rotation is an ordered chain: rank 1 is the primary, ranks 2.. the fallbacks in the
order a client should try them. Purposes:

- ``general``: every working model;
- ``json``: working models that passed the suite's JSON task (``json_object``);
- ``long-context``: working models whose catalog context length is at least 128,000 tokens;
- ``tier:<name>``: the working models of one tier (only tiers that have members).

Candidates are first put in *quality order*: tiered models before ``too few samples`` ones, then higher
success rate, then lower P50 total latency, then model id (so the order is total and deterministic). The
chain is then picked greedily from that list; each next position takes the first remaining candidate
that, in order of preference,

1. comes from a family *and* a provider not yet in the chain,
2. comes from a family not yet in the chain,
3. comes from a provider not yet in the chain,
4. is simply the best remaining one,

so that one family's or one provider's outage does not take out the whole chain. The primary is always
the best candidate in quality order. A model whose provider is unknown never counts as a repeated
provider. Chains hold at most ``max_length`` models (default 5).

A working model whose answers came only in the reasoning channel (caveat ``answer_in_reasoning``:
``content`` empty, the answer in ``reasoning``) is a candidate too, but every chain places it after all
the models that answer in ``content``: a client that reads only ``content`` gets nothing from it, so it
is a last resort, never the primary while another model works.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import polars as pl
from prefect import task

from freemodels.records import ANSWER_IN_REASONING, MODEL_RESULTS_SCHEMA, ROTATION_SCHEMA, Verdict
from tasks.analyze_failures import final_attempts  # re-exported: rank and render count the same attempts

ULTRA_FAST = "ultra-fast"
FAST = "fast"
BALANCED = "balanced"
SLOW = "slow"
TOO_FEW_SAMPLES = "too few samples"

TIERS: tuple[str, ...] = (ULTRA_FAST, FAST, BALANCED, SLOW)
"""The speed tiers, fastest first."""

TIER_UPPER_BOUNDS_MS: tuple[tuple[str, float], ...] = (
    (ULTRA_FAST, 2_000.0),
    (FAST, 5_000.0),
    (BALANCED, 15_000.0),
)
"""Exclusive upper bound of each tier's P50 total latency; anything slower is ``slow``."""

GENERAL = "general"
JSON = "json"
LONG_CONTEXT = "long-context"
TIER_PURPOSE_PREFIX = "tier:"

JSON_TASK = "json_object"
LONG_CONTEXT_MIN_TOKENS = 128_000
DEFAULT_CHAIN_LENGTH = 5


def tier_purpose(tier: str) -> str:
    """The rotation purpose of one tier, e.g. ``tier:fast``."""
    return f"{TIER_PURPOSE_PREFIX}{tier}"


def purposes() -> tuple[str, ...]:
    """Every rotation purpose, in the order reports show them."""
    return (GENERAL, JSON, LONG_CONTEXT, *(tier_purpose(t) for t in TIERS))


def tier_for_latency(p50_total_ms: float) -> str:
    """The speed tier of a P50 total latency in milliseconds."""
    for name, upper in TIER_UPPER_BOUNDS_MS:
        if p50_total_ms < upper:
            return name
    return SLOW


def assign_tiers(model_results: pl.DataFrame, *, min_samples: int) -> pl.DataFrame:
    """``model_results`` with ``tier`` filled (see the module docstring for the rule).

    Raises ``ValueError`` if ``min_samples`` is below 1.
    """
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, not {min_samples}")
    p50 = pl.col("p50_total_ms")
    enough = (pl.col("n_ok").fill_null(0) >= min_samples) & p50.is_not_null() & p50.is_not_nan()
    chain = (
        pl.when(pl.col("verdict") != Verdict.WORKING.value)
        .then(pl.lit(None, pl.String()))
        .when(~enough)
        .then(pl.lit(TOO_FEW_SAMPLES))
    )
    for name, upper in TIER_UPPER_BOUNDS_MS:
        chain = chain.when(p50 < upper).then(pl.lit(name))
    tier = chain.otherwise(pl.lit(SLOW))
    return model_results.with_columns(tier.alias("tier")).select(list(MODEL_RESULTS_SCHEMA))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A working model as the rotation sees it."""

    model_id: str
    family: str
    tier: str
    success_rate: float
    p50_total_ms: float | None
    provider: str | None = None
    context_length: int | None = None
    json_capable: bool = False
    answers_in_content: bool = True  # False: caveat answer_in_reasoning

    @property
    def tiered(self) -> bool:
        return self.tier in TIERS

    def quality_key(self) -> tuple[bool, float, float, str]:
        """Sort key: tiered first, then higher success, then lower P50, then id."""
        p50 = self.p50_total_ms if self.p50_total_ms is not None else math.inf
        return (not self.tiered, -self.success_rate, p50, self.model_id)


def _next_pick(remaining: Sequence[Candidate], families: set[str], providers: set[str]) -> Candidate:
    """The first of ``remaining`` by the preference order of the module docstring."""

    def new_family(c: Candidate) -> bool:
        return c.family not in families

    def new_provider(c: Candidate) -> bool:
        return c.provider is None or c.provider not in providers

    def new_both(c: Candidate) -> bool:
        return new_family(c) and new_provider(c)

    for prefer in (new_both, new_family, new_provider):
        for c in remaining:
            if prefer(c):
                return c
    return remaining[0]


def diverse_chain(
    candidates: Iterable[Candidate], *, max_length: int = DEFAULT_CHAIN_LENGTH
) -> list[Candidate]:
    """Pick an ordered chain from ``candidates`` preferring new families, then new providers.

    Models that answer in ``content`` come first; those answering only in the reasoning channel
    follow them (see the module docstring).
    """
    ordered = sorted(candidates, key=Candidate.quality_key)
    chain: list[Candidate] = []
    families: set[str] = set()
    providers: set[str] = set()
    for group in (
        [c for c in ordered if c.answers_in_content],
        [c for c in ordered if not c.answers_in_content],
    ):
        remaining = group
        while remaining and len(chain) < max_length:
            pick = _next_pick(remaining, families, providers)
            remaining.remove(pick)
            chain.append(pick)
            families.add(pick.family)
            if pick.provider is not None:
                providers.add(pick.provider)
    return chain


def candidates_from(
    model_results: pl.DataFrame,
    catalog: pl.DataFrame,
    providers: Mapping[str, str] | None = None,
) -> list[Candidate]:
    """The working models of ``model_results`` (tiers already assigned) as rotation candidates."""
    context = dict(catalog.select("model_id", "context_length").unique("model_id", keep="first").iter_rows())
    working = model_results.filter(pl.col("verdict") == Verdict.WORKING.value)
    found: list[Candidate] = []
    for row in working.iter_rows(named=True):
        passed = {t.strip() for t in (row["tasks_passed"] or "").split(",") if t.strip()}
        found.append(
            Candidate(
                model_id=row["model_id"],
                family=row["family"] or row["model_id"],
                tier=row["tier"] or TOO_FEW_SAMPLES,
                success_rate=float(row["success_rate"] or 0.0),
                p50_total_ms=row["p50_total_ms"],
                provider=(providers or {}).get(row["model_id"]),
                context_length=context.get(row["model_id"]),
                json_capable=JSON_TASK in passed,
                answers_in_content=row.get("caveat") != ANSWER_IN_REASONING,
            )
        )
    return found


def purpose_pools(pool: Sequence[Candidate]) -> list[tuple[str, list[Candidate]]]:
    """Each purpose with the candidates its chain is picked from (see the module docstring)."""
    return [
        (GENERAL, list(pool)),
        (JSON, [c for c in pool if c.json_capable]),
        (LONG_CONTEXT, [c for c in pool if (c.context_length or 0) >= LONG_CONTEXT_MIN_TOKENS]),
        *((tier_purpose(t), [c for c in pool if c.tier == t]) for t in TIERS),
    ]


@dataclass(frozen=True, slots=True)
class PassedOver:
    """A candidate ranked ahead of the model a chain placed at ``rank``, passed over for diversity."""

    model_id: str  # the candidate passed over
    p50_total_ms: float | None
    success_rate: float
    rank: int  # the position it was passed over at
    placed: str  # the model placed there instead
    reason: str  # "family" | "provider"
    shared: str  # the family or provider already in the chain
    shared_with: str  # the chain model that has it


def passed_over(chain: Sequence[str], pool: Sequence[Candidate]) -> list[PassedOver]:
    """Why each candidate ranked ahead of a chain's pick (quality order, see the module docstring)
    was not picked there: its family, else its provider, was already in the chain. Each candidate is
    reported once, at the first position it was passed over at; the primary passes over nobody."""
    by_id = {c.model_id: c for c in pool}
    order = sorted(pool, key=lambda c: (not c.answers_in_content, c.quality_key()))
    reported: set[str] = set()
    found: list[PassedOver] = []
    for rank, model_id in enumerate(chain, start=1):
        if rank == 1 or model_id not in by_id:
            continue
        before = [by_id[m] for m in chain[: rank - 1] if m in by_id]
        families = {c.family: c.model_id for c in reversed(before)}
        providers = {c.provider: c.model_id for c in reversed(before) if c.provider}
        for candidate in order:
            if candidate.model_id == model_id:
                break
            if candidate.model_id in chain[: rank - 1] or candidate.model_id in reported:
                continue
            if candidate.family in families:
                reason, shared, shared_with = "family", candidate.family, families[candidate.family]
            elif candidate.provider in providers:
                assert candidate.provider is not None
                reason, shared, shared_with = "provider", candidate.provider, providers[candidate.provider]
            else:
                continue
            reported.add(candidate.model_id)
            found.append(
                PassedOver(
                    model_id=candidate.model_id,
                    p50_total_ms=candidate.p50_total_ms,
                    success_rate=candidate.success_rate,
                    rank=rank,
                    placed=model_id,
                    reason=reason,
                    shared=shared,
                    shared_with=shared_with,
                )
            )
    return found


def build_rotation(
    model_results: pl.DataFrame,
    catalog: pl.DataFrame,
    *,
    run_id: str,
    providers: Mapping[str, str] | None = None,
    max_length: int = DEFAULT_CHAIN_LENGTH,
) -> pl.DataFrame:
    """The rotation (:data:`~freemodels.records.ROTATION_SCHEMA`) of one run.

    ``model_results`` must already carry tiers (:func:`assign_tiers`). ``providers`` maps model ids to
    the provider that served them (see :func:`providers_from_probes`); without it only family diversity
    applies. Purposes without a candidate have no rows.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, not {max_length}")
    pool = candidates_from(model_results, catalog, providers)
    rows: list[dict[str, object]] = []
    for purpose, members in purpose_pools(pool):
        for rank, c in enumerate(diverse_chain(members, max_length=max_length), start=1):
            rows.append(
                {
                    "run_id": run_id,
                    "purpose": purpose,
                    "rank": rank,
                    "model_id": c.model_id,
                    "family": c.family,
                    "tier": c.tier,
                    "p50_total_ms": c.p50_total_ms,
                    "success_rate": c.success_rate,
                }
            )
    return pl.DataFrame(rows, schema=ROTATION_SCHEMA)


def providers_from_probes(probes: pl.DataFrame) -> dict[str, str]:
    """Model id -> the provider that answered most of its successful final attempts (ties: by name)."""
    ok = final_attempts(probes).filter(pl.col("failure").is_null() & pl.col("provider").is_not_null())
    if ok.is_empty():
        return {}
    counted = (
        ok.group_by("model_id", "provider")
        .len()
        .sort(["model_id", "len", "provider"], descending=[False, True, False])
        .group_by("model_id", maintain_order=True)
        .first()
    )
    return dict(counted.select("model_id", "provider").iter_rows())


@task(name="rank")
def rank_task(
    model_results: pl.DataFrame,
    catalog: pl.DataFrame,
    run_id: str,
    min_samples: int,
    probes: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tiers and rotation of one run: ``(model_results with tiers, rotation)``."""
    tiered = assign_tiers(model_results, min_samples=min_samples)
    providers = providers_from_probes(probes) if probes is not None else None
    return tiered, build_rotation(tiered, catalog, run_id=run_id, providers=providers)

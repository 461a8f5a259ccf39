"""Deterministic behaviour profiles: how each sandbox model answers, derived from a seed.

Default profiles (no scenario), for a given seed:

- Timing is drawn per model from ``Random(f"{seed}:{model_id}")``, so adding or removing a model does not
  change the others. Latencies are scaled down from real free-tier latencies so that a default discovery
  run (every free model x 3 tasks, 8 probes in flight) takes about 20-25 s, while still spreading over
  the report's speed tiers: about half the working models finish in 0.25-1.8 s, 40 % in 2.1-3.6 s and
  the rest in 5.1-5.8 s; TTFT lies in 150-2500 ms. Reasoning models think for 40-80 % of their TTFT
  (``reasoning_ms``).
- About a quarter of the free models (at most 8; routers never) get a failure mode, chosen by ranking the
  models on ``sha256(seed:id)``: ``reasoning_exhausted`` goes to the best-ranked reasoning model, then
  ``no_endpoints, upstream_429, provider_502, empty, wrong_answer, free_variant_ended, privacy`` (in an
  order rotated by the seed) to the next ones. Routing errors answer in 60-300 ms, upstream errors in
  0.3-1.5 s.
- Paid models (and routers with variable prices) answer ``credits_402``: the sandbox account has never
  bought credits. ``openrouter/free`` forwards each request to a random working free model.
- Some models send ``: OPENROUTER PROCESSING`` comments every 250-1000 ms while waiting; the final usage
  chunk takes each of its three recorded forms (``choices: []``, one empty choice, finish repeated).

A scenario overrides any of this per model (see :mod:`freemodels.sandbox.scenario`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from freemodels.errors import ScenarioError
from freemodels.sandbox.catalog import Catalog, SandboxModel, build_catalog
from freemodels.sandbox.scenario import (
    Behavior,
    ErrorChunk,
    Fault,
    ModelSpec,
    Scenario,
    UsageChunk,
    Wording,
)

DEFAULT_SEED = 20261101
DEFAULT_HUGE_BODY_BYTES = 8_000_000
MAX_DEFAULT_FAILURES = 8
FREE_ROUTER_ID = "openrouter/free"

_FAILURE_MODES = (
    Behavior.NO_ENDPOINTS,
    Behavior.UPSTREAM_429,
    Behavior.PROVIDER_502,
    Behavior.EMPTY,
    Behavior.WRONG_ANSWER,
    Behavior.FREE_VARIANT_ENDED,
    Behavior.PRIVACY,
)
_ROUTING_ERRORS = frozenset(
    {
        Behavior.NO_ENDPOINTS,
        Behavior.FREE_VARIANT_ENDED,
        Behavior.PRIVACY,
        Behavior.PROVIDER_RESTRICTED,
        Behavior.APP_RESTRICTED,
        Behavior.CREDITS_402,
    }
)


@dataclass(frozen=True, slots=True)
class Profile:
    """Everything the server needs to play one model; all values resolved."""

    behavior: Behavior = Behavior.OK
    ttft_ms: int = 400
    reasoning_ms: int = 0
    total_ms: int = 1200
    keepalive_ms: int = 0
    retry_after_s: float | None = None
    fail_first: int = 0
    ok_first: int = 0
    replay: tuple[Path, ...] = ()
    fault: Fault = Fault.NONE
    fault_after_tokens: int | None = None
    huge_body_bytes: int = DEFAULT_HUGE_BODY_BYTES
    answer: str | None = None
    reasoning_tokens: int = 0
    cost: float = 0.0
    usage_chunk: UsageChunk = UsageChunk.EMPTY_CHOICES
    provider: str = "Chutes"
    redirect: str | None = None
    wording: Wording | None = None  # None: the behaviour's default (newest live) wording
    error_status: int | None = None  # None: the behaviour's usual status
    error_chunk: ErrorChunk = ErrorChunk.WITH_CHOICE


def resolve_profiles(catalog: Catalog, scenario: Scenario, seed: int) -> dict[str, Profile]:
    """Profiles for every listed model (and every ended free variant): seed, then scenario layers."""
    for model_id in scenario.models:
        if model_id not in catalog.models and model_id not in catalog.ended_free:
            raise ScenarioError(
                f'models."{model_id}": not in the sandbox catalog (list it with catalog.add_free)'
            )
    profiles = default_profiles(catalog, seed)
    for model_id in catalog.ended_free:
        profiles[model_id] = replace(
            _error_profile(random.Random(f"{seed}:{model_id}"), Behavior.FREE_VARIANT_ENDED),
            provider="OpenRouter",
        )
    resolved: dict[str, Profile] = {}
    for model_id, profile in profiles.items():
        model = catalog.models.get(model_id)
        if model is not None and model.free:
            profile = _apply(profile, scenario.defaults)
        spec = scenario.models.get(model_id)
        if spec is not None:
            profile = _apply(profile, spec)
        resolved[model_id] = _normalise(profile)
    return resolved


def default_profiles(catalog: Catalog, seed: int) -> dict[str, Profile]:
    """The seed's profiles for every listed model (before any scenario).

    Which models fail is decided on the shipped catalog, not on the scenario-changed one, so that
    removing or adding models in a scenario changes nothing else about the other models.
    """
    failing = _failure_assignment(build_catalog(), seed)
    profiles: dict[str, Profile] = {}
    for model in catalog.models.values():
        rng = random.Random(f"{seed}:{model.id}")
        if not model.free:
            profile = _error_profile(rng, Behavior.CREDITS_402)
        elif model.id in failing:
            profile = _failing_profile(rng, model, failing[model.id])
        else:
            profile = _ok_profile(rng, model)
        profiles[model.id] = replace(profile, provider=model.provider)
    _ensure_a_slow_model(profiles, catalog)
    return profiles


def _ensure_a_slow_model(profiles: dict[str, Profile], catalog: Catalog) -> None:
    """Every seed shows the slow tier: if no working model takes 5 s or more, the slowest one does."""
    working = [
        model.id
        for model in catalog.models.values()
        if model.free and not model.router and profiles[model.id].behavior is Behavior.OK
    ]
    if not working or any(profiles[m].total_ms >= 5000 for m in working):
        return
    slowest = max(working, key=lambda m: (profiles[m].total_ms, m))
    stretched = 5000 + profiles[slowest].total_ms % 800
    profiles[slowest] = replace(profiles[slowest], total_ms=stretched)


def _failure_assignment(catalog: Catalog, seed: int) -> dict[str, Behavior]:
    candidates = [m for m in catalog.models.values() if m.free and not m.router]
    if not candidates:
        return {}
    count = max(1, min(MAX_DEFAULT_FAILURES, round(len(candidates) * 0.27)))
    ranked = sorted(candidates, key=lambda m: hashlib.sha256(f"{seed}:{m.id}".encode()).hexdigest())
    shift = seed % len(_FAILURE_MODES)
    modes = list(_FAILURE_MODES[shift:] + _FAILURE_MODES[:shift])
    assignment: dict[str, Behavior] = {}
    thinker = next((m for m in ranked if m.reasoning), None)
    if thinker is not None and count >= 1:
        assignment[thinker.id] = Behavior.REASONING_EXHAUSTED
    for model in ranked:
        if len(assignment) >= count or not modes:
            break
        if model.id not in assignment:
            assignment[model.id] = modes.pop(0)
    return assignment


def _ok_profile(rng: random.Random, model: SandboxModel) -> Profile:
    tier = rng.random()
    if tier < 0.52:
        total = rng.uniform(250, 1800)
    elif tier < 0.92:
        total = rng.uniform(2100, 3600)
    else:
        total = rng.uniform(5100, 5800)
    ttft = rng.uniform(150, max(160.0, min(2500.0, total * 0.6)))
    reasoning_ms = int(ttft * rng.uniform(0.4, 0.8)) if model.reasoning else 0
    return Profile(
        behavior=Behavior.OK,
        ttft_ms=int(ttft),
        reasoning_ms=reasoning_ms,
        total_ms=int(total),
        keepalive_ms=rng.choice((0, 0, 0, 250, 500, 1000)),
        reasoning_tokens=rng.randint(40, 400) if model.reasoning else 0,
        usage_chunk=rng.choices(list(UsageChunk), weights=(4, 2, 4))[0],
    )


def _failing_profile(rng: random.Random, model: SandboxModel, behavior: Behavior) -> Profile:
    if behavior in {Behavior.EMPTY, Behavior.WRONG_ANSWER}:
        return replace(_ok_profile(rng, model), behavior=behavior)
    if behavior is Behavior.REASONING_EXHAUSTED:
        ttft = int(rng.uniform(300, 1200))
        return Profile(
            behavior=behavior,
            ttft_ms=ttft,
            reasoning_ms=ttft - 100,
            total_ms=int(rng.uniform(1500, 3000)),
            keepalive_ms=rng.choice((0, 500)),
        )
    return _error_profile(rng, behavior)


def _error_profile(rng: random.Random, behavior: Behavior) -> Profile:
    low, high = (60, 300) if behavior in _ROUTING_ERRORS else (300, 1500)
    ttft = int(rng.uniform(low, high))
    return Profile(behavior=behavior, ttft_ms=ttft, total_ms=ttft)


def _apply(profile: Profile, spec: ModelSpec) -> Profile:
    values = spec.set_values()
    return replace(profile, **values) if values else profile


def _normalise(profile: Profile) -> Profile:
    total = max(profile.total_ms, profile.ttft_ms)
    reasoning = min(profile.reasoning_ms, profile.ttft_ms)
    if total != profile.total_ms or reasoning != profile.reasoning_ms:
        profile = replace(profile, total_ms=total, reasoning_ms=reasoning)
    if profile.reasoning_ms > 0 and profile.reasoning_tokens == 0:
        profile = replace(profile, reasoning_tokens=max(8, profile.reasoning_ms // 10))
    return profile


def profile_table(profiles: Mapping[str, Profile]) -> list[dict[str, object]]:
    """A plain view of the profiles (for docs, logs and tests)."""
    return [
        {
            "model_id": model_id,
            "behavior": p.behavior.value,
            "fault": p.fault.value,
            "ttft_ms": p.ttft_ms,
            "reasoning_ms": p.reasoning_ms,
            "total_ms": p.total_ms,
            "keepalive_ms": p.keepalive_ms,
        }
        for model_id, p in profiles.items()
    ]

"""Default behaviour profiles: deterministic per seed, fast enough for a default run, a few failures."""

from __future__ import annotations

import pytest

from freemodels.errors import ScenarioError
from freemodels.sandbox.catalog import build_catalog
from freemodels.sandbox.profiles import DEFAULT_SEED, default_profiles, resolve_profiles
from freemodels.sandbox.scenario import Behavior, CatalogChanges, Scenario

FAILURE_MODES = {
    Behavior.NO_ENDPOINTS,
    Behavior.UPSTREAM_429,
    Behavior.PROVIDER_502,
    Behavior.EMPTY,
    Behavior.WRONG_ANSWER,
    Behavior.FREE_VARIANT_ENDED,
    Behavior.PRIVACY,
    Behavior.REASONING_EXHAUSTED,
}


def test_same_seed_same_profiles_other_seed_other_profiles() -> None:
    catalog = build_catalog()
    first = default_profiles(catalog, 11)
    assert first == default_profiles(catalog, 11)
    assert first != default_profiles(catalog, 12)


@pytest.mark.parametrize("seed", [DEFAULT_SEED, 1, 2, 3, 99])
def test_a_few_free_models_fail_in_known_ways(seed: int) -> None:
    catalog = build_catalog()
    profiles = default_profiles(catalog, seed)
    free = [m for m in catalog.models.values() if m.free]
    failing = {m.id: profiles[m.id].behavior for m in free if profiles[m.id].behavior is not Behavior.OK}
    assert 5 <= len(failing) <= 8
    assert set(failing.values()) <= FAILURE_MODES
    assert len(set(failing.values())) == len(failing)  # one model per failure mode
    for model_id, behavior in failing.items():
        assert not catalog.models[model_id].router
        if behavior is Behavior.REASONING_EXHAUSTED:
            assert catalog.models[model_id].reasoning
    for model in catalog.models.values():
        if not model.free:
            assert profiles[model.id].behavior is Behavior.CREDITS_402


@pytest.mark.parametrize("seed", [DEFAULT_SEED, 1, 2, 3, 4, 5])
def test_default_timing_is_fast_and_spread_over_tiers(seed: int) -> None:
    catalog = build_catalog()
    profiles = default_profiles(catalog, seed)
    working = [profiles[m.id] for m in catalog.models.values() if m.free and not m.router]
    working = [p for p in working if p.behavior is Behavior.OK]
    assert all(150 <= p.ttft_ms <= 2500 for p in working)
    assert all(p.ttft_ms <= p.total_ms <= 5800 for p in working)
    totals = [p.total_ms for p in working]
    assert sum(t < 2000 for t in totals) >= 5
    assert sum(2000 <= t < 5000 for t in totals) >= 3
    assert sum(t >= 5000 for t in totals) >= 1
    # every free model x 3 tasks, 8 probes in flight, finishes in well under a minute
    every_probe_s = sum(p.total_ms for p in profiles.values() if p.behavior is not Behavior.CREDITS_402)
    assert every_probe_s * 3 / 8 / 1000 < 30
    for model in catalog.models.values():
        profile = profiles[model.id]
        if model.free and model.reasoning and profile.behavior is Behavior.OK:
            assert 0 < profile.reasoning_ms < profile.ttft_ms
            assert profile.reasoning_tokens > 0


def test_adding_a_model_leaves_the_other_timings_alone() -> None:
    before = default_profiles(build_catalog(), 5)
    after = default_profiles(build_catalog(CatalogChanges(add_free=("acme/x-1b:free",))), 5)
    same = [
        model_id
        for model_id, profile in before.items()
        if (profile.ttft_ms, profile.total_ms) == (after[model_id].ttft_ms, after[model_id].total_ms)
    ]
    assert len(same) >= len(before) - 2


def test_scenario_layers_apply_in_order() -> None:
    catalog = build_catalog()
    model_id = "google/gemma-3-12b-it:free"
    scenario = Scenario.from_mapping(
        {
            "defaults": {"ttft_ms": 700, "keepalive_ms": 100},
            "models": {model_id: {"behavior": "stall", "keepalive_ms": 30}},
        }
    )
    profiles = resolve_profiles(catalog, scenario, 1)
    staged = profiles[model_id]
    assert staged.behavior is Behavior.STALL
    assert staged.ttft_ms == 700 and staged.keepalive_ms == 30
    assert staged.total_ms >= 700  # raised when the seed's total was shorter
    other = profiles["google/gemma-3-4b-it:free"]
    assert other.ttft_ms == 700 and other.keepalive_ms == 100
    assert profiles["openai/gpt-4o-mini"].ttft_ms != 700  # [defaults] is for free models only


def test_reasoning_is_capped_at_ttft_when_layers_disagree() -> None:
    catalog = build_catalog()
    scenario = Scenario.from_mapping({"models": {"qwen/qwen3-14b:free": {"ttft_ms": 50}}})
    profile = resolve_profiles(catalog, scenario, DEFAULT_SEED)["qwen/qwen3-14b:free"]
    assert profile.reasoning_ms <= 50


def test_scenario_may_only_name_listed_models() -> None:
    scenario = Scenario.from_mapping({"models": {"acme/ghost:free": {"behavior": "ok"}}})
    with pytest.raises(ScenarioError, match="not in the sandbox catalog"):
        resolve_profiles(build_catalog(), scenario, 1)

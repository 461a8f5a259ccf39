"""Scenario files: every documented key parses; mistakes raise ScenarioError naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freemodels.errors import ScenarioError
from freemodels.sandbox.scenario import (
    Behavior,
    ErrorChunk,
    ErrorShape,
    Fault,
    Limits,
    Scenario,
    SharedPool,
    UsageChunk,
    Wording,
    load_scenario,
)

FULL = """
seed = 123
error_shape = "documented"

[limits]
requests_per_minute = 20
requests_per_day = 50
requests_used_today = 3
api_key = "sk-or-v1-test"
retry_after_s = 2
count_rejected = true
requests_this_minute = 20
minute_clears_in_s = 12.5

[catalog]
remove = ["qwen/qwen3-4b:free"]
add_free = ["acme/new-model:free"]
paid = ["google/gemma-3-27b-it:free"]

[shared_pool."DigitalOcean"]
max_concurrent = 2
clear_s = 90

[defaults]
ttft_ms = 400

[models."meta-llama/llama-3.3-70b-instruct:free"]
behavior = "upstream_429"
ttft_ms = 300
reasoning_ms = 100
total_ms = 1200
keepalive_ms = 250
retry_after_s = 1.5
fail_first = 2
ok_first = 1
replay = "rec.sse"
fault = "stall_after_tokens"
fault_after_tokens = 4
huge_body_bytes = 1000
answer = "42"
reasoning_tokens = 10
cost = 0.5
usage_chunk = "with_choice"
provider = "Acme"
error_status = 400
error_chunk = "empty_choices"

[models."google/gemma-3-12b-it:free"]
behavior = "free_variant_ended"
wording = "period_ended"
replay = ["rec.sse", "rec.json"]
"""


def test_full_file_parses_every_key(tmp_path: Path) -> None:
    (tmp_path / "rec.sse").write_text("data: [DONE]\n\n")
    (tmp_path / "rec.json").write_text("{}")
    path = tmp_path / "stage.toml"
    path.write_text(FULL)
    scenario = load_scenario(path)
    assert scenario.seed == 123
    assert scenario.error_shape is ErrorShape.DOCUMENTED
    assert scenario.shared_pool == {"DigitalOcean": SharedPool(max_concurrent=2, clear_s=90.0)}
    assert scenario.limits == Limits(20, 50, 3, "sk-or-v1-test", 2.0, True, 20, 12.5)
    assert scenario.catalog.remove == ("qwen/qwen3-4b:free",)
    assert scenario.catalog.add_free == ("acme/new-model:free",)
    assert scenario.catalog.paid == ("google/gemma-3-27b-it:free",)
    assert scenario.defaults.ttft_ms == 400
    spec = scenario.models["meta-llama/llama-3.3-70b-instruct:free"]
    assert spec.behavior is Behavior.UPSTREAM_429
    assert spec.fault is Fault.STALL_AFTER_TOKENS
    assert spec.usage_chunk is UsageChunk.WITH_CHOICE
    assert (spec.ttft_ms, spec.reasoning_ms, spec.total_ms, spec.keepalive_ms) == (300, 100, 1200, 250)
    assert (spec.retry_after_s, spec.fail_first, spec.ok_first, spec.fault_after_tokens) == (1.5, 2, 1, 4)
    assert (spec.huge_body_bytes, spec.answer, spec.reasoning_tokens, spec.cost) == (1000, "42", 10, 0.5)
    assert spec.provider == "Acme"
    assert spec.replay == (tmp_path / "rec.sse",)  # relative to the scenario file
    assert spec.error_status == 400 and spec.error_chunk is ErrorChunk.EMPTY_CHOICES
    ended = scenario.models["google/gemma-3-12b-it:free"]
    assert ended.wording is Wording.PERIOD_ENDED
    assert ended.replay == (tmp_path / "rec.sse", tmp_path / "rec.json")  # a sequence


def test_json_has_the_same_structure(tmp_path: Path) -> None:
    path = tmp_path / "stage.json"
    path.write_text(json.dumps({"seed": 7, "limits": {"requests_per_minute": 5}, "models": {"a/b:free": {}}}))
    scenario = load_scenario(path)
    assert scenario.seed == 7
    assert scenario.limits.requests_per_minute == 5
    assert scenario.limits.requests_per_day == 1000  # default kept
    assert "a/b:free" in scenario.models


def test_empty_scenario_has_generous_defaults() -> None:
    scenario = Scenario.from_mapping({})
    assert scenario.seed is None
    assert scenario.limits.requests_per_minute == 600
    assert scenario.limits.requests_per_day == 1000
    assert scenario.limits.api_key is None
    assert scenario.limits.count_rejected is True  # failed attempts count, as OpenRouter says
    assert scenario.error_shape is ErrorShape.LIVE
    assert scenario.shared_pool == {}
    assert scenario.models == {}


def test_api_key_is_not_in_the_repr() -> None:
    scenario = Scenario.from_mapping({"limits": {"api_key": "sk-or-v1-secret"}})
    assert "sk-or-v1-secret" not in repr(scenario)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"sede": 1}, "'sede'"),
        ({"limits": {"rpm": 1}}, "'limits.rpm'"),
        ({"catalog": {"drop": []}}, "'catalog.drop'"),
        ({"models": {"a/b:free": {"latency": 1}}}, "'models.\"a/b:free\".latency'"),
        ({"defaults": {"ttft": 1}}, "'defaults.ttft'"),
    ],
)
def test_unknown_keys_are_named(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ScenarioError, match="unknown key") as info:
        Scenario.from_mapping(data)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"seed": "x"}, "seed must be a whole number"),
        ({"seed": -1}, "seed must be at least 0"),
        ({"limits": {"requests_per_minute": 0}}, "limits.requests_per_minute must be at least 1"),
        ({"limits": {"requests_per_day": True}}, "limits.requests_per_day must be a whole number"),
        ({"limits": {"api_key": ""}}, "limits.api_key must be a non-empty string"),
        ({"limits": {"count_rejected": "yes"}}, "limits.count_rejected must be true or false"),
        ({"limits": {"retry_after_s": -1}}, "limits.retry_after_s must not be negative"),
        ({"limits": {"requests_this_minute": -1}}, "limits.requests_this_minute must be at least 0"),
        ({"limits": {"minute_clears_in_s": 61}}, "limits.minute_clears_in_s must be at most 60"),
        ({"models": {"m:free": {"ok_first": -2}}}, "ok_first must be at least 0"),
        ({"catalog": {"remove": "a/b"}}, "catalog.remove must be a list"),
        ({"catalog": {"paid": ["a/b"]}}, "is not a ':free' id"),
        ({"models": {"m:free": {"behavior": "slow"}}}, "is not one of ok | wrong_answer"),
        ({"models": {"m:free": {"fault": "boom"}}}, "is not one of none | connection_reset"),
        ({"models": {"m:free": {"ttft_ms": 500, "total_ms": 100}}}, "total_ms (100) must not be less"),
        ({"models": {"m:free": {"ttft_ms": 100, "reasoning_ms": 200}}}, "reasoning_ms (200) must not exceed"),
        ({"models": {"m:free": {"huge_body_bytes": 0}}}, "huge_body_bytes must be at least 1"),
        ({"models": {"m:free": {"answer": 5}}}, "answer must be a string"),
        ({"models": {"m:free": "ok"}}, 'models."m:free" must be a table'),
        ({"limits": []}, "limits must be a table"),
        ({"error_shape": "docs"}, "is not one of live | documented"),
        ({"shared_pool": {"X": {"max_concurrent": 0}}}, 'shared_pool."X".max_concurrent must be at least 1'),
        ({"shared_pool": {"X": {"clear_s": -1}}}, 'shared_pool."X".clear_s must not be negative'),
        ({"shared_pool": {"X": {"size": 1}}}, "unknown key 'shared_pool.\"X\".size'"),
        (
            {"models": {"m:free": {"behavior": "privacy", "wording": "period_ended"}}},
            "is not a wording of privacy",
        ),
        ({"models": {"m:free": {"error_status": 302}}}, "error_status must be at least 400"),
        ({"models": {"m:free": {"error_status": 600}}}, "error_status must be at most 599"),
        ({"models": {"m:free": {"error_chunk": "none"}}}, "is not one of with_choice | empty_choices"),
        ({"models": {"m:free": {"replay": []}}}, "non-empty list of file paths"),
    ],
)
def test_bad_values_are_explained(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_mapping(data)
    assert needle in str(info.value)


def test_missing_replay_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="replay: file not found"):
        Scenario.from_mapping({"models": {"m:free": {"replay": "nope.sse"}}}, base_dir=tmp_path)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("seed = = 1")
    with pytest.raises(ScenarioError, match=r"bad\.toml is not valid TOML"):
        load_scenario(bad_toml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(ScenarioError, match=r"bad\.json is not valid JSON"):
        load_scenario(bad_json)
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "absent.toml")
    not_table = tmp_path / "list.json"
    not_table.write_text("[1]")
    with pytest.raises(ScenarioError, match="table/object at the top level"):
        load_scenario(not_table)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[limits]\nrpm = 3\n")
    with pytest.raises(ScenarioError, match=r"unknown\.toml: unknown key 'limits\.rpm'"):
        load_scenario(unknown)

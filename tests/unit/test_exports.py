"""The rotation exports: OpenRouter's ``models`` fallback request fields and a LiteLLM router config.

Validation:

- ``rotation.json``: every purpose is checked against the part of OpenRouter's chat request that picks
  models (openapi ``ChatRequest``: ``model`` a string, ``models`` an array of model ids, "Model
  Fallbacks" guide), merged into a full request body, with the three-id limit OpenRouter enforces on
  ``models`` (HTTP 400 ``'models' array must have 3 items or fewer.``; not in the openapi schema).
- ``litellm-router.yaml``: checked against LiteLLM's documented config schema (``model_list`` entries
  with ``model_name`` and ``litellm_params.model``; ``router_settings.fallbacks`` a list of one-key maps
  from a model name to the model names to try next, docs "Fallbacks" / "Router config"). LiteLLM is an
  optional dependency group (``litellm``, about 250 MB with boto3, tokenizers, huggingface-hub and
  openai); where it is installed, the last test also loads the file with ``litellm.Router``. Requests
  built from both exports are sent to the sandbox in ``tests/integration/test_exports_in_use.py``.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import polars as pl
import pytest
import yaml

from freemodels.exports import (
    LITELLM_ROUTER_SETTINGS,
    SANDBOX_NOTE,
    litellm_config,
    litellm_router_yaml,
    rotation_json,
)
from freemodels.records import ROTATION_SCHEMA
from freemodels.settings import OPENROUTER_MODELS_LIMIT, load_settings
from freemodels.source import PROFILES, SourceKind
from tasks.rank import DEFAULT_CHAIN_LENGTH, GENERAL, JSON, tier_purpose

OPENROUTER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "models": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,  # enforced by OpenRouter's API, not stated in its schema
            "items": {"type": "string", "pattern": "^[^/\\s]+/[^\\s]+$"},
            "uniqueItems": True,
        },
        "messages": {"type": "array", "minItems": 1},
    },
}

LITELLM_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model_list"],
    "properties": {
        "model_list": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["model_name", "litellm_params"],
                "properties": {
                    "model_name": {"type": "string", "minLength": 1},
                    "litellm_params": {
                        "type": "object",
                        "required": ["model"],
                        "properties": {
                            "model": {"type": "string", "pattern": "^[a-z_]+/.+"},
                            "api_key": {"type": "string"},
                            "api_base": {"type": "string"},
                        },
                    },
                },
            },
        },
        "router_settings": {
            "type": "object",
            "properties": {
                "fallbacks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "minProperties": 1,
                        "maxProperties": 1,
                        "additionalProperties": {
                            "type": "array",
                            "items": {"type": "string"},
                            "minItems": 1,
                        },
                    },
                }
            },
        },
    },
}

CHAINS = {
    GENERAL: ["meta-llama/llama-3.3-70b-instruct:free", "google/gemma-3-27b-it:free", "qwen/q:free"],
    JSON: ["google/gemma-3-27b-it:free", "meta-llama/llama-3.3-70b-instruct:free"],
    tier_purpose("ultra-fast"): ["meta-llama/llama-3.3-70b-instruct:free"],
}

LONG_CHAINS = {
    GENERAL: [
        "meta-llama/llama-3.3-70b-instruct:free",
        "google/gemma-3-27b-it:free",
        "qwen/qwen3-14b:free",
        "mistralai/mistral-small-3.2-24b-instruct:free",
        "deepseek/deepseek-r1:free",
    ],
    JSON: ["google/gemma-3-27b-it:free", "qwen/qwen3-14b:free", "deepseek/deepseek-r1:free", "z/z:free"],
    tier_purpose("fast"): ["qwen/qwen3-14b:free"],
}


def rotation_frame(chains: dict[str, list[str]] = CHAINS) -> pl.DataFrame:
    rows = [
        {
            "run_id": "run-1",
            "purpose": purpose,
            "rank": rank,
            "model_id": model_id,
            "family": model_id.split("/")[0],
            "tier": "ultra-fast",
            "p50_total_ms": 900.0 + rank,
            "success_rate": 1.0,
        }
        for purpose, ids in chains.items()
        for rank, model_id in enumerate(ids, start=1)
    ]
    # Stored order is not rank order: the exports must sort.
    return pl.DataFrame(list(reversed(rows)), schema=ROTATION_SCHEMA)


def test_rotation_json_matches_openrouters_request_fields() -> None:
    doc = rotation_json(
        rotation_frame(),
        run_id="run-1",
        source="openrouter",
        generated_at="2026-11-01T06:07:00Z",
        order=list(CHAINS),
    )
    assert json.loads(json.dumps(doc)) == doc
    assert doc["run_id"] == "run-1" and doc["source"] == "openrouter"
    assert doc["generated_at"] == "2026-11-01T06:07:00Z"
    assert "warning" not in doc
    assert list(doc["purposes"]) == list(CHAINS)
    for purpose, ids in CHAINS.items():
        fields = doc["purposes"][purpose]
        assert fields == {"model": ids[0], "models": ids}
        body = {"messages": [{"role": "user", "content": "hi"}], **fields}
        jsonschema.validate(body, OPENROUTER_REQUEST_SCHEMA)
        assert [m["model"] for m in doc["measurements"][purpose]] == ids
        assert [m["rank"] for m in doc["measurements"][purpose]] == list(range(1, len(ids) + 1))


def test_models_holds_at_most_three_ids_and_chains_the_whole_chain() -> None:
    assert len(LONG_CHAINS[GENERAL]) == DEFAULT_CHAIN_LENGTH  # as long as a default chain gets
    doc = rotation_json(
        rotation_frame(LONG_CHAINS), run_id="r", source="openrouter", generated_at=None, order=[GENERAL]
    )
    assert doc["models_limit"] == OPENROUTER_MODELS_LIMIT == 3
    for purpose, ids in LONG_CHAINS.items():
        fields = doc["purposes"][purpose]
        # The primary, then the best fallbacks in chain order; nothing else goes into the request.
        assert fields == {"model": ids[0], "models": ids[:3]}
        jsonschema.validate(
            {"messages": [{"role": "user", "content": "hi"}], **fields}, OPENROUTER_REQUEST_SCHEMA
        )
        assert doc["chains"][purpose] == ids
        assert [m["model"] for m in doc["measurements"][purpose]] == ids
    assert "chains[<purpose>]" in doc["usage"] and "at most 3 ids" in doc["usage"]


@pytest.mark.parametrize("limit", [1, 2, 4, 5, 6])
def test_the_models_limit_follows_the_setting(limit: int) -> None:
    settings = load_settings(rotation_models_limit=limit)
    doc = rotation_json(
        rotation_frame(LONG_CHAINS),
        run_id="r",
        source="openrouter",
        generated_at=None,
        models_limit=settings.rotation_models_limit,
    )
    assert doc["models_limit"] == limit
    for purpose, ids in LONG_CHAINS.items():
        assert doc["purposes"][purpose]["models"] == ids[:limit]
        assert doc["chains"][purpose] == ids
    assert f"at most {limit} ids" in doc["usage"]


def test_a_models_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="models_limit"):
        rotation_json(rotation_frame(), run_id="r", source="openrouter", generated_at=None, models_limit=0)


def test_litellm_yaml_keeps_the_whole_chain_as_fallbacks() -> None:
    config = yaml.safe_load(litellm_router_yaml(rotation_frame(LONG_CHAINS), run_id="r"))
    fallbacks = {k: v for entry in config["router_settings"]["fallbacks"] for k, v in entry.items()}
    assert fallbacks[GENERAL] == LONG_CHAINS[GENERAL][1:]
    assert len(fallbacks[GENERAL]) == DEFAULT_CHAIN_LENGTH - 1


def test_rotation_json_marks_sandbox_data() -> None:
    doc = rotation_json(rotation_frame(), run_id="r", source="sandbox", generated_at=None)
    assert doc["warning"] == SANDBOX_NOTE
    assert doc["generated_at"] is None


def test_empty_rotation_exports_no_purposes() -> None:
    empty = pl.DataFrame(schema=ROTATION_SCHEMA)
    doc = rotation_json(empty, run_id="r", source="openrouter", generated_at=None)
    assert doc["purposes"] == {} and doc["chains"] == {}
    config = litellm_config(empty)
    assert config == {"model_list": [], "router_settings": {"fallbacks": [], **LITELLM_ROUTER_SETTINGS}}


def test_litellm_yaml_follows_the_documented_config_schema() -> None:
    text = litellm_router_yaml(rotation_frame(), run_id="run-1", source="openrouter", order=list(CHAINS))
    assert text.startswith("# LiteLLM router configuration")
    config = yaml.safe_load(text)
    jsonschema.validate(config, LITELLM_CONFIG_SCHEMA)
    deployments = {e["model_name"]: e["litellm_params"] for e in config["model_list"]}
    assert len(deployments) == len(config["model_list"]), "model names are unique"
    # Each purpose is served by its primary; each model in a chain has its own name.
    for purpose, ids in CHAINS.items():
        assert deployments[purpose]["model"] == f"openrouter/{ids[0]}"
        for model_id in ids:
            assert deployments[model_id]["model"] == f"openrouter/{model_id}"
    assert all(p["api_key"] == PROFILES[SourceKind.OPENROUTER].litellm_key_ref for p in deployments.values())
    fallbacks = {k: v for entry in config["router_settings"]["fallbacks"] for k, v in entry.items()}
    assert fallbacks == {p: ids[1:] for p, ids in CHAINS.items() if len(ids) > 1}
    for targets in fallbacks.values():
        assert all(t in deployments for t in targets), "fallbacks name defined model groups"


def test_litellm_yaml_for_a_base_url_source_uses_that_server() -> None:
    config = yaml.safe_load(
        litellm_router_yaml(rotation_frame(), source="base_url", base_url="http://127.0.0.1:8080/v1")
    )
    jsonschema.validate(config, LITELLM_CONFIG_SCHEMA)
    params = next(e for e in config["model_list"] if e["model_name"] == GENERAL)["litellm_params"]
    assert params["model"] == f"openai/{CHAINS[GENERAL][0]}"
    assert params["api_base"] == "http://127.0.0.1:8080/v1"
    assert "sk-" not in json.dumps(config)


def test_litellm_yaml_warns_about_sandbox_data() -> None:
    text = litellm_router_yaml(rotation_frame(), run_id="r", source="sandbox")
    assert f"# WARNING: {SANDBOX_NOTE}" in text


def test_exports_are_deterministic() -> None:
    a = litellm_router_yaml(rotation_frame(), run_id="r")
    b = litellm_router_yaml(rotation_frame().sample(fraction=1.0, shuffle=True, seed=3), run_id="r")
    assert a == b


def test_litellm_router_loads_the_yaml() -> None:
    # tests/conftest.py sets LITELLM_LOCAL_MODEL_COST_MAP: no price map is fetched at import.
    litellm = pytest.importorskip(
        "litellm", reason="litellm is not installed (optional dependency group `litellm`)"
    )
    config = yaml.safe_load(litellm_router_yaml(rotation_frame(LONG_CHAINS), run_id="r"))
    router = litellm.Router(model_list=config["model_list"], **config["router_settings"])
    names = {d["model_name"] for d in router.registry().all()}
    assert set(LONG_CHAINS) <= names


def test_litellm_router_settings_use_litellms_own_names() -> None:
    """Every key of router_settings is a parameter of LiteLLM's Router, and the per-exception keys are
    fields of its RetryPolicy and AllowedFailsPolicy: a misspelt key would be ignored or refused."""
    pytest.importorskip("litellm", reason="litellm is not installed (optional dependency group `litellm`)")
    import inspect

    from litellm import router as litellm_router
    from litellm.types.router import AllowedFailsPolicy, RetryPolicy

    config = yaml.safe_load(litellm_router_yaml(rotation_frame(), run_id="r"))
    settings = config["router_settings"]
    parameters = inspect.signature(litellm_router._router_init).parameters
    assert set(settings) <= set(parameters)
    assert set(settings["retry_policy"]) <= set(RetryPolicy.model_fields)
    assert set(settings["allowed_fails_policy"]) <= set(AllowedFailsPolicy.model_fields)
    # An account 429 waits on the same model (retries, each after retry_after) before any fallback;
    # a 404, 5xx or timeout falls back at once.
    assert settings["retry_policy"]["RateLimitErrorRetries"] >= 1 and settings["retry_after"] > 0
    for name in ("NotFoundErrorRetries", "InternalServerErrorRetries", "ServiceUnavailableErrorRetries"):
        assert settings["retry_policy"][name] == 0
    RetryPolicy(**settings["retry_policy"])
    AllowedFailsPolicy(**settings["allowed_fails_policy"])

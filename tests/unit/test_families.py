"""Families (model lineages): the documented rule, checked on every id of the real catalogs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from freemodels.catalog import parse_catalog
from freemodels.families import family_of, is_size_token, lineage_tokens, split_variant
from tests.conftest import SKIP_REASON, catalog_files

CATALOGS = catalog_files()


def _all_ids() -> list[str]:
    ids: set[str] = set()
    for path in CATALOGS:
        document = json.loads(path.read_bytes().decode("utf-8-sig"))
        models = document["data"] if isinstance(document, dict) else document
        ids.update(model["id"] for model in models)
    return sorted(ids)


ALL_IDS = _all_ids()

SAME_FAMILY = [
    # the issue's own examples
    ("meta-llama/llama-3.3-70b-instruct:free", "meta-llama/llama-3.3-8b-instruct:free"),
    ("google/gemma-3-27b-it:free", "google/gemma-3-4b-it:free"),
    ("qwen/qwen3-235b-a22b:free", "qwen/qwen3-30b-a3b:free"),
    ("mistralai/mistral-7b-instruct:free", "mistralai/mistral-7b-instruct-v0.3"),
    # sizes, mixtures, active and effective parameters
    ("meta-llama/llama-3.1-405b", "meta-llama/llama-3.1-8b-instruct:free"),
    ("mistralai/mixtral-8x7b-instruct", "mistralai/mixtral-8x22b-instruct"),
    ("google/gemma-3n-e2b-it:free", "google/gemma-3n-e4b-it"),
    ("qwen/qwen3-0.6b-04-28:free", "qwen/qwen3-14b"),
    ("openai/gpt-oss-120b:free", "openai/gpt-oss-20b"),
    ("deepseek/deepseek-r1-distill-qwen-1.5b", "deepseek/deepseek-r1-distill-qwen-32b:free"),
    ("microsoft/phi-3-mini-128k-instruct:free", "microsoft/phi-3-mini-128k-instruct"),
    # dates and release stages
    ("deepseek/deepseek-r1:free", "deepseek/deepseek-r1-0528:free"),
    ("qwen/qwen3-235b-a22b-2507", "qwen/qwen3-235b-a22b-07-25:free"),
    ("qwen/qwen3-30b-a3b-instruct-2507", "qwen/qwen3-30b-a3b-thinking-2507"),
    ("openai/gpt-4o-2024-11-20", "openai/gpt-4o:extended"),
    ("anthropic/claude-3.5-haiku-20241022:beta", "anthropic/claude-3-5-haiku"),
    ("google/gemini-2.5-pro-exp-03-25:free", "google/gemini-2.5-pro-preview-05-06"),
    ("google/gemini-2.0-flash-exp:free", "google/gemini-2.0-flash-001"),
    ("cohere/command-r-08-2024", "cohere/command-r"),
    ("mistralai/mistral-small-24b-instruct-2501:free", "mistralai/mistral-small"),
    ("x-ai/grok-3-mini-beta", "x-ai/grok-3-mini"),
    ("moonshotai/kimi-k2-0905:exacto", "moonshotai/kimi-k2:free"),
    ("deepseek/deepseek-v3-base:free", "deepseek/deepseek-chat-v3-0324:free"),
    # version tags after the size are releases of one model
    ("nvidia/llama-3.3-nemotron-super-49b-v1:free", "nvidia/llama-3.3-nemotron-super-49b-v1.5"),
    ("allenai/olmo-3-32b-think:free", "allenai/olmo-3-7b-instruct"),
    ("liquid/lfm-2.5-1.2b-instruct:free", "liquid/lfm-2.5-1.2b-thinking:free"),
]

DIFFERENT_FAMILY = [
    # distills are their own lineage, per student base
    ("deepseek/deepseek-r1:free", "deepseek/deepseek-r1-distill-llama-70b:free"),
    ("deepseek/deepseek-r1-distill-llama-70b:free", "deepseek/deepseek-r1-distill-qwen-32b:free"),
    ("deepseek/deepseek-r1:free", "deepseek/deepseek-r1-0528-qwen3-8b:free"),
    # generations
    ("meta-llama/llama-3.3-70b-instruct:free", "meta-llama/llama-3.1-70b-instruct:free"),
    ("google/gemma-3-27b-it:free", "google/gemma-2-9b-it:free"),
    ("google/gemma-3-27b-it:free", "google/gemma-3n-e4b-it:free"),
    ("qwen/qwen3-32b:free", "qwen/qwen3.5-27b"),
    ("deepseek/deepseek-v3.1-terminus", "deepseek/deepseek-v3.2"),
    ("mistralai/mistral-small-3.1-24b-instruct:free", "mistralai/mistral-small-3.2-24b-instruct:free"),
    ("anthracite-org/magnum-v2-72b", "anthracite-org/magnum-v4-72b"),
    # tiers and specialisations
    ("google/gemini-2.5-flash", "google/gemini-2.5-pro"),
    ("openai/gpt-4o", "openai/gpt-4o-mini"),
    ("qwen/qwen3-coder:free", "qwen/qwen3-235b-a22b:free"),
    ("qwen/qwen3-vl-8b-instruct", "qwen/qwen3-8b"),
    ("meta-llama/llama-3.2-11b-vision-instruct:free", "meta-llama/llama-3.2-3b-instruct:free"),
    ("meta-llama/llama-4-maverick:free", "meta-llama/llama-4-scout:free"),
    ("mistralai/mistral-7b-instruct:free", "mistralai/mistral-nemo:free"),
    ("perplexity/sonar-reasoning-pro", "perplexity/sonar-pro"),
    # authors
    ("thudm/glm-4-32b", "z-ai/glm-4-32b"),
    ("mistral/ministral-8b", "mistralai/ministral-8b"),
]

EXACT = {
    "meta-llama/llama-3.3-70b-instruct:free": "meta-llama/llama-3.3",
    "google/gemma-3-27b-it:free": "google/gemma-3",
    "qwen/qwen3-235b-a22b-thinking-2507": "qwen/qwen3",
    "qwen/qwen-2.5-coder-32b-instruct:free": "qwen/qwen-2.5-coder",
    "mistralai/mistral-7b-instruct-v0.1": "mistralai/mistral",
    "deepseek/deepseek-r1-0528:free": "deepseek/deepseek-r1",
    "deepseek/deepseek-r1-distill-llama-70b:free": "deepseek/deepseek-r1-distill-llama",
    "deepseek/deepseek-chat-v3.1:free": "deepseek/deepseek-v3.1",
    "anthropic/claude-3-5-haiku-20241022:beta": "anthropic/claude-3.5-haiku",
    "google/gemini-2.5-flash-lite-preview-09-2025": "google/gemini-2.5-flash-lite",
    "openai/o1-preview-2024-09-12": "openai/o1",
    "perplexity/r1-1776": "perplexity/r1-1776",  # 1776 is not a date
    "tencent/hunyuan-a13b-instruct:free": "tencent/hunyuan",
    "eleutherai/llemma_7b": "eleutherai/llemma",
    "~openai/gpt-mini-latest": "~openai/gpt-mini-latest",
    "openrouter/auto": "openrouter/auto",
    "Meta-Llama/Llama-3.3-70B-Instruct": "meta-llama/llama-3.3",
    "llama-3.3-8b": "llama-3.3",  # no author: a family without one
    # other OpenAI-compatible servers: no author, file paths, quantisation tags
    "gemma-3-270m-it-q4_k_m": "gemma-3",
    "/tmp/llama-model/gemma-3-270m-q4_k_m.gguf": "gemma-3",
    "models/Qwen3-8B-IQ3_XS.gguf": "qwen3",
    "llama-3.2-1b-instruct-f16.gguf": "llama-3.2",
}


@pytest.mark.parametrize(("a", "b"), SAME_FAMILY)
def test_same_family(a: str, b: str) -> None:
    assert family_of(a) == family_of(b)


@pytest.mark.parametrize(("a", "b"), DIFFERENT_FAMILY)
def test_different_family(a: str, b: str) -> None:
    assert family_of(a) != family_of(b)


@pytest.mark.parametrize(("model_id", "family"), EXACT.items())
def test_exact_families(model_id: str, family: str) -> None:
    assert family_of(model_id) == family


def test_pairs_are_real_catalog_ids() -> None:
    """The pairs above are taken from the real catalogs, not made up (the last group excepted)."""
    if not ALL_IDS:
        pytest.skip(SKIP_REASON)
    listed = set(ALL_IDS)
    missing = [i for pair in SAME_FAMILY + DIFFERENT_FAMILY for i in pair if i not in listed]
    assert missing == []


def test_split_variant_and_helpers() -> None:
    assert split_variant("a/b:free") == ("a/b", "free")
    assert split_variant("a/b") == ("a/b", None)
    assert split_variant("a/b:") == ("a/b", None)
    assert [t for t in ("70b", "a3b", "e4b", "8x7b", "1.5b", "128k", "1t") if is_size_token(t)] == [
        "70b",
        "a3b",
        "e4b",
        "8x7b",
        "1.5b",
        "128k",
        "1t",
    ]
    assert not any(is_size_token(t) for t in ("r1", "k2", "v3", "3.3", "o3", "m1"))
    assert lineage_tokens("llama-3.3-70b-instruct") == ["llama", "3.3"]
    assert lineage_tokens("") == []


_SIZE_OR_DATE = re.compile(r"(^|-)(\d+(\.\d+)?b|a\d+b|\d+x\d+b|20\d\d-\d\d(-\d\d)?|\d{8})(-|$)")


def test_every_real_id_has_a_clean_family() -> None:
    if not ALL_IDS:
        pytest.skip(SKIP_REASON)
    for model_id in ALL_IDS:
        family = family_of(model_id)
        base, _variant = split_variant(model_id)
        author = base.split("/")[0]
        assert family == family.lower() and ":" not in family, model_id
        assert family.startswith(f"{author}/") and family != f"{author}/", model_id
        assert family == family_of(base), model_id  # the variant never matters
        assert family_of(model_id) == family  # deterministic
        if not model_id.startswith("~"):
            name = family.split("/", 1)[1]
            assert not _SIZE_OR_DATE.search(name), (model_id, family)
            assert not name.endswith(("-instruct", "-it", "-preview", "-exp", "-beta")), (model_id, family)


def test_families_group_the_real_catalogs_sensibly() -> None:
    """Across all real ids: sizes merge, so there are far fewer families than ids."""
    if not ALL_IDS:
        pytest.skip(SKIP_REASON)
    groups: dict[str, set[str]] = {}
    for model_id in ALL_IDS:
        groups.setdefault(family_of(model_id), set()).add(split_variant(model_id)[0])
    assert len(groups) < 0.75 * len({split_variant(i)[0] for i in ALL_IDS})
    assert groups["meta-llama/llama-3.3"] == {
        "meta-llama/llama-3.3-70b-instruct",
        "meta-llama/llama-3.3-8b-instruct",
    }
    assert groups["google/gemma-3"] == {
        "google/gemma-3-1b-it",
        "google/gemma-3-4b-it",
        "google/gemma-3-12b-it",
        "google/gemma-3-27b-it",
    }
    assert {
        "deepseek/deepseek-r1",
        "deepseek/deepseek-r1-0528",
    } == groups["deepseek/deepseek-r1"]
    assert len(groups["qwen/qwen3"]) >= 10


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name[:48]) for p in CATALOGS] or [None])
def test_parsed_families_of_free_models(path: Path | None) -> None:
    if path is None:
        pytest.skip(SKIP_REASON)
    frame = parse_catalog(path.read_bytes(), origin=path.name)
    for model_id, family, is_router in frame.select("model_id", "family", "is_router").iter_rows():
        expected = split_variant(model_id)[0].lower() if is_router else family_of(model_id)
        assert family == expected
    free = frame.filter(pl.col("is_free"))
    by_family = free.group_by("family").agg(pl.col("model_id"))
    # Every family with several free members shares author and lineage, by construction.
    for family, ids in by_family.iter_rows():
        assert all(i.startswith(family.split("/")[0] + "/") for i in ids)

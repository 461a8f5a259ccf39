"""The shipped catalog: OpenRouter's schema as the newest real catalogs show it, and a realistic mix."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from freemodels.errors import ScenarioError
from freemodels.sandbox.catalog import build_catalog, catalog_json, is_free_entry
from freemodels.sandbox.scenario import CatalogChanges
from tests.conftest import catalog_files, shared_fixtures


def _load_real(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    return data["data"] if isinstance(data, dict) else data


def _newest_real_catalog() -> list[dict[str, Any]]:
    shared_fixtures()
    files = catalog_files()
    if not files:
        pytest.skip("no real catalogs in the shared fixtures")
    catalogs = [_load_real(p) for p in files]
    return max(catalogs, key=lambda entries: max(int(m["created"]) for m in entries))


def _entries() -> list[dict[str, Any]]:
    return catalog_json(build_catalog())["data"]


def _type_names(values: list[Any]) -> set[str]:
    return {type(v).__name__ for v in values}


def test_model_objects_have_the_newest_real_key_set() -> None:
    real = _newest_real_catalog()
    real_keys = {frozenset(m) for m in real}
    assert len(real_keys) == 1, "the newest real catalog is expected to be uniform"
    (expected,) = real_keys
    for entry in _entries():
        keys = set(entry)
        # `reasoning` is the documented object of reasoning models, absent elsewhere
        if "reasoning" in keys:
            assert "reasoning" in entry["supported_parameters"], entry["id"]
            assert set(entry["reasoning"]) == {
                "mandatory",
                "default_enabled",
                "default_effort",
                "supported_efforts",
                "supports_max_tokens",
            }
            keys.discard("reasoning")
        assert keys == set(expected), entry["id"]


def test_nested_objects_and_value_types_match_the_real_catalog() -> None:
    real = _newest_real_catalog()
    for nested in ("architecture", "top_provider", "links"):
        real_nested = {frozenset(m[nested]) for m in real}
        for entry in _entries():
            assert frozenset(entry[nested]) in real_nested, (entry["id"], nested)
    real_pricing_keys = set().union(*(m["pricing"] for m in real))
    real_default_keys = set().union(*((m["default_parameters"] or {}) for m in real))
    real_types = defaultdict(set)
    for model in real:
        for key, value in model.items():
            real_types[key].add(type(value).__name__)
    for entry in _entries():
        assert set(entry["pricing"]) <= real_pricing_keys, entry["id"]
        assert all(isinstance(v, str) for v in entry["pricing"].values()), entry["id"]
        assert set(entry["default_parameters"]) <= real_default_keys, entry["id"]
        for key, value in entry.items():
            if key != "reasoning":
                assert type(value).__name__ in real_types[key], (entry["id"], key, value)
        arch = entry["architecture"]
        inputs, outputs = arch["modality"].split("->")
        assert set(inputs.split("+")) == set(arch["input_modalities"])
        assert set(outputs.split("+")) == set(arch["output_modalities"])
        assert entry["links"]["details"] == f"/api/v1/models/{entry['canonical_slug']}/endpoints"


def test_root_is_a_data_list_newest_first_with_the_current_schema_fields() -> None:
    body = catalog_json(build_catalog())
    assert list(body) == ["data", "total_count", "links"]
    assert body["total_count"] == len(body["data"]) and body["links"] == {"next": None}
    created = [m["created"] for m in body["data"]]
    assert created == sorted(created, reverse=True)


def test_pagination_adds_total_count_and_next_link() -> None:
    catalog = build_catalog()
    page = catalog_json(catalog, offset=0, limit=10)
    assert len(page["data"]) == 10
    assert page["total_count"] == len(catalog.models)
    assert page["links"]["next"] == "/api/v1/models?offset=10&limit=10"
    last = catalog_json(catalog, offset=len(catalog.models) - 1, limit=10)
    assert len(last["data"]) == 1 and last["links"]["next"] is None


def _family(model_id: str) -> str:
    author, _, slug = model_id.split(":")[0].partition("/")
    size = r"\d+(\.\d+)?b|a\d+b|e\d+b|it|instruct|vl|v\d+|\d{4}"
    return author + "/" + re.sub(rf"-({size})(?=-|$)", "", slug)


def test_a_realistic_mix_of_models() -> None:
    catalog = build_catalog()
    entries = _entries()
    assert 60 <= len(entries) <= 90
    free = [m for m in entries if m["id"].endswith(":free")]
    assert 25 <= len(free) <= 35
    families = {_family(m["id"]) for m in free}
    assert 12 <= len(families) <= 20
    sizes = defaultdict(set)
    for model in free:
        sizes[_family(model["id"])].add(model["id"])
    assert sum(1 for ids in sizes.values() if len(ids) >= 2) >= 4  # several families in 2-4 sizes
    assert {"meta-llama/llama-3.3-70b-instruct:free", "meta-llama/llama-3.3-8b-instruct:free"} <= set(
        catalog.models
    )
    by_id = {m["id"]: m for m in entries}
    auto, router = by_id["openrouter/auto"], by_id["openrouter/free"]
    assert auto["pricing"]["prompt"] == "-1" and auto["architecture"]["tokenizer"] == "Router"
    assert router["pricing"] == {"prompt": "0", "completion": "0"}
    assert router["architecture"]["tokenizer"] == "Router"
    zero_priced = [m["id"] for m in entries if is_free_entry(m) and not m["id"].endswith(":free")]
    assert "openrouter/owl-alpha" in zero_priced and "openrouter/free" in zero_priced
    assert not is_free_entry(auto)
    paid = [m for m in entries if not is_free_entry(m)]
    assert len(paid) >= 30
    assert all(Decimal(m["pricing"]["prompt"]) > 0 for m in paid if m["id"] != "openrouter/auto")
    assert sum(1 for m in entries if m["expiration_date"]) >= 2
    reasoning = [m for m in entries if "reasoning" in m]
    assert len(reasoning) >= 8
    assert all({"reasoning", "include_reasoning"} <= set(m["supported_parameters"]) for m in reasoning)
    assert any(m["architecture"]["modality"] == "text+image->text" for m in free)
    assert any("tools" in m["supported_parameters"] for m in free)
    assert any("structured_outputs" in m["supported_parameters"] for m in free)


def test_paid_counterparts_are_generated_from_free_rows() -> None:
    by_id = {m["id"]: m for m in _entries()}
    free, paid = by_id["qwen/qwen3-coder:free"], by_id["qwen/qwen3-coder"]
    assert paid["name"] == free["name"].removesuffix(" (free)")
    assert paid["canonical_slug"] == free["canonical_slug"]
    assert Decimal(paid["pricing"]["completion"]) > 0
    assert set(free["supported_parameters"]) < set(paid["supported_parameters"])


def test_catalog_changes_remove_add_and_end_free_variants() -> None:
    changes = CatalogChanges(
        remove=("qwen/qwen3-4b:free",),
        add_free=("acme/brand-new-7b:free",),
        paid=("google/gemma-3-4b-it:free", "google/gemma-3-27b-it:free"),
    )
    catalog = build_catalog(changes)
    assert "qwen/qwen3-4b:free" not in catalog.models
    added = catalog.models["acme/brand-new-7b:free"]
    assert added.free and added.entry["name"] == "Acme: Brand New 7b (free)"
    assert added.entry["created"] == max(m.entry["created"] for m in catalog.models.values())
    assert "google/gemma-3-4b-it:free" not in catalog.models
    assert catalog.ended_free == {
        "google/gemma-3-4b-it:free": "google/gemma-3-4b-it",
        "google/gemma-3-27b-it:free": "google/gemma-3-27b-it",
    }
    synthesized = catalog.models["google/gemma-3-4b-it"]  # no paid row in the table: made up
    assert not synthesized.free and Decimal(synthesized.entry["pricing"]["prompt"]) > 0


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        (CatalogChanges(remove=("acme/none:free",)), "catalog.remove"),
        (CatalogChanges(paid=("acme/none:free",)), "catalog.paid"),
        (CatalogChanges(add_free=("qwen/qwen3-4b:free",)), "already in the sandbox catalog"),
    ],
)
def test_bad_catalog_changes_are_scenario_errors(changes: CatalogChanges, needle: str) -> None:
    with pytest.raises(ScenarioError, match=needle):
        build_catalog(changes)

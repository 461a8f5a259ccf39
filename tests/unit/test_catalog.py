"""Catalog parsing and the free rule: every real catalog, malformed input, and the edge cases."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from freemodels.catalog import (
    CatalogSummary,
    classify_free,
    parse_catalog,
    parse_catalog_with_notes,
    summarize,
)
from freemodels.errors import CatalogError
from freemodels.records import CATALOG_SCHEMA
from tests.conftest import SKIP_REASON, catalog_files

CATALOGS = catalog_files()
CATALOG_PARAMS = [pytest.param(p, id=p.name[:48]) for p in CATALOGS] or [
    pytest.param(None, marks=pytest.mark.skip(reason=SKIP_REASON), id="no-shared-fixtures")
]

# From the fixtures' SOURCES.md (counted by whoever collected them): models, ids ending ':free'.
SOURCES_COUNTS = {
    "ClaudelMbz__web3-opps-tracker": (318, 55),
    "RemoteViewerchallenge__domoreai__apps__api": (338, 30),
    "RemoteViewerchallenge__domoreai__openrouter_models": (341, 45),
    "RooVetGit__Roo-Code": (320, 70),
    "houssemdub__OmegaAiAgent": (344, 33),
    "realityinspector__hermitbench-fastapi": (320, 69),
    "simonw__llm-openrouter__tests__cassettes__test_llm_openrouter__test_llm_models@0af93863": (194, 20),
    "simonw__llm-openrouter__tests__cassettes__test_llm_openrouter__test_llm_models@1d105c2e": (302, 60),
    "simonw__llm-openrouter__tests__cassettes__test_llm_openrouter__test_llm_models@52f95b47": (320, 54),
    "sinkers__aiscanner": (368, 25),
    "skissue__gptel-openrouter-models": (344, 25),
}


# ------------------------------------------------------------------------------------------------
# An independent reading of the rule, written from the issue text with plain json.


def _load_models(path: Path) -> list[dict[str, Any]]:
    text = path.read_bytes().decode("utf-8-sig")
    document = json.loads(text)
    return document["data"] if isinstance(document, dict) else document


def _numeric_prices(pricing: dict[str, Any] | None) -> list[float]:
    out = []
    for value in (pricing or {}).values():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not isinstance(value, bool) and math.isfinite(number):
            out.append(number)
    return out


def _reference(models: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Sets of ids: routers, free by suffix, free by zero price."""
    routers, suffix, zero = set(), set(), set()
    for model in models:
        model_id = model["id"]
        prices = _numeric_prices(model.get("pricing"))
        tokenizer = (model.get("architecture") or {}).get("tokenizer")
        if tokenizer == "Router" or model_id.startswith("~") or any(p < 0 for p in prices):
            routers.add(model_id)
        elif model_id.endswith(":free"):
            suffix.add(model_id)
        elif prices and all(p == 0 for p in prices):
            zero.add(model_id)
    return {"routers": routers, "suffix": suffix, "zero": zero}


def _sources_counts(path: Path) -> tuple[int, int]:
    matches = [v for k, v in SOURCES_COUNTS.items() if path.name.startswith(k)]
    assert len(matches) == 1, f"no SOURCES.md counts for {path.name}"
    return matches[0]


# ------------------------------------------------------------------------------------------------
# Every shared catalog


@pytest.mark.parametrize("path", CATALOG_PARAMS)
def test_every_shared_catalog_parses_to_the_schema(path: Path) -> None:
    models = _load_models(path)
    frame = parse_catalog(path.read_bytes(), origin=path.name)
    assert frame.schema == pl.Schema(CATALOG_SCHEMA)
    assert frame.get_column("model_id").to_list() == [m["id"] for m in models]
    assert frame.get_column("family").null_count() == 0
    assert frame.get_column("is_free").null_count() == 0
    assert frame.get_column("is_router").null_count() == 0


@pytest.mark.parametrize("path", CATALOG_PARAMS)
def test_free_rule_matches_an_independent_count(path: Path) -> None:
    reference = _reference(_load_models(path))
    frame = parse_catalog(path.read_bytes(), origin=path.name)

    def ids(expr: pl.Expr) -> set[str]:
        return set(frame.filter(expr).get_column("model_id").to_list())

    assert ids(pl.col("is_router")) == reference["routers"]
    assert ids(pl.col("free_rule") == "suffix") == reference["suffix"]
    assert ids(pl.col("free_rule") == "zero_price") == reference["zero"]
    assert ids(pl.col("is_free")) == reference["suffix"] | reference["zero"]

    summary = summarize(frame)
    assert summary.models == frame.height
    assert summary.routers == len(reference["routers"])
    assert summary.free_suffix == len(reference["suffix"])
    assert summary.free_zero_price == len(reference["zero"])
    assert summary.free == summary.free_suffix + summary.free_zero_price
    free_families = set(frame.filter(pl.col("is_free")).get_column("family").to_list())
    assert summary.families == len(free_families)
    assert 0 < summary.families <= summary.free


@pytest.mark.parametrize("path", CATALOG_PARAMS)
def test_counts_agree_with_the_fixture_sources(path: Path) -> None:
    models, free_ids = _sources_counts(path)
    summary = summarize(parse_catalog(path.read_bytes(), origin=path.name))
    assert summary.models == models
    assert summary.free_suffix == free_ids


@pytest.mark.parametrize("path", CATALOG_PARAMS)
def test_prices_and_pricing_json_follow_the_file(path: Path) -> None:
    models = {m["id"]: m for m in _load_models(path)}
    frame = parse_catalog(path.read_bytes(), origin=path.name)
    for row in frame.select("model_id", "price_prompt", "price_completion", "pricing_json").iter_rows():
        model_id, prompt, completion, pricing_json = row
        pricing = models[model_id]["pricing"]
        assert prompt == float(pricing["prompt"])
        assert completion == float(pricing["completion"])
        assert json.loads(pricing_json) == pricing


@pytest.mark.parametrize("path", CATALOG_PARAMS)
def test_routers_are_never_free_and_keep_their_own_family(path: Path) -> None:
    frame = parse_catalog(path.read_bytes(), origin=path.name)
    routers = frame.filter(pl.col("is_router"))
    assert routers.height >= 1
    assert not routers.get_column("is_free").any()
    assert routers.get_column("free_rule").null_count() == routers.height
    for model_id, family in routers.select("model_id", "family").iter_rows():
        assert family == model_id.split(":")[0].lower()
    auto = frame.filter(pl.col("model_id") == "openrouter/auto").row(0, named=True)
    assert auto["is_router"] and auto["price_prompt"] == -1.0


def test_router_kinds_in_the_newest_catalog() -> None:
    path = next((p for p in CATALOGS if p.name.startswith("sinkers__aiscanner")), None)
    if path is None:
        pytest.skip(SKIP_REASON)
    frame = parse_catalog(path.read_bytes(), origin=path.name)
    routers = set(frame.filter(pl.col("is_router")).get_column("model_id").to_list())
    # A zero-priced router, a priced '~' alias and a "-1" router: all counted apart.
    assert {"openrouter/free", "~anthropic/claude-haiku-latest", "openrouter/auto"} <= routers
    # A zero-priced model that is not a router is free by zero price.
    assert _row(frame, "openrouter/owl-alpha")["free_rule"] == "zero_price"


def test_bom_catalog_and_bare_arrays_parse() -> None:
    if not CATALOGS:
        pytest.skip(SKIP_REASON)
    bom = next(p for p in CATALOGS if p.name.startswith("ClaudelMbz"))
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")
    assert parse_catalog(bom.read_bytes()).height == 318
    bare = next(p for p in CATALOGS if p.name.startswith("skissue"))
    assert bare.read_bytes().lstrip().startswith(b"[")
    assert parse_catalog(bare.read_bytes()).height == 344


def test_oldest_catalog_derives_modalities_and_leaves_capabilities_unknown() -> None:
    path = next((p for p in CATALOGS if "0af93863" in p.name), None)
    if path is None:
        pytest.skip(SKIP_REASON)
    frame = parse_catalog(path.read_bytes(), origin=path.name)
    row = frame.filter(pl.col("model_id") == "raifle/sorcererlm-8x22b").row(0, named=True)
    assert row["modality"] == "text->text"
    assert row["input_modalities"] == ["text"] and row["output_modalities"] == ["text"]
    assert row["supported_parameters"] is None
    assert row["supports_tools"] is None
    assert row["canonical_slug"] is None
    assert row["context_length"] == 16000


# ------------------------------------------------------------------------------------------------
# Synthetic catalogs


def _model(model_id: str, **fields: Any) -> dict[str, Any]:
    model: dict[str, Any] = {
        "id": model_id,
        "name": model_id,
        "created": 1_700_000_000,
        "context_length": 8192,
        "architecture": {"modality": "text->text", "tokenizer": "Llama3", "instruct_type": None},
        "pricing": {"prompt": "0.000001", "completion": "0.000002"},
        "top_provider": {"context_length": 8192, "max_completion_tokens": 4096, "is_moderated": False},
        "supported_parameters": ["max_tokens", "temperature"],
    }
    model.update(fields)
    return model


def _parse(*models: Any, bare: bool = False) -> pl.DataFrame:
    body = list(models) if bare else {"data": list(models)}
    return parse_catalog(json.dumps(body), origin="t.json")


def _row(frame: pl.DataFrame, model_id: str) -> dict[str, Any]:
    return frame.filter(pl.col("model_id") == model_id).row(0, named=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "t.json: empty; expected a JSON catalog"),
        (b"   \n", "t.json: empty; expected a JSON catalog"),
        (b"<html>", "t.json: not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'{"data": [', "t.json: not JSON: Expecting value: line 1 column 11 (char 10)"),
        (b"\xff\xfe{}", "t.json: not UTF-8 text (byte 0 cannot be decoded)"),
        (b'"models"', "t.json: top level is a string; expected an object with 'data' or a list"),
        (b"42", "t.json: top level is a number; expected an object with 'data' or a list"),
        (b"null", "t.json: top level is null; expected an object with 'data' or a list"),
        (
            b'{"models": []}',
            "t.json: top level is an object without 'data' (keys: 'models'); "
            "expected an object with 'data' or a list",
        ),
        (b'{"data": {"id": "a/b"}}', "t.json: 'data' is an object; expected a list of models"),
        (
            b'{"data": ["a/b"]}',
            "t.json: its only entry is not a model (1 entry skipped: a string, not an object (data[0]))",
        ),
        (
            b'{"data": [{"id": 7}, {"name": "x"}, [], {"id": "  "}, {"id": null}]}',
            "t.json: none of its 5 entries is a model (5 entries skipped: id is a number, not a string "
            "(data[0]); no id (data[1], data[4]); a list, not an object (data[2]); empty id (data[3]))",
        ),
    ],
)
def test_malformed_input_is_one_clear_error(raw: bytes, message: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(raw, origin="t.json")
    assert str(info.value) == message
    assert info.value.__cause__ is None  # no chained traceback to show


@pytest.mark.parametrize(
    ("raw", "note"),
    [
        (
            b'{"data": [{"id": "a/b"}, {"name": "x"}, {"id": "c/d"}, {}]}',
            "t.json: 2 entries skipped: no id (data[1], data[3])",
        ),
        (b'[{"id": "a/b"}, ["a/c"]]', "t.json: 1 entry skipped: a list, not an object ([1])"),
        (
            b'[{"id": "a/b"}, 1, 2, 3, 4, {"id": 5}]',
            "t.json: 5 entries skipped: a number, not an object ([1], [2], [3], ...); "
            "id is a number, not a string ([5])",
        ),
    ],
)
def test_one_bad_entry_is_skipped_and_counted_not_a_bad_catalog(raw: bytes, note: str) -> None:
    frame, notes = parse_catalog_with_notes(raw, origin="t.json")
    assert frame.get_column("model_id").to_list() == ["a/b", "c/d"][: frame.height]
    assert frame.height >= 1
    assert notes == [note]


def test_empty_data_list_gives_an_empty_frame_with_the_schema() -> None:
    for raw in (b'{"data": []}', b"[]"):
        frame = parse_catalog(raw)
        assert frame.height == 0
        assert frame.schema == pl.Schema(CATALOG_SCHEMA)
        assert summarize(frame) == CatalogSummary(0, 0, 0, 0, 0, 0)


def test_bom_is_accepted_as_bytes_and_as_text() -> None:
    body = json.dumps({"data": [_model("a/m:free")]})
    assert parse_catalog(b"\xef\xbb\xbf" + body.encode()).height == 1
    assert parse_catalog("\ufeff" + body).height == 1


def test_minimal_entries_and_extra_fields_parse() -> None:
    frame = _parse({"id": "x/only-an-id"}, {"id": "y/extra", "isFree": True, "providerId": 3}, bare=True)
    row = _row(frame, "x/only-an-id")
    assert row["pricing_json"] is None and row["price_prompt"] is None
    assert row["is_free"] is False and row["is_router"] is False and row["free_rule"] is None
    assert row["author"] == "x" and row["family"] == "x/only-an-id"
    assert row["input_modalities"] is None and row["tokenizer"] is None
    # An app's own "isFree" flag is not OpenRouter's and changes nothing.
    assert _row(frame, "y/extra")["is_free"] is False


@pytest.mark.parametrize(
    ("model_id", "tokenizer", "pricing", "expected"),
    [
        ("a/m:free", "Llama3", {"prompt": "0", "completion": "0"}, (False, "suffix")),
        ("a/m:free", "Llama3", {"prompt": "0.1", "completion": "0.2"}, (False, "suffix")),
        ("a/m", "Llama3", {"prompt": "0", "completion": "0"}, (False, "zero_price")),
        ("a/m", "Llama3", {"prompt": 0, "completion": 0.0}, (False, "zero_price")),
        ("a/m", "Llama3", {"prompt": "0"}, (False, "zero_price")),  # sparse keys
        ("a/m", "Llama3", {"prompt": "0", "completion": "0", "request": "0.01"}, (False, None)),
        ("a/m", "Llama3", {"prompt": "0", "completion": "0", "web_search": "0.004"}, (False, None)),
        ("a/m", "Llama3", {"prompt": "0", "completion": "0", "discount": 0.5}, (False, "zero_price")),
        (
            "a/m",
            "Llama3",
            {"prompt": "0", "completion": "0", "overrides": [{"prompt": "1"}]},
            (False, "zero_price"),
        ),
        ("a/m", "Llama3", {"prompt": "0", "completion": "n/a"}, (False, "zero_price")),
        ("a/m", "Llama3", {"prompt": "free"}, (False, None)),  # no price at all
        ("a/m", "Llama3", {}, (False, None)),
        ("a/m", "Llama3", None, (False, None)),
        ("a/m", "Llama3", {"prompt": "-1", "completion": "-1"}, (True, None)),
        ("a/m:free", "Llama3", {"prompt": "0", "completion": "-1"}, (True, None)),
        ("a/m", "Llama3", {"prompt": "0", "completion": "0", "image": -1}, (True, None)),
        ("openrouter/free", "Router", {"prompt": "0", "completion": "0"}, (True, None)),
        ("~a/m-latest", "Other", {"prompt": "0", "completion": "0"}, (True, None)),
        ("a/m", "Llama3", {"prompt": "NaN", "completion": "0"}, (False, "zero_price")),
        ("a/m", "Llama3", {"prompt": True, "completion": "0"}, (False, "zero_price")),
    ],
)
def test_free_rule(
    model_id: str, tokenizer: str, pricing: dict[str, Any] | None, expected: tuple[bool, str | None]
) -> None:
    assert classify_free(model_id, tokenizer, pricing) == expected
    row = _row(_parse(_model(model_id, pricing=pricing, architecture={"tokenizer": tokenizer})), model_id)
    assert (row["is_router"], row["free_rule"]) == expected
    assert row["is_free"] is (expected[1] is not None)


def test_prices_as_strings_numbers_and_sentinels() -> None:
    frame = _parse(
        _model("a/s", pricing={"prompt": "0.0000015", "completion": "2e-6", "request": "0", "image": "0.01"}),
        _model("a/n", pricing={"prompt": 0.5, "completion": 1, "image": None}),
        _model("a/r", pricing={"prompt": "-1", "completion": "-1"}),
    )
    s, n, r = _row(frame, "a/s"), _row(frame, "a/n"), _row(frame, "a/r")
    assert (s["price_prompt"], s["price_completion"], s["price_request"], s["price_image"]) == (
        1.5e-6,
        2e-6,
        0.0,
        0.01,
    )
    assert (n["price_prompt"], n["price_completion"], n["price_request"], n["price_image"]) == (
        0.5,
        1.0,
        None,
        None,
    )
    assert r["price_prompt"] == -1.0 and r["is_router"]
    assert json.loads(s["pricing_json"]) == {
        "prompt": "0.0000015",
        "completion": "2e-6",
        "request": "0",
        "image": "0.01",
    }
    assert " " not in s["pricing_json"]


def test_columns_from_nested_objects() -> None:
    frame = _parse(
        _model(
            "acme/big-70b-instruct:nitro",
            canonical_slug="acme/big-70b-instruct-2025",
            context_length=None,
            top_provider={"context_length": 65536, "max_completion_tokens": 2048, "is_moderated": True},
            architecture={
                "modality": "text+image->text",
                "input_modalities": ["text", "image", "file"],
                "output_modalities": ["text"],
                "tokenizer": "Other",
                "instruct_type": "chatml",
            },
            supported_parameters=["tools", "tool_choice", "response_format", "reasoning"],
            expiration_date="2026-01-31",
            hugging_face_id="",
            created=1.7e9,
        )
    )
    row = _row(frame, "acme/big-70b-instruct:nitro")
    assert row["variant"] == "nitro" and row["author"] == "acme" and row["family"] == "acme/big"
    assert row["canonical_slug"] == "acme/big-70b-instruct-2025"
    assert row["context_length"] == 65536  # the top provider's, when the model gives none
    assert row["max_completion_tokens"] == 2048 and row["is_moderated"] is True
    assert row["input_modalities"] == ["text", "image", "file"] and row["output_modalities"] == ["text"]
    assert (row["tokenizer"], row["instruct_type"], row["modality"]) == (
        "Other",
        "chatml",
        "text+image->text",
    )
    assert row["supports_tools"] and row["supports_structured_outputs"] and row["supports_reasoning"]
    assert row["expiration_date"] == "2026-01-31"
    assert row["hugging_face_id"] is None
    assert row["created"] == 1_700_000_000


def test_capability_flags() -> None:
    frame = _parse(
        _model("a/plain", supported_parameters=["max_tokens"]),
        _model("a/structured", supported_parameters=["structured_outputs"]),
        _model("a/reasoning-object", supported_parameters=["max_tokens"], reasoning={"mandatory": False}),
        _model("a/unknown", supported_parameters=None),
        _model("a/unknown-but-reasons", supported_parameters=None, reasoning={"mandatory": True}),
    )

    def flags(model_id: str) -> tuple[bool | None, ...]:
        row = _row(frame, model_id)
        return row["supports_tools"], row["supports_structured_outputs"], row["supports_reasoning"]

    assert flags("a/plain") == (False, False, False)
    assert flags("a/structured") == (False, True, False)
    assert flags("a/reasoning-object") == (False, False, True)
    assert flags("a/unknown") == (None, None, None)
    assert flags("a/unknown-but-reasons") == (None, None, True)


def test_null_nested_objects_and_wrong_types_do_not_break_parsing() -> None:
    frame = _parse(
        {
            "id": "a/odd",
            "name": 5,
            "created": "1700000000",
            "context_length": "lots",
            "top_provider": {"context_length": 1e30, "max_completion_tokens": 2**64},
            "architecture": None,
            "pricing": ["0"],
            "supported_parameters": "tools",
        },
        {"id": "a/nulls", "architecture": None, "top_provider": None, "pricing": None, "reasoning": None},
    )
    nulls = _row(frame, "a/nulls")
    assert nulls["is_free"] is False and nulls["supports_reasoning"] is None and nulls["is_moderated"] is None
    row = _row(frame, "a/odd")
    assert row["name"] is None and row["created"] == 1_700_000_000 and row["context_length"] is None
    assert row["pricing_json"] is None and row["is_free"] is False
    assert row["supported_parameters"] is None and row["max_completion_tokens"] is None


def test_duplicate_ids_keep_the_first_entry_and_are_noted() -> None:
    body = json.dumps({"data": [_model("a/m", name="first"), _model("b/n"), _model("a/m", name="second")]})
    frame, notes = parse_catalog_with_notes(body, origin="t.json")
    assert frame.get_column("model_id").to_list() == ["a/m", "b/n"]
    assert _row(frame, "a/m")["name"] == "first"
    assert notes == ["t.json: 1 duplicate entries dropped (first kept): a/m"]
    assert parse_catalog_with_notes(json.dumps([_model("a/m")]))[1] == []


def test_summary_counts_and_json_shape() -> None:
    frame = _parse(
        _model("meta-llama/llama-3.3-70b-instruct:free"),
        _model("meta-llama/llama-3.3-8b-instruct:free"),
        _model("google/gemma-3-27b-it", pricing={"prompt": "0", "completion": "0"}),
        _model("google/gemma-3-27b-it:free"),
        _model("openai/gpt-4o"),
        _model("openrouter/auto", pricing={"prompt": "-1", "completion": "-1"}),
        _model(
            "openrouter/free",
            pricing={"prompt": "0", "completion": "0"},
            architecture={"tokenizer": "Router"},
        ),
    )
    summary = summarize(frame)
    assert list(summary.as_json()) == [
        "models",
        "free",
        "free_suffix",
        "free_zero_price",
        "routers",
        "families",
    ]
    assert summary.as_json() == {
        "models": 7,
        "free": 4,
        "free_suffix": 3,
        "free_zero_price": 1,
        "routers": 2,
        "families": 2,  # meta-llama/llama-3.3 and google/gemma-3
    }
    assert "7 models: 4 free" in summary.as_text()


def test_a_large_catalog_parses_completely() -> None:
    """20,000 models in one pass (speed is measured by bench/bench_scale.py, not here)."""
    template = _model("x/y", description="d" * 200, reasoning={"mandatory": False})
    models = [
        dict(template, id=f"author{i % 50}/model-{i}-{i % 7}b-instruct{':free' if i % 9 == 0 else ''}")
        for i in range(20_000)
    ]
    raw = json.dumps({"data": models}).encode()
    frame = parse_catalog(raw)
    assert frame.height == 20_000
    assert summarize(frame).free_suffix == len(range(0, 20_000, 9))

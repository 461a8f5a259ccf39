"""Hostile catalogs: whatever a server sends as ``GET /models``, the parser returns a frame with the
catalog schema or raises :class:`CatalogError` with one clear line, and the steps after it hold up."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from freemodels.catalog import parse_catalog, parse_catalog_with_notes, summarize
from freemodels.errors import CatalogError
from freemodels.families import family_of
from freemodels.records import CATALOG_SCHEMA
from freemodels.secrets import untrusted
from tasks.filter_free import families, free_models

# Text as hostile as JSON can carry: control characters, bidi overrides, Markdown, HTML, odd digits.
HOSTILE_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from(list("\x00\x01\x1b\x7f\u202e\u2028\ufeff²³٣|`*_[]()<>&#:/~-.\\\"' \n\t")),
    max_size=30,
)
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | HOSTILE_TEXT
    | st.sampled_from(["0", "-1", "0.000001", "1e400", "NaN", "-0", " 7 ", "1_0", "9" * 5000])
)
JSON = st.recursive(
    LEAF,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(HOSTILE_TEXT, children, max_size=4),
    max_leaves=20,
)
MODEL_ID = HOSTILE_TEXT.filter(str.strip) | st.sampled_from(
    ["a/b:free", "~anthropic/claude-latest", "openrouter/auto", "x/y-²³:free", "/", ":", "a/b/c.gguf:free"]
)
PRICES = st.dictionaries(
    st.sampled_from(["prompt", "completion", "request", "image", "discount", "overrides", "web_search"]),
    LEAF | st.lists(LEAF, max_size=2),
    max_size=5,
)
MODEL = st.fixed_dictionaries(
    {"id": MODEL_ID},
    optional={
        "name": JSON,
        "description": JSON,
        "canonical_slug": JSON,
        "created": JSON,
        "context_length": JSON,
        "pricing": PRICES | JSON,
        "architecture": st.fixed_dictionaries(
            {},
            optional={
                "tokenizer": st.just("Router") | JSON,
                "modality": st.sampled_from(["text->text", "->", "+->+", "text+image->"]) | JSON,
                "input_modalities": JSON,
                "output_modalities": JSON,
                "instruct_type": JSON,
            },
        )
        | JSON,
        "top_provider": st.fixed_dictionaries(
            {}, optional={"context_length": JSON, "max_completion_tokens": JSON, "is_moderated": JSON}
        )
        | JSON,
        "supported_parameters": st.lists(JSON, max_size=4) | JSON,
        "reasoning": JSON,
        "expiration_date": JSON,
        "hugging_face_id": JSON,
    },
)


def _parse_or_clear_error(raw: bytes | str) -> pl.DataFrame | None:
    """The frame, or None after checking that the error is the project's own, in one line."""
    try:
        frame = parse_catalog(raw, origin="hostile.json")
    except CatalogError as exc:
        message = str(exc)
        assert message.startswith("hostile.json: ") and "\n" not in message.strip(), message
        return None
    assert dict(frame.schema) == dict(CATALOG_SCHEMA)
    return frame


def _downstream(frame: pl.DataFrame) -> None:
    """The steps right after the parser, on whatever it produced."""
    assert not (frame.get_column("is_free") & frame.get_column("is_router")).any()
    free = free_models(frame, max_models=3)
    assert free.height <= 3 and set(free.get_column("model_id")) <= set(frame.get_column("model_id"))
    grouped = families(free_models(frame))
    assert sum(len(ids) for ids in grouped.values()) == free_models(frame).height
    summary = summarize(frame)
    assert summary.models == frame.height and summary.free + summary.routers <= frame.height


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
@example(b"\xef\xbb\xbf")
@example(b"[" * 100_000)
@example(b'{"data": [{"id": "a/b:free"}]}\xff')
def test_any_bytes_parse_or_raise_a_catalog_error(raw: bytes) -> None:
    frame = _parse_or_clear_error(raw)
    if frame is not None:
        _downstream(frame)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_document_parses_or_raises_a_catalog_error(document: Any) -> None:
    frame = _parse_or_clear_error(json.dumps(document, allow_nan=True))
    if frame is not None:
        _downstream(frame)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MODEL, max_size=6), st.booleans())
@example([{"id": "x/y-²³:free", "context_length": "9" * 5000, "created": 2**70}], True)
@example([{"id": "a/b:free", "pricing": {"prompt": "1e400", "completion": "NaN", "overrides": [1]}}], False)
@example([{"id": "a/b:free"}, {"id": " "}], True)
@example([{"id": "a/b:free"}, {"id": 7}], True)
def test_catalogs_of_hostile_models_parse_or_raise_a_catalog_error(
    models: list[dict[str, Any]], wrapped: bool
) -> None:
    document: Any = {"data": models} if wrapped else models
    frame = _parse_or_clear_error(json.dumps(document, allow_nan=True))
    event("parsed" if frame is not None else "refused")
    if frame is None:
        return
    readable = [m["id"] for m in models if isinstance(m["id"], str) and m["id"].strip()]
    ids = [untrusted(i) for i in readable]
    # An entry that cannot be read is skipped and counted; the others keep their ids byte for byte
    # (but for what the redaction point replaces), first occurrence wins, in the catalog's order.
    assert frame.get_column("model_id").to_list() == list(dict.fromkeys(ids))
    _frame, notes = parse_catalog_with_notes(json.dumps(document, allow_nan=True))
    skipped = len(models) - len(readable)
    assert len(notes) == (skipped > 0) + (len(set(ids)) < len(ids))
    if skipped:
        assert f"{skipped} {'entry' if skipped == 1 else 'entries'} skipped: " in notes[0]
    for column in ("context_length", "created", "max_completion_tokens"):
        values = [v for v in frame.get_column(column).to_list() if v is not None]
        assert all(-(2**63) <= v < 2**63 for v in values)
    _downstream(frame)


@settings(max_examples=500, deadline=None)
@given(MODEL_ID)
@example("x/y-²³")
@example("a/b-٣٣-0528:free")
def test_every_model_id_has_a_family(model_id: str) -> None:
    family = family_of(model_id)
    assert isinstance(family, str)


@pytest.mark.parametrize("depth", [10, 900, 50_000])
def test_deeply_nested_documents_are_a_clear_error_or_a_frame(depth: int) -> None:
    raw = '{"data": [{"id": "a/b:free", "x": ' + "[" * depth + "]" * depth + "}]}"
    frame = _parse_or_clear_error(raw)
    assert frame is None or frame.get_column("model_id").to_list() == ["a/b:free"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.text(
            alphabet=st.characters(codec=None)
            | st.sampled_from(["\ud800", "\udfff", "\ufffe", "\uffff", "{", "}"]),
            min_size=1,
            max_size=12,
        ),
        min_size=1,
        max_size=5,
    )
)
@example(["evil/\ud800:free", "{ctx.client.auth.secret}", "\ufdd0\U0001fffe"])
def test_text_that_is_not_valid_unicode_is_made_valid_and_can_be_written(
    tmp_path_factory: pytest.TempPathFactory, ids: list[str]
) -> None:
    # JSON escapes (\ud800) decode to lone surrogates; a catalog holding them made every writer fail.
    entries = [
        {"id": f"x/{i}-{t}:free", "name": t, "description": t, "supported_parameters": [t]}
        for i, t in enumerate(ids)
    ]
    frame = parse_catalog(json.dumps({"data": entries, "x": "\ud800"}))
    assert frame.height == len(ids)
    text = json.dumps(frame.to_dicts(), default=str, ensure_ascii=False)
    text.encode("utf-8")
    assert not any(c in text for c in ("\ufffe", "\uffff", "\ufdd0", "\U0001fffe"))
    frame.write_parquet(tmp_path_factory.mktemp("pq") / "catalog.parquet")

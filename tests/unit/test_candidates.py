"""Candidate ids the catalog may not list: suggestions, classification, the candidates file."""

from __future__ import annotations

from pathlib import Path

import pytest

from freemodels.candidates import (
    CatalogIndex,
    classify_candidate,
    is_well_formed,
    paid_slug_of,
    read_candidates,
    suggest_ids,
)
from freemodels.catalog import model_ids, parse_catalog
from freemodels.errors import ConfigError
from freemodels.failures import Failure
from tests.conftest import SKIP_REASON, catalog_files

CATALOG = [
    "meta-llama/llama-3.3-70b-instruct",
    "meta-llama/llama-3.3-70b-instruct:free",
    "meta-llama/llama-3.3-8b-instruct:free",
    "meta-llama/llama-3.1-8b-instruct",
    "meta-llama/llama-3.1-8b-instruct:free",
    "google/gemma-3-27b-it",
    "google/gemma-3-27b-it:free",
    "google/gemma-3-4b-it:free",
    "deepseek/deepseek-r1",
    "deepseek/deepseek-r1:free",
    "deepseek/deepseek-r1-0528:free",
    "deepseek/deepseek-r1-distill-llama-70b:free",
    "anthropic/claude-3-opus",
    "mistralai/mistral-7b-instruct",
    "mistralai/mistral-7b-instruct:free",
    "mistralai/mistral-7b-instruct:nitro",
    "openai/gpt-5",
    "openrouter/auto",
]


def _real_catalog(prefix: str) -> list[str]:
    path = next((p for p in catalog_files() if p.name.startswith(prefix)), None)
    if path is None:
        pytest.skip(SKIP_REASON)
    return model_ids(parse_catalog(path.read_bytes(), origin=path.name))


def test_announced_short_name_points_at_the_real_free_id() -> None:
    assert suggest_ids("llama-3.3-8b", CATALOG)[0] == "meta-llama/llama-3.3-8b-instruct:free"


def test_announced_short_name_on_real_catalogs() -> None:
    ids = _real_catalog("RemoteViewerchallenge__domoreai__openrouter_models")
    assert suggest_ids("llama-3.3-8b", ids)[0] == "meta-llama/llama-3.3-8b-instruct:free"
    assert classify_candidate("llama-3.3-8b", ids) == (
        Failure.WRONG_MODEL_ID,
        suggest_ids("llama-3.3-8b", ids),
    )
    ids = _real_catalog("sinkers__aiscanner")
    assert suggest_ids("gemma-3-27b", ids)[0] == "google/gemma-3-27b-it"  # no free variant here
    assert suggest_ids("gemma-4-31b", ids)[0] == "google/gemma-4-31b-it:free"
    assert classify_candidate("acme/brand-new-model-9000:free", ids) == (Failure.NO_ENDPOINTS, [])


@pytest.mark.parametrize(
    ("candidate", "first"),
    [
        ("llama-3.3-70b", "meta-llama/llama-3.3-70b-instruct:free"),  # :free preferred
        ("meta/llama-3.3-8b-instruct", "meta-llama/llama-3.3-8b-instruct:free"),  # wrong author
        ("meta-llama/lama-3.3-70b-instruct", "meta-llama/llama-3.3-70b-instruct:free"),  # typo
        ("Meta-Llama/Llama-3.3-70B-Instruct", "meta-llama/llama-3.3-70b-instruct:free"),  # case
        ("deepseek-r1", "deepseek/deepseek-r1:free"),
        ("deepseek/deepseek-r1-0529:free", "deepseek/deepseek-r1-0528:free"),
        ("gemma-3-4b", "google/gemma-3-4b-it:free"),
        ("mistralai/mistral-7b-instruct-v0.4", "mistralai/mistral-7b-instruct:free"),
        ("mistralai/mistral-7b:nitro", "mistralai/mistral-7b-instruct:nitro"),  # own variant kept
        ("google/gemma-3-27b-it:nitro", "google/gemma-3-27b-it:free"),
    ],
)
def test_first_suggestion(candidate: str, first: str) -> None:
    suggestions = suggest_ids(candidate, CATALOG)
    assert suggestions[0] == first
    assert len(suggestions) == len(set(suggestions)) <= 3
    assert classify_candidate(candidate, CATALOG) == (Failure.WRONG_MODEL_ID, suggestions)


@pytest.mark.parametrize(
    "candidate",
    [
        "acme/totally-new-model",
        "openai/gpt-7",  # a version number the catalog does not have
        "anthropic/claude-5-opus",  # alike in letters, but another version
        "x-ai/grok-5:free",
    ],
)
def test_nothing_close_is_not_on_openrouter(candidate: str) -> None:
    assert suggest_ids(candidate, CATALOG) == []
    assert classify_candidate(candidate, CATALOG) == (Failure.NO_ENDPOINTS, [])


@pytest.mark.parametrize(
    "candidate", ["totally-new-model", "", "a b/c", "a/b/c", "/name", "author/", "a/b:c:d"]
)
def test_malformed_ids_are_wrong_ids(candidate: str) -> None:
    assert not is_well_formed(candidate)
    failure, _suggestions = classify_candidate(candidate, CATALOG)
    assert failure is Failure.WRONG_MODEL_ID


def test_well_formed_ids() -> None:
    for model_id in (
        "meta-llama/llama-3.3-70b-instruct:free",
        "~openai/gpt-latest",
        "01-ai/yi-large",
        "a/b.c_d",
    ):
        assert is_well_formed(model_id)


def test_distills_suggest_their_own_lineage_first() -> None:
    assert (
        suggest_ids("deepseek-r1-distill-llama-8b", CATALOG)[0]
        == "deepseek/deepseek-r1-distill-llama-70b:free"
    )


def test_listed_candidate_is_refused() -> None:
    with pytest.raises(ValueError, match="is listed in the catalog"):
        classify_candidate("openai/gpt-5", CATALOG)


def test_n_limits_and_orders_suggestions() -> None:
    # Both are Llama 3.3; the shorter name is the closer spelling.
    assert suggest_ids("llama-3.3", CATALOG, n=1) == ["meta-llama/llama-3.3-8b-instruct:free"]
    assert suggest_ids("llama-3.3", CATALOG, n=0) == []
    assert set(suggest_ids("llama-3.3", CATALOG, n=10)) == {
        "meta-llama/llama-3.3-70b-instruct:free",
        "meta-llama/llama-3.3-8b-instruct:free",
    }


def test_empty_catalog() -> None:
    assert suggest_ids("a/b", []) == []
    assert classify_candidate("a/b", []) == (Failure.NO_ENDPOINTS, [])
    assert classify_candidate("b", []) == (Failure.WRONG_MODEL_ID, [])


def test_an_index_gives_the_same_answers_as_a_list() -> None:
    index = CatalogIndex.from_ids(CATALOG)
    for candidate in ("llama-3.3-8b", "openai/gpt-7", "deepseek-r1", "gemma"):
        assert suggest_ids(candidate, index) == suggest_ids(candidate, CATALOG)
        assert classify_candidate(candidate, index) == classify_candidate(candidate, CATALOG)


# ------------------------------------------------------------------------------------------------
# The candidates file


def test_read_candidates(tmp_path: Path) -> None:
    path = tmp_path / "candidates.txt"
    path.write_text(
        "\ufeff# announced this month\n"
        "meta-llama/llama-3.3-8b-instruct:free\n"
        "\n"
        "  llama-3.3-8b   # from a blog post\n"
        "meta-llama/llama-3.3-8b-instruct:free\n"
        "\t\n"
        "acme/new-model\r\n",
        encoding="utf-8",
    )
    assert read_candidates(path) == [
        "meta-llama/llama-3.3-8b-instruct:free",
        "llama-3.3-8b",
        "acme/new-model",
    ]
    assert read_candidates(str(path)) == read_candidates(path)


def test_read_candidates_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("# nothing yet\n\n", encoding="utf-8")
    assert read_candidates(path) == []


def test_read_candidates_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"candidates file .*nope\.txt does not exist"):
        read_candidates(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="is a directory"):
        read_candidates(tmp_path)
    binary = tmp_path / "b.txt"
    binary.write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        read_candidates(binary)


def test_a_free_id_listed_only_as_its_paid_slug_has_no_free_variant() -> None:
    assert classify_candidate("anthropic/claude-3-opus:free", CATALOG) == (
        Failure.FREE_VARIANT_ENDED,
        ["anthropic/claude-3-opus"],
    )
    assert paid_slug_of("openai/gpt-5:free", CATALOG) == "openai/gpt-5"
    assert paid_slug_of("OpenAI/GPT-5:free", CATALOG) == "openai/gpt-5"
    # a listed free variant, a non-free candidate or an unknown model: not this rule
    assert paid_slug_of("google/gemma-3-27b-it:free", CATALOG) is None
    assert paid_slug_of("openai/gpt-5:nitro", CATALOG) is None
    assert paid_slug_of("acme/unknown:free", CATALOG) is None


def test_paid_only_candidate_on_a_real_november_2025_catalog() -> None:
    # The 2025-11-11 catalog lists minimax/minimax-m2 but no ':free' variant of it.
    ids = _real_catalog("RemoteViewerchallenge__domoreai__openrouter_models")
    assert "minimax/minimax-m2" in ids and "minimax/minimax-m2:free" not in ids
    assert classify_candidate("minimax/minimax-m2:free", ids) == (
        Failure.FREE_VARIANT_ENDED,
        ["minimax/minimax-m2"],
    )

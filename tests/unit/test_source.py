"""Sources: one profile per kind, what a resumed run must find unchanged, keys never shown."""

from __future__ import annotations

import ast
from pathlib import Path

import polars as pl
import pytest

from freemodels.client import KeyInfo
from freemodels.errors import ConfigError
from freemodels.settings import load_settings
from freemodels.source import (
    PROFILES,
    SourceIdentity,
    SourceKind,
    choose_kind,
    open_source,
    profile_of,
    resolve_identity,
    source_notes,
)
from tests.conftest import REPO_ROOT


def test_every_kind_has_a_profile_and_unknown_names_have_none() -> None:
    assert set(PROFILES) == set(SourceKind)
    assert all(PROFILES[k].kind is k for k in SourceKind)
    assert profile_of("openrouter") is PROFILES[SourceKind.OPENROUTER]
    assert profile_of("partial-legacy") is None and profile_of(None) is None
    assert [k for k, p in PROFILES.items() if p.simulated] == [SourceKind.SANDBOX]
    assert PROFILES[SourceKind.BASE_URL].litellm_model("m") == "openai/m"
    assert PROFILES[SourceKind.OPENROUTER].litellm_model("openrouter/free") == "openrouter/openrouter/free"


@pytest.mark.parametrize(
    ("source", "key", "kind"),
    [
        ("auto", False, SourceKind.SANDBOX),
        ("auto", True, SourceKind.OPENROUTER),
        ("sandbox", True, SourceKind.SANDBOX),
        ("openrouter", False, SourceKind.OPENROUTER),
        ("http://127.0.0.1:8080/v1", True, SourceKind.BASE_URL),
    ],
)
def test_choose_kind(source: str, key: bool, kind: SourceKind) -> None:
    assert choose_kind(source, key_present=key) is kind


def test_no_module_outside_the_source_module_compares_source_names() -> None:
    """Code asks the profile: a literal source name compared with == appears nowhere else."""
    names = {"sandbox", "openrouter", "base_url"}
    offenders = []
    for package in ("flows", "tasks", "freemodels"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            if path.name == "source.py" or "sandbox" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare) and any(
                    isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
                ):
                    sides = [node.left, *node.comparators]
                    if any(isinstance(s, ast.Constant) and s.value in names for s in sides):
                        offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert offenders == []


def test_a_missing_key_is_one_line_and_a_source_never_shows_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        pytest.raises(ConfigError, match=r"^source 'openrouter' needs OPENROUTER_API_KEY; it is not set$"),
        open_source(load_settings(), kind=SourceKind.OPENROUTER),
    ):
        pass
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-source-test-secret-123456")
    with open_source(load_settings(), kind=SourceKind.OPENROUTER) as source:
        assert "secret-123456" not in repr(source) and "secret-123456" not in str(source)
        assert source.api_key is not None and source.requests_per_minute == 20
    base = load_settings(source="http://127.0.0.1:1/v1")
    with (
        pytest.raises(ConfigError, match="--api-key-env names FMD_NOT_SET"),
        open_source(base, kind=SourceKind.BASE_URL, api_key_env="FMD_NOT_SET"),
    ):
        pass


def test_base_url_sources_probe_one_at_a_time_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(source="http://127.0.0.1:1/v1")
    with open_source(settings, kind=SourceKind.BASE_URL) as source:
        assert source.max_concurrency == 1 and source.api_key is None
    monkeypatch.setenv("DISCOVERY_MAX_CONCURRENCY", "4")
    with open_source(load_settings(source="http://127.0.0.1:1/v1"), kind=SourceKind.BASE_URL) as source:
        assert source.max_concurrency == 4


def test_identity_tells_what_changed(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text("[defaults]\nbehavior = 'ok'\n")
    settings = load_settings(source="sandbox", sandbox_scenario=str(scenario), sandbox_seed=7)
    then = resolve_identity(settings, kind=SourceKind.SANDBOX)
    assert SourceIdentity.from_dict(then.as_dict()) == then
    assert then.mismatch(then) is None
    scenario.write_text("[defaults]\nbehavior = 'empty'\n")
    changed = resolve_identity(settings, kind=SourceKind.SANDBOX)
    assert then.mismatch(changed) == "its sandbox scenario file changed since (or is gone)"
    other_seed = resolve_identity(
        load_settings(source="sandbox", sandbox_scenario=str(scenario)), kind=SourceKind.SANDBOX
    )
    assert "seed" in (changed.mismatch(other_seed) or "")
    url = resolve_identity(load_settings(source="http://a:1/v1"), kind=SourceKind.BASE_URL)
    assert url.mismatch(
        resolve_identity(load_settings(source="http://b:1/v1"), kind=SourceKind.BASE_URL)
    ) == ("it ran against http://a:1/v1, this would use http://b:1/v1")
    assert then.mismatch(url) == "it ran against sandbox, this would use base-url"
    assert SourceIdentity.from_dict({"kind": "nope"}) is None and SourceIdentity.from_dict([]) is None


def test_notes_say_what_the_source_could_not_provide() -> None:
    probes = pl.DataFrame(
        {"completion_tokens": [None, None], "server_ttft_ms": [None, 12.0]},
        schema={"completion_tokens": pl.Int64, "server_ttft_ms": pl.Float64},
    )
    base = PROFILES[SourceKind.BASE_URL]
    notes = source_notes(base, unpriced=True, quota=None, budget=None, probes=probes)
    assert notes == [
        "The server lists no prices: every model it serves counts as free.",
        "The server has no /key endpoint: the daily quota is unknown, no budget applies.",
        "The server reports no token usage in its streams: token counts are unknown.",
    ]
    openrouter = PROFILES[SourceKind.OPENROUTER]
    assert source_notes(openrouter, unpriced=False, quota=None, budget=50, probes=probes) == [
        "GET /key did not report the daily quota: a budget of 50 requests applied."
    ]
    quota = KeyInfo(daily_limit=50, daily_remaining=50, daily_used=0, is_free_tier=True, label=None)
    assert source_notes(openrouter, unpriced=False, quota=quota, budget=50, probes=probes) == []
    assert (
        source_notes(PROFILES[SourceKind.SANDBOX], unpriced=False, quota=None, budget=None, probes=probes)
        == []
    )

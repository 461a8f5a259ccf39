"""The flow run's name and tags (pure parts of flows/artifacts.py)."""

from __future__ import annotations

from datetime import date

from flows.artifacts import run_name, run_tags


def test_run_name_is_date_and_source() -> None:
    assert run_name(date(2026, 11, 1), "sandbox") == "2026-11-01-sandbox"
    assert run_name(date(2026, 11, 1), "base_url") == "2026-11-01-base-url"


def test_run_tags_keep_existing_and_replace_the_source_tag() -> None:
    assert run_tags(["monthly", "source:auto", "discovery"], "openrouter") == [
        "discovery",
        "monthly",
        "source:openrouter",
    ]
    assert run_tags([], "sandbox") == ["discovery", "source:sandbox"]
    assert run_tags([], "base_url") == ["discovery", "source:base-url"]

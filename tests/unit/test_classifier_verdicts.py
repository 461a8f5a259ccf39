"""The committed page ``docs/classifier-verdicts.md`` says what the classifier says now, and every real
error body in it gets the class it should."""

from __future__ import annotations

from pathlib import Path

from tests.verdicts import PAGE, build_page, live_verdicts, recorded_verdicts


def test_the_committed_verdict_page_matches_the_classifier(fixtures_dir: Path) -> None:
    expected = build_page(fixtures_dir)
    assert PAGE.is_file(), "docs/classifier-verdicts.md is missing; run: uv run python -m tests.verdicts"
    assert PAGE.read_text(encoding="utf-8") == expected, (
        "docs/classifier-verdicts.md is out of date; run: uv run python -m tests.verdicts"
    )


def test_every_real_error_body_gets_its_class(fixtures_dir: Path) -> None:
    recorded = recorded_verdicts(fixtures_dir)
    live = live_verdicts()
    assert len(recorded) >= 70 and len(live) == len({v.source for v in live})
    wrong = [(v.source, v.got, v.expected) for v in recorded + live if not v.right]
    assert wrong == []
    assert all(v.got is not None for v in recorded + live)  # an error body is never a success
    page = PAGE.read_text(encoding="utf-8")
    total = len(recorded) + len(live)
    assert f"**{total} of {total}**" in page

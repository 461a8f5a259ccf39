"""Escaping of outside text: whatever a catalog or a model sends is shown literally and stays in its cell."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markupsafe import Markup

from freemodels.mdsafe import EMPTY, clip, finalize, md_cell, md_code, md_text

COMMONMARK = MarkdownIt("commonmark").enable("table")
# Printable text including every Markdown and HTML special character, spaces and newlines.
TEXT = st.text(
    alphabet=st.characters(
        min_codepoint=0x20,
        max_codepoint=0x2FF,
        blacklist_categories=("Cc", "Cs"),
    )
    | st.sampled_from(list("\\`*_{}[]()#+-.!|<>&~^$:/@\n\t=\"'")),
    max_size=60,
)
HOSTILE = (
    "evil | pipe `tick` <script>alert(1)</script> [click](https://evil.example/x) "
    "![img](https://evil.example/i.png) **bold** _it_ # head\n\n- item\n| a | b |"
)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _without_code(html_text: str) -> str:
    """``html_text`` without ``<code>`` tags: addresses are shown as code, which is still the text."""
    return html_text.replace("<code>", "").replace("</code>", "")


def _inline_text(markdown: str) -> str:
    """The text a CommonMark renderer shows for one paragraph (tags stripped, entities decoded)."""
    rendered = COMMONMARK.render(markdown).strip()
    if not rendered:
        return ""
    assert rendered.startswith("<p>") and rendered.endswith("</p>"), rendered
    inner = _without_code(rendered[3:-4])
    assert "<" not in inner.replace("&lt;", ""), f"markup in {inner!r}"
    return html.unescape(inner)


@settings(max_examples=300, deadline=None)
@given(TEXT)
@example("*a* **b** _c_ __d__ ~~e~~ `f` [g](h) ![i](j) <k> &amp; $x$")
@example("a_b_c x*y*z \\*")
def test_md_text_renders_back_to_the_same_text(text: str) -> None:
    assert _inline_text(str(md_text(text))) == _collapse(text)


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_md_cell_stays_one_cell_with_the_same_text(text: str) -> None:
    table = f"| h |\n|---|\n| {md_cell(text)} |\n"
    rendered = COMMONMARK.render(table)
    cells = [_without_code(c) for c in re.findall(r"<td>(.*?)</td>", rendered, re.DOTALL)]
    assert len(cells) == 1, rendered
    assert "<" not in cells[0].replace("&lt;", "")
    assert html.unescape(cells[0]) == (_collapse(text) or EMPTY)


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_md_code_shows_text_verbatim(text: str) -> None:
    rendered = COMMONMARK.render(str(md_code(text, table=False))).strip()
    if not _collapse(text):
        assert rendered == f"<p>{EMPTY}</p>"
        return
    match = re.fullmatch(r"<p><code>(.*)</code></p>", rendered, re.DOTALL)
    assert match, rendered
    shown = html.unescape(match.group(1))
    # CommonMark strips one space on each side when both are present.
    assert shown == _collapse(text) or shown == _collapse(text).strip(" ")


def test_hostile_text_has_no_markup_link_or_block() -> None:
    out = str(md_text(HOSTILE))
    assert "\n" not in out
    assert "<script" not in out and "<" not in out
    rendered = COMMONMARK.render(out)
    assert rendered.count("<p>") == 1
    for tag in ("<a ", "<img", "<em>", "<strong>", "<h1>", "<li>", "<table>", "<script"):
        assert tag not in rendered
    # The only code spans are the addresses, shown as they are.
    assert re.findall(r"<code>(.*?)</code>", rendered) == [
        "https://evil.example/x",
        "https://evil.example/i.png",
    ]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("see https://evil.example/p?q=1. Now", "see `https://evil.example/p?q=1`. Now"),
        ("go to www.evil.example", "go to `www.evil.example`"),
        ("mail me@evil.example", "mail `me@evil.example`"),
        (
            "Configure: https://openrouter.ai/settings/privacy",
            "Configure: `https://openrouter.ai/settings/privacy`",
        ),
    ],
)
def test_github_autolinks_are_shown_as_code_and_read_cleanly(raw: str, shown: str) -> None:
    out = str(md_text(raw))
    assert out == shown and "\\:" not in out
    assert _inline_text(out) == raw
    assert "<a " not in COMMONMARK.render(out)


def test_arrows_and_ampersands_read_cleanly() -> None:
    assert str(md_text("failing -> working")) == "failing -> working"
    assert str(md_text("R&D <b>")) == "R&D &lt;b>"
    assert str(md_text("&amp; &#60;")) == "&amp;amp; &amp;\\#60;"


def test_pipes_are_escaped_in_cells_and_code() -> None:
    assert str(md_cell("a|b")) == "a\\|b"
    assert str(md_code("a|b")) == "`a\\|b`"
    assert str(md_code("a|b", table=False)) == "`a|b`"


def test_code_fence_is_longer_than_any_backtick_run() -> None:
    assert str(md_code("a``b")) == "```a``b```"
    assert str(md_code("`x`")) == "`` `x` ``"


def test_ids_stay_readable() -> None:
    assert str(md_text("meta-llama/llama-3.3-70b-instruct:free")) == (
        "meta-llama/llama-3.3-70b-instruct:free"
    )
    assert str(md_text("max_tokens")) == "max_tokens"


def test_line_start_cannot_begin_a_block() -> None:
    for raw in ("- item", "+ item", "1. item", "2) item", "# heading", "> quote", "=== x"):
        rendered = COMMONMARK.render(str(md_text(raw))).strip()
        assert rendered == f"<p>{html.escape(raw, quote=False)}</p>", raw


def test_empty_values() -> None:
    assert md_text(None) == ""
    assert md_cell(None) == EMPTY
    assert md_cell("   ") == EMPTY
    assert md_code(None) == EMPTY


def test_cell_is_cut_before_escaping() -> None:
    out = md_cell("[" * 50, max_len=10)
    assert out == "\\[" * 9 + "…"


def test_a_cut_never_falls_inside_a_word() -> None:
    text = "No endpoints found matching your data policy for this model"
    assert str(md_cell(text, max_len=30)) == "No endpoints found matching…"
    assert str(md_cell(text, max_len=len(text))) == text
    assert clip("abcdefghijklmnopqrstuvwxyz tail", 10) == "abcdefghi…"  # one long word: cut inside


def test_finalize_escapes_plain_strings_only() -> None:
    assert finalize("a|b") == "a\\|b"
    assert finalize(Markup("**kept**")) == "**kept**"
    assert finalize(3) == 3
    assert finalize(None) == ""
    assert finalize("") == ""

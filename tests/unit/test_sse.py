"""The incremental SSE parser: line endings, split chunks, comments, multi-line data, bad bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freemodels.sse import SSEComment, SSEEvent, SSEParseError, SSEParser, parse_all
from tests.conftest import shared_fixtures


def events(items: list) -> list[SSEEvent]:
    return [i for i in items if isinstance(i, SSEEvent)]


def test_basic_events_comments_and_done() -> None:
    body = b': OPENROUTER PROCESSING\n\ndata: {"a": 1}\n\n:keepalive\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    items = parse_all(body)
    assert items == [
        SSEComment("OPENROUTER PROCESSING"),
        SSEEvent('{"a": 1}'),
        SSEComment("keepalive"),
        SSEEvent('{"b": 2}'),
        SSEEvent("[DONE]"),
    ]
    assert items[-1].is_done and not items[1].is_done


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(eol: bytes) -> None:
    body = b"data: one" + eol + b"data: two" + eol + eol + b"event: x" + eol + b"data: 3" + eol + eol
    assert events(parse_all(body)) == [SSEEvent("one\ntwo"), SSEEvent("3", event="x")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_same_result_for_every_split(eol: bytes) -> None:
    body = b": c" + eol + eol + b'data: {"x": "\xc3\xa9"}' + eol + eol + b"data: [DONE]" + eol + eol
    whole = parse_all(body)
    for size in range(1, len(body) + 1):
        assert parse_all(body, chunk_size=size) == whole, size


def test_crlf_split_between_chunks_is_one_line_ending() -> None:
    parser = SSEParser()
    out = parser.feed(b"data: a\r")
    out += parser.feed(b"\n\r")
    out += parser.feed(b"\ndata: b\r\n\r\n")
    assert events(out) == [SSEEvent("a"), SSEEvent("b")]


def test_field_without_space_and_unknown_fields_and_id() -> None:
    items = parse_all(b"data:x\nretry: 10\nfoo: bar\nid: 7\n\ndata: y\n\n")
    assert events(items) == [SSEEvent("x", id="7"), SSEEvent("y", id="7")]


def test_invalid_utf8_line_is_an_error_item_and_parsing_goes_on() -> None:
    items = parse_all(b'data: {"a": "\xff\xfe"}\n\ndata: ok\n\n')
    errors = [i for i in items if isinstance(i, SSEParseError)]
    assert len(errors) == 1 and "invalid UTF-8" in errors[0].message and errors[0].offset == 0
    assert events(items) == [SSEEvent("ok")]


def test_close_flushes_an_unterminated_last_line_and_event() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"trunc') == []
    assert parser.close() == [SSEEvent('{"trunc')]
    assert parser.close() == []
    assert parser.feed(b"data: late\n\n") == []


def test_bom_at_stream_start_is_ignored() -> None:
    assert events(parse_all(b"\xef\xbb\xbfdata: a\n\n")) == [SSEEvent("a")]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_never_raises_and_chunking_does_not_matter(body: bytes, size: int) -> None:
    assert parse_all(body, chunk_size=size) == parse_all(body)


def test_large_body_in_one_chunk_is_linear() -> None:
    body = b'data: {"choices": []}\n\n' * 50_000  # 1.2 MB, 100k lines
    assert len(events(parse_all(body))) == 50_000


def _recorded_streams() -> list[Path]:
    folder = shared_fixtures() / "recorded"
    return sorted(folder.glob("*.sse"))


def test_every_recorded_stream_parses(fixtures_dir: Path) -> None:
    streams = _recorded_streams()
    assert len(streams) >= 50
    for path in streams:
        body = path.read_bytes()
        items = parse_all(body)
        assert not [i for i in items if isinstance(i, SSEParseError)], path.name
        evs = events(items)
        assert evs, path.name
        assert evs[-1].is_done, path.name
        for ev in evs[:-1]:
            assert isinstance(json.loads(ev.data), dict), path.name
        comments = [i for i in items if isinstance(i, SSEComment)]
        assert all(c.text == "OPENROUTER PROCESSING" for c in comments), path.name
        # Chunking at an awkward size changes nothing.
        assert parse_all(body, chunk_size=7) == items, path.name


def test_keepalive_streams_have_comments(fixtures_dir: Path) -> None:
    index = json.loads((fixtures_dir / "recorded" / "index.json").read_text())
    flagged = [e["file"] for e in index if e["kind"] == "sse" and "keepalive" in e["flags"]]
    assert flagged
    for name in flagged:
        items = parse_all((fixtures_dir / "recorded" / name).read_bytes())
        assert any(isinstance(i, SSEComment) for i in items), name

"""Every real recorded OpenRouter response (../shared/fixtures/openrouter/recorded) gets the class it
deserves. The expected class of each file is stated explicitly below, grouped by file-name pattern;
every file must match exactly one pattern, so a new fixture without an expectation fails the test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from freemodels.classify import classify, parse_error_envelope
from freemodels.failures import Failure
from freemodels.probe import StreamState
from freemodels.sse import SSEEvent, parse_all
from tests.conftest import SHARED_FIXTURES, shared_fixtures

OK = None  # a clean answer with text content: no failure (no grader is applied here)

# (pattern on the file name, expected class, how many files it covers)
EXPECTED: list[tuple[str, Failure | None, int]] = [
    # 401: "No auth credentials found", "No cookie auth credentials found", "Missing Authentication header"
    (r"raises_appropriate_auth_error@", Failure.AUTH, 32),
    # 400: "This endpoint's maximum context length is 200000 tokens ..."
    (r"handles_context_length_exceeded_errors@", Failure.CONTEXT_LIMIT, 25),
    # 400 "Provider returned error", raw OpenAI "Unsupported value: 'none' ... reasoning.effort"
    (r"test_openrouter_thinking_false_on_always_on_route@", Failure.BAD_REQUEST, 2),
    # 404 "No endpoints found for google/gemini-2.5-flash:free."
    (r"test_openrouter_errors_raised@111dda9b\.0\.json$", Failure.NO_ENDPOINTS, 1),
    # 429 "Provider returned error", raw "... temporarily rate-limited upstream", provider Google
    (r"test_openrouter_errors_raised@(227e873c|f077d56c)\.\d\.json$", Failure.RATE_LIMIT_UPSTREAM, 6),
    (r"test_openrouter_with_google_model@d2710799\.\d\.json$", Failure.RATE_LIMIT_UPSTREAM, 2),
    # the same upstream 429 envelope delivered inside an HTTP 200 body
    (r"test_openrouter_errors_raised@eb479b64\.0\.json$", Failure.RATE_LIMIT_UPSTREAM, 1),
    # 403 "Provider returned error", raw OpenAI "unsupported_country_region_territory"
    (r"parse_error_with_openrouter_openai_o3-mini_raises_detailed_error@", Failure.MODERATION, 1),
    # 200 stream: reasoning deltas, finish_reason "length", then an error chunk "Token limit reached"
    # and no content at all: the token budget went to reasoning.
    (r"test_openrouter_stream_error@", Failure.REASONING_EXHAUSTED, 2),
    # 200 answers that carry only tool calls (or content null): no text reply.
    (r"test_openrouter_google_nested_schema@735386a1\.[01]\.json$", Failure.EMPTY_REPLY, 2),
    (r"test_openrouter_tool_calling@ebc8d088\.0\.json$", Failure.EMPTY_REPLY, 1),
    (r"preserves_content_objects_returned_from_tools@", Failure.EMPTY_REPLY, 1),
    (r"claude-haiku-4-5_can_handle_multiple_tool_calls_in_a_single_response@", Failure.EMPTY_REPLY, 1),
    (r"claude-haiku-4-5_can_use_tools_without_parameters@75b5cd5a\.0\.json$", Failure.EMPTY_REPLY, 1),
    (r"claude-haiku-4-5_handles_(anyof|array|object)_params@", Failure.EMPTY_REPLY, 3),
    (r"tool_choice_and_calls_control_openrouter_claude-haiku-4-5_", Failure.EMPTY_REPLY, 6),
    (
        r"(claude-haiku-4-5|gemini-2_0-flash-001)_can_use_tools_without_parameters_in_multi-turn"
        r"_streaming_conversations@(9e35e6a1|75b5cd5a|d698dd1c)\.[02]\.sse$",
        Failure.EMPTY_REPLY,
        6,
    ),
    (r"simonw__llm-openrouter__test_tool_calls@(5443a2ce|5f3c1009)\.1\.sse$", Failure.EMPTY_REPLY, 2),
    # Multi-turn tool streams whose turn also has text, and the follow-up turns with the answer.
    (
        r"(claude-haiku-4-5|gemini-2_0-flash-001)_can_use_tools_without_parameters_in_multi-turn"
        r"_streaming_conversations@(9e35e6a1|75b5cd5a|d698dd1c)\.[13]\.sse$",
        OK,
        6,
    ),
    (r"claude-3_5-haiku_can_use_tools_without_parameters_in_multi-turn_streaming", OK, 8),
    (r"simonw__llm-openrouter__test_tool_calls@(5443a2ce|5f3c1009)\.2\.sse$", OK, 2),
    # Ordinary text answers (JSON and streamed), with or without reasoning.
    (r"simonw__llm-openrouter__test_(image_)?prompt@", OK, 10),
    (r"chat_streaming_responses_openrouter_", OK, 10),
    (r"pydantic__pydantic-ai__test_eager_input_streaming_sent_to_openrouter", OK, 3),
    (
        r"pydantic__pydantic-ai__test_openrouter_(advisor_tool|advisor_tool_stream|binary_content_video_public_api"
        r"|document_url_no_force_download|file_annotation|map_messages_reasoning|preserve_reasoning_block"
        r"|stream_with_native_options|stream_with_reasoning|streaming_reasoning|thinking_false_profile_gated_model"
        r"|thinking_false_supports_thinking_model|thinking_high_emits_effort_high|thinking_true_emits_effort_medium"
        r"|tool_optional_parameters|usage|video_url_public_api|web_search_annotations|web_search_annotations_stream"
        r"|web_search_tool_full_params|web_search_tool_usage|web_search_tool_usage_stream|with_native_options"
        r"|with_preset|with_reasoning|cache_all_settings_real_api|cache_streaming_e2e)@",
        OK,
        37,
    ),
]


def _index() -> list[dict]:
    if not SHARED_FIXTURES.is_dir():
        return []
    return json.loads((SHARED_FIXTURES / "recorded" / "index.json").read_text())


def _expected(name: str) -> Failure | None:
    matches = [(pattern, cls) for pattern, cls, _ in EXPECTED if re.search(pattern, name)]
    assert len(matches) == 1, f"{name}: matches {len(matches)} patterns: {[m[0] for m in matches]}"
    return matches[0][1]


def classify_recorded(folder: Path, entry: dict) -> Failure | None:
    """Feed one recorded response to the classifier the way a probe would see it."""
    meta = json.loads((folder / entry["file"]).with_suffix(".meta.json").read_text())
    status = meta["status"]
    assert status == entry["status"]
    body = (folder / entry["file"]).read_bytes()
    state = StreamState(t0_ns=0)
    if entry["kind"] == "sse":
        for i, item in enumerate(parse_all(body)):
            if isinstance(item, SSEEvent) and not item.is_done:
                state.feed_chunk(json.loads(item.data), i)
    elif 200 <= status < 300:
        state.feed_chunk(json.loads(body), 0)
    else:
        state.envelope = parse_error_envelope(body)
    return classify(
        http_status=status,
        envelope=state.envelope,
        finish_reason=state.finish_reason,
        content=state.content,
        reasoning=state.reasoning,
    )


def test_table_covers_every_file_exactly_once(fixtures_dir: Path) -> None:
    index = _index()
    assert len(index) == sum(count for _, _, count in EXPECTED)
    for pattern, _, count in EXPECTED:
        hits = [e["file"] for e in index if re.search(pattern, e["file"])]
        assert len(hits) == count, (pattern, hits)


@pytest.mark.parametrize("entry", _index(), ids=lambda e: e["file"][-70:])
def test_recorded_response_class(entry: dict) -> None:
    folder = shared_fixtures() / "recorded"
    assert classify_recorded(folder, entry) is _expected(entry["file"])


def test_every_error_flagged_file_is_a_failure(fixtures_dir: Path) -> None:
    folder = fixtures_dir / "recorded"
    for entry in _index():
        if "error" in entry["flags"] or entry["status"] != 200:
            assert classify_recorded(folder, entry) is not None, entry["file"]

"""The base-URL path on recorded llama.cpp answers (see samples/SOURCES.md), without a server.

These run everywhere: they replay what a real llama-cpp-python server sent through the tool's own
parsing (catalog, quota, probe) over ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx

from freemodels.catalog import parse_catalog
from freemodels.client import fetch_key_info
from freemodels.failures import Failure
from freemodels.probe import AttemptOutcome, probe_attempt
from freemodels.records import ProbeSpec
from freemodels.settings import Settings
from freemodels.suite import build_suite
from tasks.fetch_catalog import mark_unpriced_as_free

SAMPLES = Path(__file__).parent / "samples"
BASE_URL = "http://127.0.0.1:8080/v1"
RECORDED_SEED = 20261128  # the seed of the suite whose prompts were sent when recording
SUITE = {t.name: t for t in build_suite(RECORDED_SEED)}
STEP_NS = 5_000_000  # the fake clock advances 5 ms per reading


def _events(raw: bytes) -> list[bytes]:
    """The SSE body cut into one chunk per event, as the server flushed them."""
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part.strip()]


class _ChunkStream(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def _clock() -> Iterator[int]:
    now = 0
    while True:
        now += STEP_NS
        yield now


def _probe(task: str, response: httpx.Response) -> tuple[AttemptOutcome, list[dict[str, object]]]:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        assert request.url.path == "/v1/chat/completions"
        return response

    ticks = _clock()

    async def go() -> AttemptOutcome:
        async with httpx.AsyncClient(base_url=BASE_URL, transport=httpx.MockTransport(handler)) as client:
            return await probe_attempt(
                client,
                run_id="r-llama",
                spec=ProbeSpec(model_id="gemma-3-270m", family="gemma-3", task=task),
                task=SUITE[task],
                settings=Settings(source=BASE_URL, max_tokens=16),
                attempt=1,
                cost_guard=False,
                clock_ns=lambda: next(ticks),
                wall_s=lambda: 0.0,
            )

    return asyncio.run(go()), sent


def test_models_listing_is_one_free_model_named_by_its_file_path() -> None:
    catalog = parse_catalog((SAMPLES / "models.json").read_bytes(), origin="llama.cpp /v1/models")
    assert catalog.get_column("model_id").to_list() == ["/tmp/llama-model/gemma-3-270m-q4_k_m.gguf"]
    assert catalog.get_column("pricing_json").to_list() == [None]

    marked, unpriced = mark_unpriced_as_free(catalog)

    assert unpriced is True
    assert marked.get_column("is_free").to_list() == [True]
    assert marked.get_column("is_router").to_list() == [False]


def test_missing_key_endpoint_means_no_quota() -> None:
    body = (SAMPLES / "key-404.json").read_bytes()

    async def go() -> object:
        transport = httpx.MockTransport(lambda request: httpx.Response(404, content=body))
        async with httpx.AsyncClient(base_url=BASE_URL, transport=transport) as client:
            return await fetch_key_info(client)

    assert asyncio.run(go()) is None


def test_recorded_stream_is_timed_and_graded_as_a_wrong_answer() -> None:
    raw = (SAMPLES / "chat-stream.sse").read_bytes()
    chunks = _events(raw)
    response = httpx.Response(
        200,
        headers={"content-type": "text/event-stream; charset=utf-8"},
        stream=_ChunkStream(chunks),
    )

    outcome, sent = _probe("arithmetic", response)
    result = outcome.result

    assert sent[0]["stream"] is True
    assert result.http_status == 200
    # The base model continues the prompt ("What is 8551 + 2876? Reply with"): text, but no answer.
    assert result.reply_excerpt is not None
    assert result.reply_excerpt.startswith("What is 8551 + 2876?")
    assert result.failure is Failure.WRONG_ANSWER
    assert result.passed is False
    assert outcome.retryable is False
    assert result.finish_reason == "length"
    # Timings: the role-only first delta is not a token; every later event has a later stamp.
    assert result.ttft_any_ms is not None and result.total_ms is not None
    assert result.ttft_content_ms == result.ttft_any_ms
    assert 0 < result.ttft_any_ms < result.total_ms
    content_events = sum(b'"content"' in c for c in chunks)
    assert result.total_ms - result.ttft_any_ms >= (content_events - 1) * STEP_NS / 1e6
    # No usage chunk despite stream_options.include_usage, and no llama.cpp `timings` object.
    assert result.completion_tokens is None
    assert result.server_ttft_ms is None and result.server_total_ms is None
    assert result.generation_id is not None and result.generation_id.startswith("chatcmpl-")


def test_recorded_whole_completion_is_read_when_the_stream_is_not_used() -> None:
    body = (SAMPLES / "chat.json").read_bytes()
    response = httpx.Response(200, headers={"content-type": "application/json"}, content=body)

    outcome, _sent = _probe("json_object", response)
    result = outcome.result

    assert result.failure is Failure.WRONG_ANSWER
    assert result.reply_excerpt is not None
    assert result.reply_excerpt.startswith("Return a JSON object")
    assert result.completion_tokens == 16  # a whole completion does carry usage
    assert result.ttft_any_ms is not None and result.total_ms is not None
    assert result.ttft_any_ms <= result.total_ms
    assert result.server_ttft_ms is None

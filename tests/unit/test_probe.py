"""One probe attempt against httpx.MockTransport: real recorded bodies, staged timings, and every way a
server can misbehave — each must end in a classified result, never an exception."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from freemodels.client import build_http_client
from freemodels.failures import Failure
from freemodels.probe import AttemptOutcome, build_request_body, probe_attempt, probe_once
from freemodels.records import ProbeResult, ProbeSpec
from freemodels.settings import Settings
from freemodels.suite import TaskInstance, build_suite
from tests.conftest import SHARED_FIXTURES, shared_fixtures
from tests.unit.test_classify_recorded import _expected

BASE = "https://api.example.test/api/v1"
KEY = "sk-or-v1-0123456789abcdef0123456789abcdef"
SPEC = ProbeSpec(model_id="vendor/model:free", family="vendor/model", task="arithmetic")
ARITH = build_suite(7)[0]


class AcceptAnyText(TaskInstance):
    """A task whose grader accepts any non-empty reply (replays of other projects' traffic)."""

    def grade(self, reply: str | None) -> bool:
        return bool(reply and reply.strip())


ANY = AcceptAnyText(name="arithmetic", system="s", prompt="p", expected="")


def make_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"probe_deadline_s": 5.0, "read_timeout_s": 5.0}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


Handler = Callable[[httpx.Request], httpx.Response]


async def attempt(
    handler: Handler,
    *,
    task: TaskInstance = ARITH,
    settings: Settings | None = None,
    cost_guard: bool = True,
) -> AttemptOutcome:
    settings = settings or make_settings()
    async with build_http_client(
        settings, base_url=BASE, api_key=KEY, transport=httpx.MockTransport(handler)
    ) as client:
        return await probe_attempt(
            client, run_id="r1", spec=SPEC, task=task, settings=settings, attempt=1, cost_guard=cost_guard
        )


def run(coro):  # test helper
    return asyncio.run(coro)


def sse_response(
    events: list[bytes], *, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(
        status, headers={"content-type": "text/event-stream", **(headers or {})}, content=b"".join(events)
    )


def chunk(
    content: str | None = None, *, reasoning: str | None = None, finish: str | None = None, **top: object
) -> bytes:
    delta: dict[str, object] = {"role": "assistant", "content": content if content is not None else ""}
    if reasoning is not None:
        delta["reasoning"] = reasoning
    body = {
        "id": "gen-1",
        "provider": "Chutes",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **top,
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


USAGE = (
    b'data: {"id":"gen-1","choices":[],"usage":{"completion_tokens":9,'
    b'"completion_tokens_details":{"reasoning_tokens":4},"cost":0}}\n\n'
)
DONE = b"data: [DONE]\n\n"


# --- request ------------------------------------------------------------------------------------


def test_request_body_headers_and_auth() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse_response([chunk(ARITH.expected, finish="stop"), DONE])

    outcome = run(attempt(handler))
    assert outcome.result.passed and outcome.result.failure is None
    (request,) = seen
    assert str(request.url) == BASE + "/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "x-openrouter-cache" not in request.headers
    assert request.headers["http-referer"] and request.headers["x-title"]
    body = json.loads(request.content)
    assert body["model"] == SPEC.model_id
    assert body["stream"] is True
    assert body["temperature"] == 0
    assert body["max_tokens"] == make_settings().max_tokens
    assert body["messages"] == ARITH.messages()
    assert body["provider"] == {"max_price": {"prompt": 0, "completion": 0, "request": 0}}
    assert "response_format" not in body


def test_a_models_array_is_sent_and_the_model_that_served_is_kept() -> None:
    seen: list[dict[str, object]] = []
    fallback = "other/model:free"

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return sse_response([chunk(ARITH.expected, finish="stop", model=fallback), DONE])

    async def go() -> AttemptOutcome:
        settings = make_settings()
        async with build_http_client(
            settings, base_url=BASE, api_key=KEY, transport=httpx.MockTransport(handler)
        ) as client:
            return await probe_attempt(
                client, run_id="r1", spec=SPEC, task=ARITH, settings=settings, attempt=1,
                models=(SPEC.model_id, fallback),
            )  # fmt: skip

    outcome = run(go())
    assert seen[0]["model"] == SPEC.model_id and seen[0]["models"] == [SPEC.model_id, fallback]
    assert outcome.result.passed and outcome.served_model == fallback
    # Without a models array the body has none, and a response without `model` names none.
    assert "models" not in build_request_body(SPEC, ARITH, make_settings(), cost_guard=False)
    plain = run(attempt(lambda _: sse_response([chunk(ARITH.expected, finish="stop"), DONE])))
    assert plain.served_model is None


def test_no_cost_guard_for_other_servers() -> None:
    body = build_request_body(SPEC, ARITH, make_settings(max_tokens=64), cost_guard=False)
    assert "provider" not in body and body["max_tokens"] == 64


# --- recorded traffic ------------------------------------------------------------------------------


def _index() -> list[dict]:
    if not SHARED_FIXTURES.is_dir():
        return []
    return json.loads((SHARED_FIXTURES / "recorded" / "index.json").read_text())


@pytest.mark.parametrize("entry", _index(), ids=lambda e: e["file"][-60:])
def test_replay_recorded_response(entry: dict) -> None:
    folder = shared_fixtures() / "recorded"
    body = (folder / entry["file"]).read_bytes()
    meta = json.loads((folder / entry["file"]).with_suffix(".meta.json").read_text())
    headers = {
        k: v[0]
        for k, v in meta["response_headers"].items()
        if k.lower() not in {"content-length", "transfer-encoding", "content-encoding"}
    }

    def handler(request: httpx.Request) -> httpx.Response:
        # Deliver in small pieces so events straddle chunk borders, as on the wire.
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 97):
                yield body[i : i + 97]

        return httpx.Response(meta["status"], headers=headers, content=pieces())

    result = run(attempt(handler, task=ANY)).result
    assert result.failure is _expected(entry["file"]), entry["file"]
    assert result.http_status == meta["status"]
    assert result.passed is (result.failure is None)
    if result.failure is None:
        assert result.ttft_content_ms is not None and result.total_ms is not None
        assert (
            result.ttft_any_ms is not None and result.ttft_any_ms <= result.ttft_content_ms <= result.total_ms
        )
        assert result.reply_excerpt
    if "usage" in entry["flags"] and entry["status"] == 200 and "error" not in entry["flags"]:
        assert result.completion_tokens is not None
    if entry["status"] == 200 and entry["kind"] == "sse":
        assert result.generation_id and result.generation_id.startswith("gen-")
        assert result.provider
    if result.failure is not None and entry["status"] != 200:
        assert result.message  # OpenRouter's own words are kept


# --- timings -------------------------------------------------------------------------------------


def staged(schedule: list[tuple[float, bytes]]) -> Handler:
    """A streaming answer that sends each piece at its time (seconds after the request)."""

    def handler(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            start = loop.time()
            for at, piece in schedule:
                await asyncio.sleep(max(0.0, start + at - loop.time()))
                yield piece

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return handler


def test_timings_skip_comments_and_role_only_deltas() -> None:
    answer = ARITH.expected
    schedule = [
        (0.00, b": OPENROUTER PROCESSING\n\n"),
        (0.05, b": OPENROUTER PROCESSING\n\n" + chunk("")),  # role-only delta: not a token
        (0.10, chunk(reasoning="thinking")),
        (0.20, chunk(answer[:2])),
        (0.25, chunk("")),
        (0.30, chunk(answer[2:], finish="stop")),
        (0.40, USAGE + DONE),  # usage and [DONE] after the last token do not move the total
    ]
    result = run(attempt(staged(schedule))).result
    assert result.failure is None and result.passed
    assert result.ttft_any_ms == pytest.approx(100, abs=30)
    assert result.ttft_content_ms == pytest.approx(200, abs=30)
    assert result.total_ms == pytest.approx(300, abs=30)
    assert result.completion_tokens == 9 and result.reasoning_tokens == 4
    assert result.finish_reason == "stop" and result.generation_id == "gen-1" and result.provider == "Chutes"


def test_deadline_ends_an_endless_keepalive_stream() -> None:
    schedule = [(i * 0.02, b": OPENROUTER PROCESSING\n\n") for i in range(500)]
    settings = make_settings(probe_deadline_s=0.3)
    result = run(attempt(staged(schedule), settings=settings)).result
    assert result.failure is Failure.TIMEOUT
    assert result.error_code == "probe_deadline"
    assert result.ttft_any_ms is None and "deadline" in (result.message or "")


def test_server_that_ignores_stream_true() -> None:
    completion = {
        "id": "gen-9",
        "provider": "llama.cpp",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ARITH.expected}, "finish_reason": "stop"}
        ],
        "usage": {"completion_tokens": 3},
        "timings": {"prompt_ms": 12.5, "predicted_ms": 30.25},
    }
    result = run(attempt(lambda r: httpx.Response(200, json=completion))).result
    assert result.failure is None and result.passed
    assert result.ttft_content_ms is not None and result.total_ms is not None
    assert result.ttft_content_ms <= result.total_ms
    assert result.server_ttft_ms == 12.5 and result.server_total_ms == 42.75
    assert result.completion_tokens == 3


def test_whitespace_keepalives_before_a_json_body_are_not_the_first_token() -> None:
    body = json.dumps(
        {"choices": [{"index": 0, "message": {"content": ARITH.expected}, "finish_reason": "stop"}]}
    ).encode()
    schedule = [(0.0, b"\n"), (0.05, b"\n"), (0.10, b"\n"), (0.20, body)]

    def handler(request: httpx.Request) -> httpx.Response:
        inner = staged(schedule)(request)
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=inner.stream)

    result = run(attempt(handler)).result
    assert result.failure is None
    assert result.ttft_content_ms == pytest.approx(200, abs=30)


def test_whitespace_only_body_is_empty() -> None:
    result = run(attempt(broken_stream([b"\n", b"  \r\n"]))).result
    assert result.failure is Failure.TRANSPORT_ERROR and "empty" in (result.message or "")


def test_llama_cpp_stream_timings() -> None:
    final = (
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
        b'"timings":{"prompt_ms":5,"predicted_ms":20}}\n\n'
    )
    result = run(attempt(lambda r: sse_response([chunk(ARITH.expected), final, DONE]))).result
    assert result.failure is None and result.server_ttft_ms == 5 and result.server_total_ms == 25


# --- verdicts and notes ---------------------------------------------------------------------------


def test_wrong_answer_and_excerpt() -> None:
    result = run(
        attempt(lambda r: sse_response([chunk("I think it is 12"), chunk(finish="stop"), DONE]))
    ).result
    assert result.failure is Failure.WRONG_ANSWER and not result.passed
    assert result.reply_excerpt == "I think it is 12"


def test_reasoning_exhausted_when_length_without_content() -> None:
    result = run(
        attempt(
            lambda r: sse_response([chunk(reasoning="long thought"), chunk(finish="length"), USAGE, DONE])
        )
    ).result
    assert result.failure is Failure.REASONING_EXHAUSTED
    assert result.ttft_any_ms is not None and result.ttft_content_ms is None and result.total_ms is None
    assert result.reply_excerpt.startswith("[reasoning only]")


def test_answer_in_the_reasoning_channel_is_graded_there_and_timed_to_its_last_token() -> None:
    schedule = [
        (0.00, chunk("")),
        (0.10, chunk(reasoning="The user wants the sum.\n\n")),
        (0.25, chunk(reasoning=ARITH.expected)),
        (0.30, chunk(finish="stop")),
        (0.35, USAGE + DONE),
    ]
    result = run(attempt(staged(schedule))).result
    assert result.failure is None and result.passed
    assert result.answer_channel == "reasoning"
    assert result.ttft_any_ms == pytest.approx(100, abs=30)
    assert result.ttft_content_ms is None
    assert result.total_ms == pytest.approx(250, abs=30)
    assert result.reply_excerpt.startswith("[reasoning only]")
    assert "reasoning channel" in (result.message or "")


def test_wrong_answer_in_the_reasoning_channel() -> None:
    events = [chunk(reasoning="Let me think. It is 12."), chunk(finish="stop"), DONE]
    result = run(attempt(lambda r: sse_response(events))).result
    assert result.failure is Failure.WRONG_ANSWER and result.answer_channel == "reasoning"


def test_reasoning_answer_with_null_content_in_a_json_body() -> None:
    completion = {
        "id": "gen-2",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "reasoning": ARITH.expected},
                "finish_reason": "stop",
            }
        ],
    }
    result = run(attempt(lambda r: httpx.Response(200, json=completion))).result
    assert result.failure is None and result.answer_channel == "reasoning" and result.total_ms is not None


def test_content_answers_record_the_content_channel() -> None:
    result = run(attempt(lambda r: sse_response([chunk(ARITH.expected, finish="stop"), DONE]))).result
    assert result.answer_channel == "content"
    failed = run(attempt(lambda r: httpx.Response(503, json={"error": {"code": 503, "message": "x"}}))).result
    assert failed.answer_channel is None


def test_shared_pool_429_metadata_is_recorded() -> None:
    from tests.live_bodies import live_case

    body = live_case("upstream shared-pool 429").body
    result = run(attempt(lambda r: httpx.Response(429, json=body))).result
    assert result.failure is Failure.RATE_LIMIT_UPSTREAM
    assert result.limit_source == "upstream_provider_shared_pool"
    assert result.is_byok is False
    assert result.remedy_hint is not None and result.remedy_hint.startswith("Retry shortly")
    assert result.error_code == "upstream_provider_shared_pool"


def test_empty_reply() -> None:
    result = run(attempt(lambda r: sse_response([chunk(""), chunk(finish="stop"), DONE]))).result
    assert result.failure is Failure.EMPTY_REPLY and result.ttft_any_ms is None


def test_mid_stream_error_chunk() -> None:
    error = {
        "id": "gen-1",
        "error": {
            "code": 502,
            "message": "Provider disconnected",
            "metadata": {"error_type": "provider_unavailable"},
        },
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    events = [chunk("12"), b"data: " + json.dumps(error).encode() + b"\n\n", DONE]
    outcome = run(attempt(lambda r: sse_response(events)))
    assert outcome.result.failure is Failure.MID_STREAM_ERROR and outcome.retryable
    assert outcome.result.finish_reason == "error"
    assert "Provider disconnected" in (outcome.result.message or "")


def test_cost_and_cache_hit_are_flagged() -> None:
    usage = b'data: {"choices":[],"usage":{"completion_tokens":2,"cost":0.0012}}\n\n'
    events = [chunk(ARITH.expected, finish="stop"), usage, DONE]
    headers = {"X-OpenRouter-Cache-Status": "HIT", "X-Generation-Id": "gen-header"}
    result = run(attempt(lambda r: sse_response(events, headers=headers))).result
    assert result.failure is None and result.cost == 0.0012
    assert result.cache_status == "HIT" and result.generation_id == "gen-header"
    assert "non-zero cost" in result.message and "cache" in result.message


# --- errors before the stream -----------------------------------------------------------------------


def test_account_limits_and_retry_hints() -> None:
    day = {
        "error": {
            "code": 429,
            "message": (
                "Rate limit exceeded: free-models-per-day. "
                "Add 10 credits to unlock 1000 free model requests per day"
            ),
        }
    }
    outcome = run(attempt(lambda r: httpx.Response(429, json=day, headers={"Retry-After": "7"})))
    assert outcome.result.failure is Failure.RATE_LIMIT_ACCOUNT
    assert outcome.limit_scope == "day" and outcome.result.retry_after_s == 7.0
    assert outcome.result.error_code == "free-models-per-day"
    minute = {
        "error": {
            "code": 429,
            "message": "Rate limit exceeded: free-models-per-min.",
            "metadata": {"headers": {"X-RateLimit-Reset": "4102444800000"}},
        }
    }
    outcome = run(attempt(lambda r: httpx.Response(429, json=minute)))
    assert outcome.limit_scope == "minute" and outcome.retryable
    assert outcome.result.retry_after_s is not None and outcome.result.retry_after_s > 1e6


def test_not_retryable_classes() -> None:
    body = {
        "error": {
            "code": 404,
            "message": "No endpoints found for vendor/model:free.",
            "availability": {"code": "no_endpoints", "retryable": False},
        }
    }
    outcome = run(attempt(lambda r: httpx.Response(404, json=body)))
    assert outcome.result.failure is Failure.NO_ENDPOINTS and not outcome.retryable
    assert outcome.result.error_code == "no_endpoints" and outcome.limit_scope is None
    busy = {
        "error": {
            "code": 503,
            "message": "No instances available",
            "availability": {"code": "temporarily_unavailable", "retryable": False},
        }
    }
    outcome = run(attempt(lambda r: httpx.Response(503, json=busy)))
    assert outcome.result.failure is Failure.PROVIDER_ERROR and not outcome.retryable


def test_error_body_that_is_not_json() -> None:
    result = run(attempt(lambda r: httpx.Response(502, text="<html>Bad Gateway</html>"))).result
    assert result.failure is Failure.PROVIDER_ERROR and "Bad Gateway" in result.message


def test_key_echoed_by_a_server_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        echo = f"bad key {request.headers['authorization']}"
        return httpx.Response(401, json={"error": {"code": 401, "message": echo}})

    result = run(attempt(handler)).result
    assert result.failure is Failure.AUTH
    assert KEY not in json.dumps(result.as_row(), default=str)


def test_redirect_is_not_followed_and_carries_no_key_elsewhere() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "https://evil.example/steal"})

    result = run(attempt(handler)).result
    assert result.failure is Failure.TRANSPORT_ERROR and result.http_status == 302
    assert [str(r.url.host) for r in seen] == ["api.example.test"]


# --- broken servers: always a classified failure, never an exception ------------------------------------


def broken_stream(pieces: list[bytes], *, error: Exception | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece
            if error is not None:
                raise error

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return handler


@pytest.mark.parametrize(
    ("handler", "expected", "code"),
    [
        (
            broken_stream([chunk("12"), b'data: {"choices": [{"delta": {"content": "3'], error=None),
            Failure.TRANSPORT_ERROR,
            "InvalidStreamError",
        ),
        (
            broken_stream([chunk("12"), b'data: {"choices": "\xff\xfe"}\n\n']),
            Failure.TRANSPORT_ERROR,
            "InvalidStreamError",
        ),
        (
            broken_stream([chunk("12")], error=httpx.ReadError("connection reset by peer")),
            Failure.TRANSPORT_ERROR,
            "ReadError",
        ),
        (
            broken_stream([chunk("12")], error=httpx.RemoteProtocolError("incomplete chunked read")),
            Failure.TRANSPORT_ERROR,
            "RemoteProtocolError",
        ),
        (broken_stream([chunk("12")], error=httpx.ReadTimeout("timed out")), Failure.TIMEOUT, "ReadTimeout"),
        (broken_stream([chunk("12")]), Failure.TRANSPORT_ERROR, "InvalidStreamError"),  # ended early
        (broken_stream([]), Failure.TRANSPORT_ERROR, "InvalidStreamError"),  # empty body
        (broken_stream([b"data: not json\n\n"]), Failure.TRANSPORT_ERROR, "InvalidStreamError"),
        (lambda r: httpx.Response(200, json=[1, 2]), Failure.TRANSPORT_ERROR, "InvalidStreamError"),
        (
            lambda r: httpx.Response(
                200,
                headers={"content-type": "application/json"},
                content=b'{"choices": [{"message": {"content": "1',
            ),
            Failure.TRANSPORT_ERROR,
            "InvalidStreamError",
        ),
    ],
    ids=[
        "truncated-json",
        "invalid-utf8",
        "reset",
        "protocol",
        "read-timeout",
        "no-finish",
        "empty",
        "not-json",
        "json-array",
        "truncated-body",
    ],
)
def test_broken_servers(handler: Handler, expected: Failure, code: str) -> None:
    result = run(attempt(handler)).result
    assert result.failure is expected
    assert result.error_code == code
    assert not result.passed


def test_connect_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    result = run(attempt(handler)).result
    assert result.failure is Failure.TRANSPORT_ERROR and result.http_status is None
    assert result.error_code == "ConnectError" and "connection refused" in result.message


def test_huge_body_is_capped() -> None:
    settings = make_settings(max_response_bytes=4096)
    filler = b": " + b"x" * 1000 + b"\n\n"
    result = run(
        attempt(
            broken_stream([filler] * 10 + [chunk(ARITH.expected, finish="stop"), DONE]), settings=settings
        )
    ).result
    assert result.failure is Failure.TRANSPORT_ERROR and result.error_code == "ResponseTooLargeError"


def test_probe_once_returns_the_result() -> None:
    async def go() -> ProbeResult:
        settings = make_settings()
        transport = httpx.MockTransport(lambda r: sse_response([chunk(ARITH.expected, finish="stop"), DONE]))
        async with build_http_client(settings, base_url=BASE, api_key=None, transport=transport) as client:
            return await probe_once(client, run_id="r", spec=SPEC, task=ARITH, settings=settings, attempt=3)

    result = run(go())
    assert result.attempt == 3 and result.passed and result.run_id == "r"
    assert result.started_at.tzinfo is not None


def test_result_fits_the_probes_schema(tmp_path: Path) -> None:
    from freemodels.records import probes_frame

    result = run(attempt(lambda r: sse_response([chunk(ARITH.expected, finish="stop"), USAGE, DONE]))).result
    frame = probes_frame([result])
    assert frame.height == 1 and frame["ttft_content_ms"][0] is not None

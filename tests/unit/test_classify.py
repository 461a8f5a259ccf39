"""The failure classifier: the decision tree, envelope parsing, retry hints, and totality."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freemodels.classify import (
    ErrorEnvelope,
    answer_channel,
    classify,
    error_code,
    is_retryable,
    parse_error_envelope,
    parse_retry_after,
    rate_limit_scope,
    retry_hint_s,
)
from freemodels.failures import FAILURE_INFO, Failure


def env(**error: object) -> ErrorEnvelope:
    parsed = parse_error_envelope({"error": error})
    assert parsed is not None
    return parsed


# --- envelope parsing --------------------------------------------------------------------------


def test_full_envelope_is_read() -> None:
    body = json.dumps(
        {
            "error": {
                "code": 429,
                "message": "Rate limit exceeded: free-models-per-min.",
                "metadata": {
                    "error_type": "rate_limit_exceeded",
                    "provider_name": None,
                    "raw": {"detail": "x"},
                    "headers": {"X-RateLimit-Reset": "1741305600000", "X-RateLimit-Limit": "20"},
                },
                "availability": {
                    "code": "capacity_exhausted",
                    "retryable": True,
                    "retry_after": 12,
                    "constraint": {"field": "max_price", "detail": "..."},
                },
            },
            "user_id": "user_x",
        }
    ).encode()
    parsed = parse_error_envelope(body)
    assert parsed == ErrorEnvelope(
        code=429,
        message="Rate limit exceeded: free-models-per-min.",
        error_type="rate_limit_exceeded",
        availability_code="capacity_exhausted",
        retryable=True,
        retry_after_s=12.0,
        reset_ms=1741305600000,
        provider_name=None,
        raw='{"detail": "x"}',
        constraint_field="max_price",
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, None),
        (b"", None),
        (b"\xff\xfe not utf-8", None),
        (b"<html>502 Bad Gateway</html>", None),
        (b"[1, 2]", None),
        (b'{"choices": []}', None),
        (
            b'{"error": {"message": "x", "code": "unsupported_value"}}',
            ErrorEnvelope(message="x", error_type="unsupported_value"),
        ),
        (
            b'{"error": {"message": "m", "type": "invalid_request_error", "code": 400}}',
            ErrorEnvelope(code=400, message="m", error_type="invalid_request_error"),
        ),
        (
            b'{"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}',
            ErrorEnvelope(code=400, message="bad", error_type="BadRequestError"),
        ),
        (b'{"error": "Model not loaded", "code": 503}', ErrorEnvelope(code=503, message="Model not loaded")),
        (
            b'{"choices": [{"finish_reason": "error", "error": {"code": 502, "message": "upstream"}}]}',
            ErrorEnvelope(code=502, message="upstream"),
        ),
        (b'{"error": {"code": true, "message": "odd"}}', ErrorEnvelope(message="odd")),
        (b"[" * 100_000 + b"]" * 100_000, None),
    ],
)
def test_envelope_shapes(body: bytes | None, expected: ErrorEnvelope | None) -> None:
    assert parse_error_envelope(body) == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "error",
                    "code",
                    "message",
                    "metadata",
                    "availability",
                    "raw",
                    "headers",
                    "retry_after",
                    "retryable",
                    "error_type",
                    "provider_name",
                    "choices",
                    "X-RateLimit-Reset",
                    "constraint",
                    "field",
                    "type",
                    "object",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_envelope_parser_is_total_on_json(value: object) -> None:
    parsed = parse_error_envelope(value if isinstance(value, dict) else json.dumps(value, allow_nan=True))
    assert parsed is None or isinstance(parsed, ErrorEnvelope)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_envelope_parser_is_total_on_bytes(body: bytes) -> None:
    parsed = parse_error_envelope(body)
    assert parsed is None or isinstance(parsed, ErrorEnvelope)


# --- the decision tree -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "envelope", "expected"),
    [
        (400, env(code=400, message="acme/fake-1.0 is not a valid model ID"), Failure.WRONG_MODEL_ID),
        (
            400,
            env(code=400, message="x", availability={"code": "model_not_found", "retryable": False}),
            Failure.WRONG_MODEL_ID,
        ),
        (
            400,
            env(code=400, message="This endpoint's maximum context length is 200000 tokens."),
            Failure.CONTEXT_LIMIT,
        ),
        (
            400,
            env(
                code=400,
                message="Provider returned error",
                metadata={"error_type": "context_length_exceeded"},
            ),
            Failure.CONTEXT_LIMIT,
        ),
        (400, env(code=400, message="Provider returned error"), Failure.BAD_REQUEST),
        (
            400,
            env(code=400, message="x", availability={"code": "wrong_endpoint"}),
            Failure.CAPABILITY_UNSUPPORTED,
        ),
        (401, env(code=401, message="No auth credentials found"), Failure.AUTH),
        (401, None, Failure.AUTH),
        (402, env(code=402, message="Insufficient credits"), Failure.CREDITS_REQUIRED),
        (403, env(code=403, message="flagged", metadata={"reasons": ["x"]}), Failure.MODERATION),
        (403, env(code=403, message="x", availability={"code": "region_restricted"}), Failure.MODERATION),
        (
            404,
            env(code=404, message="No endpoints found for tngtech/deepseek-r1t2-chimera:free."),
            Failure.NO_ENDPOINTS,
        ),
        (404, env(code=404, message="x", availability={"code": "model_deprecated"}), Failure.NO_ENDPOINTS),
        (
            404,
            env(code=404, message="x", availability={"code": "model_unavailable_upstream"}),
            Failure.NO_ENDPOINTS,
        ),
        (
            404,
            env(code=404, message="No endpoints found that support tool use."),
            Failure.CAPABILITY_UNSUPPORTED,
        ),
        (
            404,
            env(
                code=404,
                message="x",
                availability={"code": "constraint_filtered", "constraint": {"field": "context_length"}},
            ),
            Failure.CAPABILITY_UNSUPPORTED,
        ),
        (
            404,
            env(
                code=404,
                message="x",
                availability={"code": "constraint_filtered", "constraint": {"field": "max_price"}},
            ),
            Failure.FREE_VARIANT_ENDED,
        ),
        (
            404,
            env(code=404, message="No endpoints found matching your data policy (Free model publication)"),
            Failure.PRIVACY_EXCLUDED,
        ),
        (
            404,
            env(code=404, message="x", availability={"code": "privacy_restricted"}),
            Failure.PRIVACY_EXCLUDED,
        ),
        (
            404,
            env(code=404, message="deepseek/x:free is no longer available as a free model"),
            Failure.FREE_VARIANT_ENDED,
        ),
        (
            404,
            env(code=404, message="x", availability={"code": "free_variant_ended"}),
            Failure.FREE_VARIANT_ENDED,
        ),
        (404, None, Failure.NO_ENDPOINTS),
        (408, env(code=408, message="Request timed out"), Failure.TIMEOUT),
        (413, None, Failure.BAD_REQUEST),
        (422, env(code=422, message="x", metadata={"error_type": "unprocessable"}), Failure.BAD_REQUEST),
        (
            429,
            env(code=429, message="Rate limit exceeded: free-models-per-day. Add 10 credits"),
            Failure.RATE_LIMIT_ACCOUNT,
        ),
        (429, env(code=429, message="Rate limit exceeded: free-models-per-min."), Failure.RATE_LIMIT_ACCOUNT),
        (
            429,
            env(
                code=429,
                message="Rate limit exceeded: limit_rpd/x",
                metadata={"headers": {"X-RateLimit-Reset": "1"}},
            ),
            Failure.RATE_LIMIT_ACCOUNT,
        ),
        (
            429,
            env(
                code=429,
                message="Provider returned error",
                metadata={"raw": "x:free is temporarily rate-limited upstream", "provider_name": "Google"},
            ),
            Failure.RATE_LIMIT_UPSTREAM,
        ),
        (
            429,
            env(code=429, message="x", availability={"code": "capacity_exhausted", "retryable": True}),
            Failure.RATE_LIMIT_UPSTREAM,
        ),
        (429, None, Failure.RATE_LIMIT_ACCOUNT),
        (500, None, Failure.PROVIDER_ERROR),
        (
            502,
            env(code=502, message="x", metadata={"error_type": "provider_unavailable"}),
            Failure.PROVIDER_ERROR,
        ),
        (503, env(code=503, message="No instances available"), Failure.PROVIDER_ERROR),
        (
            503,
            env(code=503, message="x", availability={"code": "temporarily_unavailable", "retryable": True}),
            Failure.PROVIDER_ERROR,
        ),
        (504, env(code=504, message="x", metadata={"error_type": "timeout"}), Failure.TIMEOUT),
        (302, None, Failure.TRANSPORT_ERROR),
        (418, None, Failure.BAD_REQUEST),
    ],
)
def test_status_rules(status: int, envelope: ErrorEnvelope | None, expected: Failure) -> None:
    assert classify(http_status=status, envelope=envelope) is expected
    # A body or exception that arrives alongside never changes a status verdict.
    assert (
        classify(http_status=status, envelope=envelope, exception=httpx.ReadError("x"), content="4")
        is expected
    )


def test_error_in_a_200_before_any_token_is_classified_by_its_code() -> None:
    upstream = env(code=429, message="Provider returned error", metadata={"raw": "rate-limited upstream"})
    assert classify(http_status=200, envelope=upstream) is Failure.RATE_LIMIT_UPSTREAM
    assert classify(http_status=200, envelope=env(code=502, message="bad gateway")) is Failure.PROVIDER_ERROR
    assert classify(http_status=200, envelope=env(message="boom")) is Failure.MID_STREAM_ERROR
    assert (
        classify(http_status=200, envelope=env(message="x", metadata={"error_type": "timeout"}))
        is Failure.TIMEOUT
    )


def test_error_after_tokens_is_mid_stream() -> None:
    boom = env(code=502, message="Provider disconnected", metadata={"error_type": "provider_unavailable"})
    assert (
        classify(http_status=200, envelope=boom, content="Hel", finish_reason="error")
        is Failure.MID_STREAM_ERROR
    )
    assert classify(http_status=200, envelope=boom, reasoning="thinking") is Failure.MID_STREAM_ERROR
    limit = env(code=400, message="Token limit reached")
    assert (
        classify(http_status=200, envelope=limit, reasoning="We need", finish_reason="length")
        is Failure.REASONING_EXHAUSTED
    )


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        (httpx.ReadTimeout("slow"), Failure.TIMEOUT),
        (httpx.WriteTimeout("slow"), Failure.TIMEOUT),
        (TimeoutError(), Failure.TIMEOUT),
        (httpx.ConnectTimeout("x"), Failure.TRANSPORT_ERROR),
        (httpx.PoolTimeout("x"), Failure.TRANSPORT_ERROR),
        (httpx.ConnectError("refused"), Failure.TRANSPORT_ERROR),
        (httpx.ReadError("reset"), Failure.TRANSPORT_ERROR),
        (httpx.RemoteProtocolError("incomplete chunked read"), Failure.TRANSPORT_ERROR),
        (httpx.DecodingError("gzip"), Failure.TRANSPORT_ERROR),
        (ConnectionResetError(), Failure.TRANSPORT_ERROR),
        (ValueError("anything else"), Failure.TRANSPORT_ERROR),
    ],
)
def test_exceptions(exception: BaseException, expected: Failure) -> None:
    assert classify(http_status=None, envelope=None, exception=exception) is expected
    assert classify(http_status=200, envelope=None, exception=exception, content="partial") is expected


def test_deadline_wins_over_everything() -> None:
    assert (
        classify(http_status=200, envelope=None, content="42", passed=True, deadline_hit=True)
        is Failure.TIMEOUT
    )
    assert classify(http_status=None, envelope=None, deadline_hit=True) is Failure.TIMEOUT


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"content": "4242", "passed": True, "finish_reason": "stop"}, None),
        ({"content": "4242", "passed": None, "finish_reason": "stop"}, None),
        ({"content": "4242", "passed": None, "finish_reason": None}, None),
        ({"content": "4241", "passed": False, "finish_reason": "stop"}, Failure.WRONG_ANSWER),
        ({"content": "", "finish_reason": "stop"}, Failure.EMPTY_REPLY),
        ({"content": None, "finish_reason": "stop"}, Failure.EMPTY_REPLY),
        ({"content": " \n ", "finish_reason": "stop"}, Failure.EMPTY_REPLY),
        # The answer in the reasoning channel: graded there, never an empty reply.
        ({"content": "", "reasoning": "hmm", "finish_reason": "stop"}, None),
        ({"content": None, "reasoning": "7", "finish_reason": "stop", "passed": True}, None),
        ({"content": "", "reasoning": "7", "finish_reason": None, "passed": True}, None),
        ({"content": "", "reasoning": "hmm", "finish_reason": "stop", "passed": False}, Failure.WRONG_ANSWER),
        ({"content": "", "reasoning": "hmm", "finish_reason": "tool_calls"}, Failure.EMPTY_REPLY),
        ({"content": "", "reasoning": "hmm", "finish_reason": "length"}, Failure.REASONING_EXHAUSTED),
        ({"content": "", "finish_reason": "length"}, Failure.REASONING_EXHAUSTED),
        ({"content": "", "finish_reason": "content_filter"}, Failure.MODERATION),
        ({"content": "part", "finish_reason": "error", "passed": True}, Failure.MID_STREAM_ERROR),
        ({"content": "4242", "passed": False, "finish_reason": "length"}, Failure.WRONG_ANSWER),
    ],
)
def test_success_status_rules(kwargs: dict[str, object], expected: Failure | None) -> None:
    assert classify(http_status=200, envelope=None, **kwargs) is expected  # type: ignore[arg-type]


def test_no_status_and_nothing_else_is_a_transport_error() -> None:
    assert classify(http_status=None, envelope=None, content="4") is Failure.TRANSPORT_ERROR


EXCEPTIONS = st.sampled_from(
    [
        None,
        httpx.ReadTimeout("r"),
        httpx.ConnectError("c"),
        httpx.RemoteProtocolError("p"),
        TimeoutError(),
        OSError("o"),
        ValueError("v"),
        KeyboardInterrupt(),
        RuntimeError("r"),
    ]
)
ENVELOPES = st.none() | st.builds(
    ErrorEnvelope,
    code=st.none() | st.integers(-10, 1000),
    message=st.none() | st.text(max_size=40),
    error_type=st.none() | st.sampled_from(["timeout", "server", "authentication", "x", ""]),
    availability_code=st.none()
    | st.sampled_from(["no_endpoints", "capacity_exhausted", "?", "constraint_filtered"]),
    retryable=st.none() | st.booleans(),
    retry_after_s=st.none() | st.floats(0, 100),
    reset_ms=st.none() | st.integers(0, 2**45),
    provider_name=st.none() | st.text(max_size=10),
    raw=st.none() | st.text(max_size=40),
    constraint_field=st.none() | st.sampled_from(["max_price", "context_length"]),
)


@settings(max_examples=1000, deadline=None)
@given(
    status=st.none() | st.integers(-5, 1000),
    envelope=ENVELOPES,
    exception=EXCEPTIONS,
    finish_reason=st.none()
    | st.sampled_from(["stop", "length", "error", "content_filter", "tool_calls", ""])
    | st.text(max_size=8),
    content=st.none() | st.text(max_size=10),
    reasoning=st.none() | st.text(max_size=10),
    passed=st.none() | st.booleans(),
    deadline_hit=st.booleans(),
)
def test_classify_is_total(
    status: int | None,
    envelope: ErrorEnvelope | None,
    exception: BaseException | None,
    finish_reason: str | None,
    content: str | None,
    reasoning: str | None,
    passed: bool | None,
    deadline_hit: bool,
) -> None:
    result = classify(
        http_status=status,
        envelope=envelope,
        exception=exception,
        finish_reason=finish_reason,
        content=content,
        reasoning=reasoning,
        passed=passed,
        deadline_hit=deadline_hit,
    )
    assert result is None or isinstance(result, Failure)
    if result is None:  # only a clean, non-empty, not-rejected 2xx answer is a success
        assert not deadline_hit and envelope is None and exception is None
        assert status is not None and 200 <= status < 300
        assert answer_channel(content, reasoning, finish_reason) is not None
        assert passed is not False and finish_reason != "error"
    else:
        assert result in FAILURE_INFO
        assert isinstance(is_retryable(result, envelope), bool)


# --- retry hints, scope, retryability, error codes ---------------------------------------------


def test_retry_hint_order() -> None:
    now = 1_000_000.0
    both = env(
        code=429,
        message="x",
        availability={"retry_after": 7},
        metadata={"headers": {"X-RateLimit-Reset": str(int((now + 30) * 1000))}},
    )
    assert retry_hint_s({"Retry-After": "3"}, both, now_s=now) == 3.0
    assert retry_hint_s({}, both, now_s=now) == 7.0
    reset_only = env(
        code=429, message="x", metadata={"headers": {"x-ratelimit-reset": str(int((now + 30) * 1000))}}
    )
    assert retry_hint_s(httpx.Headers({}), reset_only, now_s=now) == pytest.approx(30.0)
    assert retry_hint_s({"X-RateLimit-Reset": str(int((now + 12) * 1000))}, None, now_s=now) == pytest.approx(
        12.0
    )
    assert retry_hint_s({}, env(code=429, message="x"), now_s=now) is None
    assert retry_hint_s(None, None, now_s=now) is None
    # A reset already in the past is no hint: "retry now" three times over would waste the quota.
    past = env(code=429, message="x", metadata={"headers": {"X-RateLimit-Reset": "1000"}})
    assert retry_hint_s({}, past, now_s=now) is None
    assert retry_hint_s({"X-RateLimit-Reset": str(int(now * 1000))}, None, now_s=now) is None
    assert retry_hint_s({"Retry-After": "soon"}, both, now_s=now) == 7.0  # unreadable header skipped


def test_parse_retry_after() -> None:
    assert parse_retry_after("120", now_s=0) == 120.0
    assert parse_retry_after("1.5", now_s=0) == 1.5
    assert parse_retry_after("-3", now_s=0) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now_s=1445412490.0) == 0.0
    assert parse_retry_after("garbage", now_s=0) is None
    assert parse_retry_after(None, now_s=0) is None


def test_rate_limit_scope() -> None:
    assert rate_limit_scope(env(message="Rate limit exceeded: free-models-per-day. Add 10 credits")) == "day"
    assert rate_limit_scope(env(message="Rate limit exceeded: free-models-per-day-high-balance")) == "day"
    assert rate_limit_scope(env(message="Rate limit exceeded: limit_rpd/model/x")) == "day"
    assert rate_limit_scope(env(message="Rate limit exceeded: free-models-per-min.")) == "minute"
    assert rate_limit_scope(env(message="Rate limit exceeded")) == "minute"
    assert rate_limit_scope(None) == "minute"


def test_retryability_follows_the_class_and_the_server() -> None:
    assert is_retryable(Failure.RATE_LIMIT_UPSTREAM, None)
    assert is_retryable(Failure.PROVIDER_ERROR, env(availability={"retryable": True}))
    assert not is_retryable(Failure.PROVIDER_ERROR, env(availability={"retryable": False}))
    assert not is_retryable(Failure.NO_ENDPOINTS, env(availability={"retryable": True}))
    for failure in (Failure.WRONG_MODEL_ID, Failure.NO_ENDPOINTS, Failure.PRIVACY_EXCLUDED, Failure.AUTH):
        assert not is_retryable(failure, None)


def test_error_code() -> None:
    assert error_code(None, env(message="x"), None) is None
    assert (
        error_code(Failure.NO_ENDPOINTS, env(message="x", availability={"code": "no_endpoints"}), None)
        == "no_endpoints"
    )
    day = env(
        message="Rate limit exceeded: free-models-per-day. Add 10 credits",
        metadata={"error_type": "rate_limit_exceeded"},
    )
    assert error_code(Failure.RATE_LIMIT_ACCOUNT, day, None) == "free-models-per-day"
    assert (
        error_code(Failure.TIMEOUT, env(message="x", metadata={"error_type": "timeout"}), None) == "timeout"
    )
    assert error_code(Failure.TRANSPORT_ERROR, None, httpx.ReadError("x")) == "ReadError"
    assert error_code(Failure.AUTH, None, None) is None

"""The failure classifier and its helpers on hostile input: total, typed, and never fooled into success.

``classify`` maps every combination of status, error object, exception and stream outcome to exactly
one :class:`Failure` (or None for a success); the envelope parser, the retry-hint reader, the
rate-limit scope and the error code take any JSON and any header text without raising.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from hypothesis import example, given, settings
from hypothesis import strategies as st

from freemodels.classify import (
    ErrorEnvelope,
    classify,
    classify_status,
    error_code,
    is_retryable,
    parse_error_envelope,
    parse_retry_after,
    rate_limit_scope,
    retry_hint_s,
    suggested_model_in,
)
from freemodels.failures import FAILURE_INFO, Failure

TEXT = st.text(max_size=16) | st.sampled_from(
    [
        "Rate limit exceeded: free-models-per-day.",
        "Rate limit exceeded: free-models-per-min.",
        "Provider returned error",
        "is not a valid model ID",
        "No endpoints found that support tool use",
        "data policy",
        "maximum context length",
        "\x00\u202e<script>",
    ]
)
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSON = st.recursive(
    LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=10
)
ERROR_OBJECT = st.fixed_dictionaries(
    {},
    optional={
        "code": LEAF | st.sampled_from([400, 401, 402, 403, 404, 408, 429, 500, 502, 503, 504, "429"]),
        "message": TEXT | JSON,
        "type": LEAF,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "error_type": LEAF | st.sampled_from(["timeout", "server", "authentication", "refusal"]),
                "raw": JSON,
                "provider_name": LEAF,
                "headers": st.dictionaries(
                    st.sampled_from(["X-RateLimit-Reset", "x-ratelimit-reset", "x"]), LEAF
                ),
            },
        )
        | JSON,
        "availability": st.fixed_dictionaries(
            {},
            optional={
                "code": LEAF
                | st.sampled_from(
                    ["model_not_found", "no_endpoints", "capacity_exhausted", "privacy_restricted"]
                ),
                "retryable": LEAF,
                "retry_after": LEAF,
                "constraint": st.fixed_dictionaries({}, optional={"field": LEAF | st.just("max_price")})
                | JSON,
            },
        )
        | JSON,
    },
)
BODY = st.one_of(
    ERROR_OBJECT.map(lambda e: {"error": e}),
    ERROR_OBJECT.map(lambda e: {"choices": [{"error": e, "finish_reason": "error"}]}),
    st.fixed_dictionaries({"object": st.just("error"), "message": TEXT, "code": LEAF}),
    st.fixed_dictionaries({"error": TEXT, "code": LEAF}),
    JSON,
)
HEADER_TEXT = st.text(max_size=40) | st.sampled_from(
    [
        *("Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 GMT"),
        *("1e400", "-1", "nan", "9" * 40, "  30 ", "Tue, 32 Foo 2020 99:99:99 +9999", "Wed, 21 Oct 2015"),
    ]
)
EXCEPTION = st.none() | st.sampled_from(
    [
        httpx.ReadTimeout("r"),
        httpx.ConnectTimeout("c"),
        httpx.PoolTimeout("p"),
        httpx.WriteTimeout("w"),
        httpx.ConnectError("c"),
        httpx.RemoteProtocolError("p"),
        httpx.ReadError("r"),
        httpx.DecodingError("d"),
        httpx.TooManyRedirects("t"),
        TimeoutError(),
        ConnectionResetError(),
        OSError(),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
        RecursionError(),
        MemoryError(),
        KeyboardInterrupt(),
        SystemExit(3),
        Exception("?"),
    ]
)
_NOT_AN_ANSWER = ("length", "content_filter", "error", "tool_calls")
FINISH = st.none() | st.sampled_from(["stop", "length", "error", "content_filter", "tool_calls", ""]) | TEXT


def _envelope_of(body: Any) -> ErrorEnvelope | None:
    """The envelope of ``body``; decoded, as text and as bytes it must read the same."""
    text = json.dumps(body, allow_nan=True)
    parsed = parse_error_envelope(text)
    assert parsed is None or isinstance(parsed, ErrorEnvelope)
    assert parse_error_envelope(text.encode()) == parsed
    if isinstance(body, dict):
        assert parse_error_envelope(json.loads(text)) == parsed
    return parsed


@settings(max_examples=500, deadline=None)
@given(BODY)
@example({"error": {"code": 1e308, "availability": {"retry_after": float("inf")}}})
@example({"error": {"metadata": {"raw": {"deep": [[[[[[["x"]]]]]]]}}}})
@example({"error": {"code": "²³", "metadata": {"headers": {"X-RateLimit-Reset": "¹"}}}})  # found: int("²³")
def test_the_envelope_parser_reads_any_error_object_into_typed_fields(body: Any) -> None:
    env = _envelope_of(body)
    if env is None:
        return
    assert env.code is None or isinstance(env.code, int)
    for text, limit in (
        (env.message, 2000),
        (env.error_type, 2000),
        (env.raw, 4000),
        (env.provider_name, 2000),
    ):
        assert text is None or (isinstance(text, str) and text.strip() and len(text) <= limit)
    assert env.retryable in (None, True, False)
    assert env.retry_after_s is None or (math.isfinite(env.retry_after_s) and env.retry_after_s >= 0)
    assert env.reset_ms is None or isinstance(env.reset_ms, int)
    assert rate_limit_scope(env) in ("minute", "day")


@settings(max_examples=1000, deadline=None)
@example(  # found: a superscript digit passed str.isdigit() and made int() raise
    status=None,
    body={"object": "error", "message": "", "code": "¹"},
    exception=None,
    finish=None,
    content=None,
    reasoning=None,
    passed=None,
    deadline_hit=False,
)
@given(
    status=st.none() | st.integers(-1, 1000),
    body=st.none() | BODY,
    exception=EXCEPTION,
    finish=FINISH,
    content=st.none() | TEXT,
    reasoning=st.none() | TEXT,
    passed=st.none() | st.booleans(),
    deadline_hit=st.booleans(),
)
def test_every_outcome_has_exactly_one_class(
    status: int | None,
    body: Any,
    exception: BaseException | None,
    finish: str | None,
    content: str | None,
    reasoning: str | None,
    passed: bool | None,
    deadline_hit: bool,
) -> None:
    env = _envelope_of(body) if body is not None else None
    args = {
        "http_status": status,
        "envelope": env,
        "exception": exception,
        "finish_reason": finish,
        "content": content,
        "reasoning": reasoning,
        "passed": passed,
        "deadline_hit": deadline_hit,
    }
    failure = classify(**args)  # type: ignore[arg-type]
    assert failure is None or failure in FAILURE_INFO
    assert classify(**args) is failure  # type: ignore[arg-type]  # a function of its input only
    if failure is None:
        # A success needs a 2xx answer with text (content, or an answer in the reasoning channel),
        # no error object, no exception and no deadline.
        assert status is not None and 200 <= status < 300
        assert env is None and exception is None and not deadline_hit
        assert (content or "").strip() or ((reasoning or "").strip() and finish not in _NOT_AN_ANSWER)
        assert passed is not False and finish != "error"
    if env is not None and (status is None or 200 <= status < 300):
        assert failure is not None  # an error object inside a 2xx answer is never a success
    if status is not None and 300 <= status <= 599:
        assert (failure is not None and failure is classify_status(status, env)) or deadline_hit
    if failure is not None:
        assert isinstance(is_retryable(failure, env), bool)
    code = error_code(failure, env, exception)
    assert code is None or isinstance(code, str)


@settings(max_examples=500, deadline=None)
@given(
    retry_after=st.none() | HEADER_TEXT,
    reset=st.none() | HEADER_TEXT,
    body=st.none() | BODY,
    now=st.floats(min_value=0, max_value=4e9),
)
def test_retry_hints_from_any_header_text_are_a_wait_or_nothing(
    retry_after: str | None, reset: str | None, body: Any, now: float
) -> None:
    raw = [(b"Retry-After", retry_after), (b"X-RateLimit-Reset", reset)]
    headers = httpx.Headers(
        [(name, value.encode("utf-8", "surrogatepass")) for name, value in raw if value is not None]
    )
    env = _envelope_of(body) if body is not None else None
    hint = retry_hint_s(headers, env, now_s=now)
    assert hint is None or (math.isfinite(hint) and hint >= 0)
    plain = parse_retry_after(retry_after, now_s=now)
    assert plain is None or (math.isfinite(plain) and plain >= 0)


@given(st.sampled_from(list(Failure)), st.none() | BODY)
def test_a_server_can_forbid_a_retry_but_never_force_one(failure: Failure, body: Any) -> None:
    env = _envelope_of(body) if body is not None else None
    allowed = is_retryable(failure, env)
    assert allowed <= FAILURE_INFO[failure].retryable
    if env is not None and env.retryable is False:
        assert not allowed


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=300)
    | st.builds(lambda a, b: f"{a} paid slug: {b}", st.text(max_size=40), st.text(max_size=40))
)
def test_the_suggested_slug_is_part_of_the_message_or_nothing(text: str) -> None:
    slug = suggested_model_in(text)
    assert slug is None or (slug in text and "/" in slug and slug.strip() == slug)

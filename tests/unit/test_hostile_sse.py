"""Hostile streams: the SSE parser and the probe's response reader on anything a server can send.

The parser never raises and keeps what well-formed events carry whatever the line endings and chunk
boundaries. A whole probe attempt on a generated response (any status, headers, SSE or JSON body with
hostile values, any chunking, a transport error at any point) returns one classified result whose
text fields are capped and never carry the API key, and raises nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, unquote

import httpx
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from freemodels.client import build_http_client
from freemodels.failures import Failure
from freemodels.probe import probe_attempt
from freemodels.records import ProbeSpec
from freemodels.settings import Settings
from freemodels.sse import SSEComment, SSEEvent, SSEParseError, SSEParser, parse_all
from freemodels.suite import build_suite

KEY = "sk-or-v1-hostile0123456789abcdef0123456789"
TASK = build_suite(11)[0]
SPEC = ProbeSpec(model_id="vendor/model:free", family="vendor/model", task=TASK.name)
CONFIG = Settings(probe_deadline_s=5.0, read_timeout_s=5.0, max_response_bytes=4096)

TEXT = st.text(max_size=12) | st.sampled_from(
    [
        *(
            TASK.expected,
            f" {TASK.expected}\n",
            f"Bearer {KEY}",
            KEY,
            "",
            "\x00\x1b[2J",
            "\u202e",
            "data: x\n\n",
        ),
        # the key in part, in another case, URL-encoded, in a URL; text that is not valid Unicode
        *(KEY[-12:], KEY[5:15].upper(), quote(KEY, safe=""), f"http://u:{KEY}@h/v1", f"?key={KEY[3:]}"),
        *("\ud800", "x\udfff\ud800y", "\ufffe\uffff\ufdd0", "\U0010ffff"),
    ]
)
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSONISH = st.recursive(
    LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=8
)
ERROR = st.fixed_dictionaries(
    {},
    optional={
        "code": LEAF | st.sampled_from([400, 401, 404, 429, 502, "429", "rate_limit"]),
        "message": TEXT
        | st.sampled_from(["Rate limit exceeded: free-models-per-day.", "Provider returned error"]),
        "type": LEAF,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "error_type": LEAF,
                "raw": JSONISH,
                "provider_name": LEAF,
                "headers": st.dictionaries(st.sampled_from(["X-RateLimit-Reset", "x-ratelimit-reset"]), LEAF),
            },
        )
        | LEAF,
        "availability": st.fixed_dictionaries(
            {},
            optional={
                "code": LEAF | st.sampled_from(["no_endpoints", "capacity_exhausted", "constraint_filtered"]),
                "retryable": LEAF,
                "retry_after": LEAF,
                "constraint": st.fixed_dictionaries({}, optional={"field": LEAF}) | LEAF,
            },
        )
        | LEAF,
    },
)
DELTA = st.fixed_dictionaries(
    {},
    optional={
        "role": LEAF,
        "content": TEXT | JSONISH,
        "reasoning": TEXT | LEAF,
        "reasoning_details": st.lists(st.fixed_dictionaries({}, optional={"text": LEAF}), max_size=2) | LEAF,
        "refusal": LEAF,
        "tool_calls": JSONISH,
    },
)
CHOICE = st.fixed_dictionaries(
    {},
    optional={
        "index": LEAF | st.just(0),
        "delta": DELTA | LEAF,
        "message": DELTA | LEAF,
        "finish_reason": st.sampled_from(["stop", "length", "error", "content_filter"]) | LEAF,
        "error": ERROR | LEAF,
    },
)
CHUNK = st.fixed_dictionaries(
    {},
    optional={
        "id": LEAF,
        "provider": LEAF,
        "choices": st.lists(CHOICE | LEAF, max_size=2) | LEAF,
        "usage": st.fixed_dictionaries(
            {},
            optional={
                "completion_tokens": LEAF,
                "cost": LEAF,
                "completion_tokens_details": st.fixed_dictionaries({}, optional={"reasoning_tokens": LEAF}),
            },
        )
        | LEAF,
        "error": ERROR | LEAF,
        "timings": st.fixed_dictionaries({}, optional={"prompt_ms": LEAF, "predicted_ms": LEAF}) | LEAF,
        "object": st.just("error") | LEAF,
        "message": LEAF,
    },
)
LINE = st.one_of(
    CHUNK.map(lambda c: b"data: " + json.dumps(c, allow_nan=True).encode()),
    st.sampled_from(
        [b"data: [DONE]", b": OPENROUTER PROCESSING", b"event: error", b"id: 7", b"retry: 10", b""]
    ),
    st.binary(max_size=16),
)
EOL = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n"])
SSE_BODY = st.lists(st.tuples(LINE, EOL), max_size=8).map(lambda items: b"".join(a + b for a, b in items))
JSON_BODY = (CHUNK | st.fixed_dictionaries({"error": ERROR}) | JSONISH).map(
    lambda v: json.dumps(v, allow_nan=True).encode()
)


def _stream(content: Any, finish: Any, extras: list[bytes], done: bool) -> bytes:
    """A plausible stream (role, content, finish, usage, [DONE]) with hostile lines mixed in."""
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": content}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        {"choices": [], "usage": {"completion_tokens": 3, "cost": 0}},
    ]
    lines = [b"data: " + json.dumps(c, allow_nan=True).encode() for c in chunks]
    for n, extra in enumerate(extras):
        lines.insert(1 + n % len(lines), extra)
    if done:
        lines.append(b"data: [DONE]")
    return b"".join(line + b"\n\n" for line in lines)


PLAUSIBLE_SSE = st.builds(
    _stream,
    TEXT | LEAF,
    st.sampled_from(["stop", "length", "error", "content_filter", None]) | LEAF,
    st.lists(LINE, max_size=2),
    st.booleans(),
)
BODY = PLAUSIBLE_SSE | SSE_BODY | JSON_BODY | st.binary(max_size=64) | st.just(b"x" * 10_000)
CONTENT_TYPE = st.sampled_from(
    ["text/event-stream", "application/json", "text/html", "", "text/event-stream; charset=latin-1"]
)
HEADER_VALUE = st.sampled_from(
    [
        *("", "0", "-5", "1.5", "nan", "inf", "1e400", "garbage", "99999999999999999999", "1741305600000"),
        *("Wed, 21 Oct 2015 07:28:00 GMT", "Thu, 31 Dec 9999 23:59:59 GMT"),
    ]
)
STATUS = st.sampled_from(
    [
        200,
        200,
        200,
        201,
        204,
        206,
        299,
        301,
        307,
        400,
        401,
        402,
        403,
        404,
        408,
        413,
        429,
        500,
        502,
        503,
        504,
        599,
    ]
) | st.integers(200, 599)
FAILS_WITH = st.none() | st.sampled_from(
    [httpx.ReadError("r"), httpx.RemoteProtocolError("p"), httpx.ReadTimeout("t"), httpx.DecodingError("d")]
)


# --- the parser ------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=20), max_size=6
    ),
    EOL,
    st.data(),
)
def test_well_formed_events_survive_any_line_ending_and_any_split(
    payloads: list[str], eol: bytes, data: st.DataObject
) -> None:
    sep = eol[: len(eol) // 2] if eol in (b"\n\n", b"\r\n\r\n") else eol
    body = b"".join(b": keep-alive" + sep + b"data: " + p.encode() + sep + sep for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    parser = SSEParser()
    items: list[Any] = []
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        items += parser.feed(body[start:end])
    items += parser.close()
    events = [i for i in items if isinstance(i, SSEEvent)]
    assert [e.data for e in events] == payloads  # "data: " loses exactly its one space
    assert sum(isinstance(i, SSEComment) for i in items) == len(payloads)
    assert not any(isinstance(i, SSEParseError) for i in items)


@settings(max_examples=300, deadline=None)
@given(SSE_BODY | st.binary(max_size=200))
@example(b"\xff\xfe\xfd" * 100 + b"\n")
@example(b"data: " + b"x" * 100_000)  # one huge line without an end
def test_the_parser_only_returns_items(body: bytes) -> None:
    items = parse_all(body, chunk_size=7)
    assert all(isinstance(i, SSEEvent | SSEComment | SSEParseError) for i in items)
    assert items == parse_all(body)


# --- a whole probe attempt ---------------------------------------------------------------------------


async def _body(body: bytes, cuts: list[int], fail: Exception | None) -> AsyncIterator[bytes]:
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        yield body[start:end]
    if fail is not None:
        raise fail


async def _attempt(response: httpx.Response) -> Any:
    async with build_http_client(
        CONFIG,
        base_url="https://or.example.test/api/v1",
        api_key=KEY,
        transport=httpx.MockTransport(lambda _: response),
    ) as client:
        return await probe_attempt(client, run_id="r", spec=SPEC, task=TASK, settings=CONFIG, attempt=1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(  # the plain success
    status=200,
    content_type="text/event-stream",
    retry_after=None,
    reset=None,
    body=_stream(TASK.expected, "stop", [], True),
    fail=None,
    data=None,
)
@example(  # a server echoing the key where only short codes are expected
    status=200,
    content_type="text/event-stream",
    retry_after=None,
    reset=None,
    body=_stream(None, f"Bearer {KEY}", [], False),
    fail=None,
    data=None,
)
@example(  # the same, in an error envelope's codes and a provider name
    status=429,
    content_type="application/json",
    retry_after="1e400",
    reset="nan",
    body=json.dumps(
        {
            "error": {
                "code": KEY,
                "message": KEY,
                "metadata": {"provider_name": KEY, "error_type": KEY},
                "availability": {"code": KEY},
            }
        }
    ).encode(),
    fail=None,
    data=None,
)
@given(
    status=STATUS,
    content_type=CONTENT_TYPE,
    retry_after=st.none() | HEADER_VALUE,
    reset=st.none() | HEADER_VALUE,
    body=BODY,
    fail=FAILS_WITH,
    data=st.data(),
)
def test_any_response_ends_in_one_classified_result(
    status: int,
    content_type: str,
    retry_after: str | None,
    reset: str | None,
    body: bytes,
    fail: Exception | None,
    data: st.DataObject | None,
) -> None:
    drawn = data.draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=4)) if data is not None else []
    cuts = sorted(set(drawn))
    cuts = [c for c in cuts if 0 < c < len(body)]
    headers = {"content-type": content_type} if content_type else {}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if reset is not None:
        headers["x-ratelimit-reset"] = reset
    response = httpx.Response(status, headers=headers, content=_body(body, cuts, fail))
    outcome = asyncio.run(_attempt(response))
    result = outcome.result
    event(result.failure.value if result.failure is not None else "success")
    assert result.failure is None or isinstance(result.failure, Failure)
    assert result.passed == (result.failure is None)
    if result.failure is None:
        assert 200 <= status < 300 and TASK.grade(result.reply_excerpt)  # (an error after [DONE] is moot)
    assert result.failure is not None or not outcome.retryable
    assert outcome.limit_scope in (None, "minute", "day")
    assert result.message is None or len(result.message) <= 500
    assert result.reply_excerpt is None or len(result.reply_excerpt) <= 200
    assert result.retry_after_s is None or result.retry_after_s >= 0
    row = json.dumps(result.as_row(), default=str, ensure_ascii=False)
    row.encode("utf-8")  # valid text: no lone surrogate reaches a Parquet or DuckDB writer
    assert not any(c in row for c in "\ufffe\uffff\ufdd0")
    lowered = unquote(row).lower()
    assert not [KEY[i : i + 8] for i in range(len(KEY) - 7) if KEY[i : i + 8].lower() in lowered]

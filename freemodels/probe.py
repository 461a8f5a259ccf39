"""One streaming probe attempt: send one task to one model and measure it honestly.

Timing protocol (all on ``time.perf_counter_ns``, relative to the moment the request is sent):

* a byte chunk is stamped the instant it arrives, before any parsing; every SSE event the chunk
  completes carries that stamp;
* SSE comments (``: OPENROUTER PROCESSING``) and role-only or empty deltas are not tokens;
* **TTFT-any** = first content, reasoning, refusal or tool-call text; **TTFT-content** = first
  non-empty ``delta.content``; **total** = the last content token (not ``[DONE]``, not usage), or the
  last reasoning token when the whole answer came in the reasoning channel (content empty, finish
  reason ``stop``: see :func:`~freemodels.classify.answer_channel`); such an answer is graded on the
  reasoning text and recorded with ``answer_channel = "reasoning"``;
* a total deadline (``settings.probe_deadline_s``) wraps the whole request, on top of httpx's
  per-read timeout, which keep-alive comments keep resetting;
* at most ``settings.max_response_bytes`` are read.

A server that ignores ``stream: true`` and answers with one JSON body is measured too: both TTFTs
are then the arrival of the body's first non-blank byte and the total is the arrival of its last byte.

Nothing raises out of :func:`probe_attempt` for anything a server can send: every outcome (errors,
resets, stalls, invalid UTF-8, truncated JSON, oversized bodies, the deadline) becomes a
:class:`~freemodels.records.ProbeResult` with a :class:`~freemodels.failures.Failure` class.
Retries are not made here: :mod:`freemodels.scheduler` is the only retry loop.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from freemodels.classify import (
    ErrorEnvelope,
    RateLimitScope,
    answer_channel,
    classify,
    error_code,
    is_retryable,
    parse_error_envelope,
    rate_limit_scope,
    retry_hint_s,
)
from freemodels.client import sent_secret
from freemodels.failures import Failure
from freemodels.records import ProbeResult, ProbeSpec
from freemodels.secrets import untrusted
from freemodels.settings import Settings
from freemodels.sse import SSEComment, SSEEvent, SSEParseError, SSEParser
from freemodels.suite import TaskInstance

CHAT_PATH = "chat/completions"
EXCERPT_CHARS = 200
MESSAGE_CHARS = 500
RAW_TEXT_CHARS = 2000  # server text kept before redaction; cut to its column's length only after it
ERROR_BODY_MAX_BYTES = 1_000_000
CACHE_STATUS_HEADER = "x-openrouter-cache-status"
GENERATION_ID_HEADER = "x-generation-id"
DRAIN_GRACE_S = 0.1
"""After ``[DONE]``, how long to wait for the rest of the body (the chunked terminator) so the
connection can go back to the pool; a body left unread makes httpx close the connection, and every
probe would then pay a new TCP (and TLS) handshake."""


class ProbeProtocolError(Exception):
    """The answer is not a readable chat completion (bad SSE, bad JSON, too large, cut short)."""


class ResponseTooLargeError(ProbeProtocolError):
    """The body grew past ``settings.max_response_bytes``."""


class InvalidStreamError(ProbeProtocolError):
    """Invalid UTF-8, invalid JSON in an event, or a stream that ended before it finished."""


# Everything a server or the network can make the request raise. Anything else is a bug and
# propagates (the scheduler isolates it from the other probes).
_EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    ProbeProtocolError,
    OSError,
)


def build_request_body(
    spec: ProbeSpec,
    task: TaskInstance,
    settings: Settings,
    *,
    cost_guard: bool,
    models: Sequence[str] | None = None,
) -> dict[str, object]:
    """The JSON body of one probe.

    ``models`` adds OpenRouter's fallback array (the models tried in order when one errors; the
    response's ``model`` names the one that served). No ``response_format`` (the prompt asks for
    JSON where needed, which every model can follow),
    no cache header or cache option. ``stream_options.include_usage`` makes vLLM and llama.cpp
    report usage; OpenRouter ignores it. ``cost_guard`` adds ``provider.max_price`` zero so that
    OpenRouter never routes a free probe to a paid endpoint.
    """
    body: dict[str, object] = {
        "model": spec.model_id,
        "messages": task.messages(),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": settings.max_tokens,
        "temperature": 0,
    }
    if models:
        body["models"] = list(models)
    if cost_guard:
        body["provider"] = {"max_price": {"prompt": 0, "completion": 0, "request": 0}}
    return body


@dataclass(slots=True)
class StreamState:
    """What one response has told us so far. ``feed_chunk`` is pure apart from mutating self."""

    t0_ns: int
    first_any_ns: int | None = None
    first_content_ns: int | None = None
    last_content_ns: int | None = None
    last_reasoning_ns: int | None = None
    content_parts: list[str] = field(default_factory=list)
    reasoning_parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    generation_id: str | None = None
    provider: str | None = None
    model: str | None = None  # the model the response names (with ``models``: the one that served)
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost: float | None = None
    server_ttft_ms: float | None = None
    server_total_ms: float | None = None
    envelope: ErrorEnvelope | None = None
    done: bool = False  # saw [DONE]
    comments: int = 0
    events: int = 0
    secret: str | None = field(default=None, repr=False)  # the key sent, to scrub from server text

    @property
    def content(self) -> str:
        return "".join(self.content_parts)

    @property
    def reasoning(self) -> str:
        return "".join(self.reasoning_parts)

    def ms(self, t_ns: int | None) -> float | None:
        """Milliseconds from the request to ``t_ns``."""
        return None if t_ns is None else round((t_ns - self.t0_ns) / 1e6, 3)

    def feed_chunk(self, chunk: Mapping[str, object], t_ns: int) -> None:
        """Take in one ``chat.completion.chunk`` (or a whole non-streaming completion)."""
        self.events += 1
        if self.generation_id is None and isinstance(chunk.get("id"), str):
            self.generation_id = str(chunk["id"])[:RAW_TEXT_CHARS]
        if isinstance(chunk.get("provider"), str) and chunk["provider"]:
            self.provider = str(chunk["provider"])[:RAW_TEXT_CHARS]
        if self.model is None and isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = str(chunk["model"])[:RAW_TEXT_CHARS]
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self._take_usage(usage)
        timings = chunk.get("timings")
        if isinstance(timings, Mapping):
            self._take_timings(timings)
        if self.envelope is None:
            self.envelope = parse_error_envelope(chunk)
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index", 0)
            if index not in (0, None):
                continue  # n=1: only the first choice is the answer
            delta = choice.get("delta")
            if not isinstance(delta, Mapping):
                delta = choice.get("message")
            if isinstance(delta, Mapping):
                self._take_delta(delta, t_ns)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason[:RAW_TEXT_CHARS]

    def _take_delta(self, delta: Mapping[str, object], t_ns: int) -> None:
        text = _text_of(delta.get("content"))
        if text:
            self.content_parts.append(text)
            if self.first_content_ns is None:
                self.first_content_ns = t_ns
            self.last_content_ns = t_ns
            self._any(t_ns)
        reasoning = _text_of(delta.get("reasoning")) or _text_of(delta.get("reasoning_content"))
        if not reasoning:
            details = delta.get("reasoning_details")
            if isinstance(details, list):
                reasoning = "".join(
                    _text_of(d.get("text")) or _text_of(d.get("summary"))
                    for d in details
                    if isinstance(d, Mapping)
                )
        if reasoning:
            self.reasoning_parts.append(reasoning)
            self.last_reasoning_ns = t_ns
            self._any(t_ns)
        if _text_of(delta.get("refusal")) or delta.get("tool_calls"):
            self._any(t_ns)

    def _any(self, t_ns: int) -> None:
        if self.first_any_ns is None:
            self.first_any_ns = t_ns

    def _take_usage(self, usage: Mapping[str, object]) -> None:
        tokens = _int(usage.get("completion_tokens"))
        if tokens is not None:
            self.completion_tokens = tokens
        details = usage.get("completion_tokens_details")
        if isinstance(details, Mapping):
            reasoning = _int(details.get("reasoning_tokens"))
            if reasoning is not None:
                self.reasoning_tokens = reasoning
        cost = _float(usage.get("cost"))
        if cost is not None:
            self.cost = cost

    def _take_timings(self, timings: Mapping[str, object]) -> None:
        # llama.cpp: {"prompt_ms": ..., "predicted_ms": ...}: prompt processing is the server's
        # share of the TTFT; both together are its total.
        prompt = _float(timings.get("prompt_ms"))
        predicted = _float(timings.get("predicted_ms"))
        if prompt is not None:
            self.server_ttft_ms = round(prompt, 3)
            if predicted is not None:
                self.server_total_ms = round(prompt + predicted, 3)


def _text_of(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: [{"type": "text", "text": "..."}]
        return "".join(
            part["text"] for part in value if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# --------------------------------------------------------------------------------------------------
# Reading a response
# --------------------------------------------------------------------------------------------------


async def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    """The body of an error answer, cut off after ``max_bytes`` (its status already tells the story)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            del body[max_bytes:]
            break
    return bytes(body)


def _looks_like_json(content_type: str, first: bytes) -> bool:
    if "event-stream" in content_type:
        return False
    if "json" in content_type:
        return True
    return first.lstrip()[:1] in (b"{", b"[")


async def _consume_success(
    response: httpx.Response,
    state: StreamState,
    max_bytes: int,
    clock_ns: Callable[[], int],
) -> None:
    """Read a 2xx answer as an SSE stream or, if the server ignored ``stream``, a JSON body."""
    content_type = response.headers.get("content-type", "").lower()
    parser = SSEParser()
    received = 0
    mode: str | None = None
    json_body = bytearray()
    first_ns: int | None = None
    last_ns: int | None = None
    chunks = response.aiter_bytes()
    async for chunk in chunks:
        t_ns = clock_ns()  # stamped before any parsing
        if not chunk:
            continue
        received += len(chunk)
        if received > max_bytes:
            raise ResponseTooLargeError(f"response body exceeds {max_bytes} bytes")
        if mode is None:
            if not chunk.strip():
                # Whitespace keep-alives (sent before a JSON body) carry nothing; as SSE they would
                # only be blank lines. Decide on the first byte that means something.
                continue
            mode = "json" if _looks_like_json(content_type, chunk) else "sse"
        if mode == "json":
            json_body.extend(chunk)
            if first_ns is None and chunk.strip():
                first_ns = t_ns
            last_ns = t_ns
            continue
        for item in parser.feed(chunk):
            if _handle_item(item, state, t_ns):
                await _drain(chunks, max_bytes - received)
                return
    if mode is None:
        raise InvalidStreamError("empty response body")
    if mode == "json":
        _take_json_body(bytes(json_body), state, first_ns, last_ns)
        return
    t_ns = clock_ns()
    for item in parser.close():
        if _handle_item(item, state, t_ns):
            return
    if state.finish_reason is None and state.envelope is None:
        raise InvalidStreamError("stream ended before a finish_reason or [DONE]")


async def _drain(chunks: AsyncIterator[bytes], budget: int) -> None:
    """Read what follows ``[DONE]`` (normally only the end of the body) for up to ``DRAIN_GRACE_S``.

    The answer is complete at this point: nothing read here is parsed or timed, and a server that
    keeps sending, stalls or breaks the connection only costs the connection's reuse.
    """
    try:
        async with asyncio.timeout(DRAIN_GRACE_S):
            async for chunk in chunks:
                budget -= len(chunk)
                if budget < 0:
                    return
    except (TimeoutError, httpx.HTTPError, OSError):
        return


def _handle_item(item: SSEEvent | SSEComment | SSEParseError, state: StreamState, t_ns: int) -> bool:
    """Apply one SSE item; True when the stream is finished (``[DONE]``)."""
    if isinstance(item, SSEComment):
        state.comments += 1
        return False
    if isinstance(item, SSEParseError):
        raise InvalidStreamError(item.message)
    if item.is_done:
        state.done = True
        return True
    if not item.data.strip():
        return False
    try:
        value = json.loads(item.data)
    except (ValueError, RecursionError):
        excerpt = untrusted(item.data[:RAW_TEXT_CHARS], 80, state.secret)
        raise InvalidStreamError(f"event is not valid JSON: {excerpt!r}") from None
    if not isinstance(value, Mapping):
        return False
    if item.event == "error" and state.envelope is None:
        state.envelope = parse_error_envelope(value) or ErrorEnvelope(
            message=untrusted(item.data[:RAW_TEXT_CHARS], MESSAGE_CHARS, state.secret)
        )
    state.feed_chunk(value, t_ns)
    return False


def _take_json_body(body: bytes, state: StreamState, first_ns: int | None, last_ns: int | None) -> None:
    if first_ns is None or last_ns is None or not body.strip():
        raise InvalidStreamError("empty response body")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidStreamError("response body is not valid JSON") from None
    if not isinstance(value, Mapping):
        raise InvalidStreamError("response body is not a JSON object")
    state.feed_chunk(value, first_ns)
    if state.content_parts:
        state.last_content_ns = last_ns
    if state.reasoning_parts:
        state.last_reasoning_ns = last_ns
    if state.envelope is None and not isinstance(value.get("choices"), list):
        raise InvalidStreamError("JSON body has neither choices nor an error")


# --------------------------------------------------------------------------------------------------
# One attempt
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """A probe result plus what the scheduler needs to decide on a retry."""

    result: ProbeResult
    envelope: ErrorEnvelope | None
    retryable: bool  # the failure class allows a retry and availability.retryable is not false
    limit_scope: RateLimitScope | None  # "minute" / "day" for the account's own rate limit
    served_model: str | None = None  # the response's ``model`` (redacted), when it named one


async def probe_attempt(
    client: httpx.AsyncClient,
    *,
    run_id: str,
    spec: ProbeSpec,
    task: TaskInstance,
    settings: Settings,
    attempt: int,
    cost_guard: bool = True,
    reset_epoch_ms: bool = True,
    clock_ns: Callable[[], int] = time.perf_counter_ns,
    wall_s: Callable[[], float] = time.time,
    models: Sequence[str] | None = None,
) -> AttemptOutcome:
    """Send one probe and classify what came back. Never raises for anything a server sends.

    ``models`` sends OpenRouter's fallback array with it (see :func:`build_request_body`).
    """
    body = build_request_body(spec, task, settings, cost_guard=cost_guard, models=models)
    started_at = datetime.now(UTC)
    status: int | None = None
    headers: httpx.Headers | None = None
    error_body = b""
    exception: BaseException | None = None
    deadline_hit = False
    state = StreamState(t0_ns=clock_ns(), secret=sent_secret(client))
    try:
        async with asyncio.timeout(settings.probe_deadline_s):
            try:
                async with client.stream(
                    "POST", CHAT_PATH, json=body, headers={"Accept": "text/event-stream"}
                ) as response:
                    status = response.status_code
                    headers = response.headers
                    if 200 <= status < 300:
                        await _consume_success(response, state, settings.max_response_bytes, clock_ns)
                    else:
                        error_body = await _read_body(
                            response, min(settings.max_response_bytes, ERROR_BODY_MAX_BYTES)
                        )
            except _EXPECTED_ERRORS as exc:  # includes OSError, hence any stray TimeoutError
                exception = exc
    except TimeoutError:  # only the deadline gets here: the inner handler takes every other one
        deadline_hit = not state.done  # after [DONE] the answer was complete in time

    if status is not None and not 200 <= status < 300:
        state.envelope = parse_error_envelope(error_body)
    content, reasoning = state.content, state.reasoning
    channel = (
        answer_channel(content, reasoning, state.finish_reason)
        if status is not None and 200 <= status < 300 and state.envelope is None and exception is None
        else None
    )
    if channel == "content":
        graded: bool | None = task.grade(content)
    elif channel == "reasoning":
        graded = task.grade_reasoning(reasoning)
    else:
        graded = None
    failure = classify(
        http_status=status,
        envelope=state.envelope,
        exception=exception,
        finish_reason=state.finish_reason,
        content=content,
        reasoning=reasoning,
        passed=graded,
        deadline_hit=deadline_hit,
    )
    cache_status = headers.get(CACHE_STATUS_HEADER) if headers is not None else None
    generation_id = (
        headers.get(GENERATION_ID_HEADER) if headers is not None else None
    ) or state.generation_id
    retry_after = (
        retry_hint_s(headers, state.envelope, now_s=wall_s(), reset_epoch_ms=reset_epoch_ms)
        if failure is not None
        else None
    )
    answered = channel if failure in (None, Failure.WRONG_ANSWER) and not deadline_hit else None
    last_ns = state.last_reasoning_ns if answered == "reasoning" else state.last_content_ns
    env = state.envelope
    result = ProbeResult(
        run_id=run_id,
        model_id=spec.model_id,
        family=spec.family,
        task=spec.task,
        sample=spec.sample,
        attempt=attempt,
        started_at=started_at,
        http_status=status,
        failure=failure,
        passed=failure is None,
        error_code="probe_deadline"
        if deadline_hit
        else _clean(error_code(failure, state.envelope, exception), 200, state.secret),
        message=_message(
            failure,
            state,
            exception,
            error_body,
            cache_status,
            deadline_hit=deadline_hit,
            deadline_s=settings.probe_deadline_s,
            answered_in_reasoning=answered == "reasoning",
        ),
        ttft_any_ms=state.ms(state.first_any_ns),
        ttft_content_ms=state.ms(state.first_content_ns),
        total_ms=state.ms(last_ns),
        completion_tokens=state.completion_tokens,
        reasoning_tokens=state.reasoning_tokens,
        finish_reason=_clean(state.finish_reason, 50, state.secret),
        generation_id=_clean(generation_id, 200, state.secret),
        provider=_clean(state.provider, 200, state.secret),
        cache_status=_clean(cache_status, 20, state.secret),
        cost=state.cost,
        retry_after_s=round(retry_after, 3) if retry_after is not None else None,
        reply_excerpt=_excerpt(content, reasoning, state.secret),
        server_ttft_ms=state.server_ttft_ms,
        server_total_ms=state.server_total_ms,
        answer_channel=answered,
        limit_source=_clean(env.limit_source, 100, state.secret) if env is not None else None,
        is_byok=env.is_byok if env is not None else None,
        remedy_hint=_clean(env.remedy_hint, 300, state.secret) if env is not None else None,
    )
    return AttemptOutcome(
        result=result,
        envelope=state.envelope,
        retryable=failure is not None and is_retryable(failure, state.envelope),
        limit_scope=rate_limit_scope(state.envelope) if failure is Failure.RATE_LIMIT_ACCOUNT else None,
        served_model=_clean(state.model, 200, state.secret),
    )


async def probe_once(
    client: httpx.AsyncClient,
    *,
    run_id: str,
    spec: ProbeSpec,
    task: TaskInstance,
    settings: Settings,
    attempt: int,
    cost_guard: bool = True,
) -> ProbeResult:
    """One streaming attempt of ``spec`` (see :func:`probe_attempt`); no retries."""
    outcome = await probe_attempt(
        client,
        run_id=run_id,
        spec=spec,
        task=task,
        settings=settings,
        attempt=attempt,
        cost_guard=cost_guard,
    )
    return outcome.result


def _clean(text: str | None, limit: int, secret: str | None) -> str | None:
    """Server-chosen text as stored: valid Unicode, the key, URL credentials and key-like strings
    masked (:func:`~freemodels.secrets.untrusted`), then cut to ``limit``."""
    return untrusted(text[:RAW_TEXT_CHARS], limit, secret) if text else None


def _excerpt(content: str, reasoning: str, secret: str | None) -> str | None:
    if content.strip():
        return _clean(content.strip(), EXCERPT_CHARS, secret)
    if reasoning.strip():
        return _clean("[reasoning only] " + reasoning.strip(), EXCERPT_CHARS, secret)
    return None


def _message(
    failure: Failure | None,
    state: StreamState,
    exception: BaseException | None,
    error_body: bytes,
    cache_status: str | None,
    *,
    deadline_hit: bool,
    deadline_s: float,
    answered_in_reasoning: bool = False,
) -> str | None:
    """Why the attempt failed (OpenRouter's own words where it gave some), plus measurement notes."""
    parts: list[str] = []
    if failure is not None:
        env = state.envelope
        if deadline_hit:
            parts.append(f"no complete answer within the probe deadline of {deadline_s:g} s")
        elif env is not None and (env.message or env.raw):
            text = env.message or ""
            if env.raw and env.raw not in text:
                text = f"{text}: {env.raw}" if text else env.raw
            if env.provider_name:
                text = f"{text} (provider: {env.provider_name})"
            parts.append(text)
        elif exception is not None:
            detail = str(exception).strip()
            parts.append(f"{type(exception).__name__}: {detail}" if detail else type(exception).__name__)
        elif error_body.strip():
            parts.append(error_body[:RAW_TEXT_CHARS].decode("utf-8", "replace").strip())
    if answered_in_reasoning:
        parts.append(
            "answer only in the reasoning channel (content empty): an app reading content gets nothing"
        )
    if state.cost:
        parts.append(f"non-zero cost reported: usage.cost={state.cost:g}")
    if cache_status and cache_status.strip().upper() == "HIT":
        parts.append("answered from OpenRouter's response cache (HIT): timings not comparable")
    if not parts:
        return None
    return untrusted(" | ".join(parts), MESSAGE_CHARS, state.secret)

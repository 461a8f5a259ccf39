"""Parse OpenRouter's error envelope and map every probe outcome onto the closed :class:`Failure` enum.

Everything here is pure: no I/O, no clock (callers pass the time where one is needed), and nothing
raises on any input.

Error envelope as live traffic shows it::

    {"error": {"code": 404, "message": "..."}, "user_id": "user_..."}

with ``metadata`` only on some errors (an upstream 429: ``raw``, ``provider_name``, ``is_byok``,
``limit_source``, ``remedy_hint``; an account 429: ``headers`` with X-RateLimit-*; moderation: ``reasons``;
the provider restriction: ``available_providers``). The documented typed fields are read too where a
server sends them ("Errors and Debugging")::

    {"error": {"code": 429, "message": "...",
               "metadata": {"error_type": "...", "raw": "...", "provider_name": "...",
                            "headers": {"X-RateLimit-Reset": "1741305600000"}},
               "availability": {"code": "capacity_exhausted", "retryable": true,
                                "retry_after": 30}}}

No live body found carries ``availability`` or ``metadata.error_type``, so every class is reachable from
the status and the message alone; the typed fields only refine the verdict when present.

The same object may arrive as a plain JSON body (any status), inside a 200 response, as a mid-stream
SSE chunk (``{"error": {...}, "choices": [{"finish_reason": "error"}]}``) or embedded in a choice
(``choices[0].error``). Shapes of other OpenAI-compatible servers are read too: ``error.type``
(OpenAI, llama.cpp) and vLLM's flat ``{"object": "error", "message": ..., "code": 400}``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

from freemodels.failures import FAILURE_INFO, Failure


@dataclass(frozen=True, slots=True)
class ErrorEnvelope:
    """The parts of an error object that drive classification and retries."""

    code: int | None = None  # error.code when numeric (usually the HTTP status it stands for)
    message: str | None = None
    error_type: str | None = None  # metadata.error_type, else error.type, else a string code
    availability_code: str | None = None
    retryable: bool | None = None  # availability.retryable
    retry_after_s: float | None = None  # availability.retry_after
    reset_ms: int | None = None  # metadata.headers.X-RateLimit-Reset (epoch milliseconds)
    provider_name: str | None = None
    raw: str | None = None  # metadata.raw (the upstream provider's own error), as text
    constraint_field: str | None = None  # availability.constraint.field (e.g. "max_price")
    limit_source: str | None = None  # metadata.limit_source (e.g. "upstream_provider_shared_pool")
    is_byok: bool | None = None  # metadata.is_byok
    remedy_hint: str | None = None  # metadata.remedy_hint
    available_providers: tuple[str, ...] = ()  # metadata.available_providers (provider restriction)
    excluded_by: tuple[str, ...] = ()  # availability.excluded_by
    fallback_models: tuple[str, ...] = ()  # availability.fallback_models (e.g. the paid slug)

    @property
    def text(self) -> str:
        """Message and raw provider error together, lower-cased, for pattern matching."""
        return f"{self.message or ''} {self.raw or ''}".lower()


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def parse_error_envelope(body: bytes | str | Mapping[str, object] | None) -> ErrorEnvelope | None:
    """The error carried by ``body``, or None when it carries none (or is not JSON at all).

    ``body`` may be raw bytes, text, or an already-decoded JSON object (e.g. one SSE chunk).
    """
    obj = _as_mapping(body)
    if obj is None:
        return None
    error = obj.get("error")
    if isinstance(error, Mapping):
        return _envelope_from(error)
    if isinstance(error, str) and error.strip():
        return ErrorEnvelope(code=_as_int(obj.get("code")), message=error.strip()[:2000])
    if obj.get("object") == "error" and isinstance(obj.get("message"), str):
        return _envelope_from(obj)
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, Mapping) and isinstance(choice.get("error"), Mapping):
                return _envelope_from(choice["error"])
    return None


def _as_mapping(body: bytes | str | Mapping[str, object] | None) -> Mapping[str, object] | None:
    if body is None:
        return None
    if isinstance(body, Mapping):
        return body
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8-sig")
        except UnicodeDecodeError:
            return None
    if not isinstance(body, str):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, Mapping) else None


def _envelope_from(error: Mapping[str, object]) -> ErrorEnvelope:
    metadata = error.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    availability = error.get("availability")
    availability = availability if isinstance(availability, Mapping) else {}
    raw_code = error.get("code")
    code = _as_int(raw_code)
    error_type = (
        _as_str(metadata.get("error_type"))
        or _as_str(error.get("type"))
        or (_as_str(raw_code) if code is None else None)
    )
    headers = metadata.get("headers")
    reset_ms = None
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if isinstance(key, str) and key.lower() == "x-ratelimit-reset":
                reset_ms = _as_int(value)
    raw = metadata.get("raw")
    if raw is not None and not isinstance(raw, str):
        try:
            raw = json.dumps(raw, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            raw = None
    constraint = availability.get("constraint")
    retryable = availability.get("retryable")
    is_byok = metadata.get("is_byok")
    return ErrorEnvelope(
        code=code,
        message=_as_str(error.get("message")),
        error_type=error_type,
        availability_code=_as_str(availability.get("code")),
        retryable=retryable if isinstance(retryable, bool) else None,
        retry_after_s=_as_seconds(availability.get("retry_after")),
        reset_ms=reset_ms,
        provider_name=_as_str(metadata.get("provider_name")),
        raw=raw[:4000] if isinstance(raw, str) and raw.strip() else None,
        constraint_field=(_as_str(constraint.get("field")) if isinstance(constraint, Mapping) else None),
        limit_source=_as_str(metadata.get("limit_source")),
        is_byok=is_byok if isinstance(is_byok, bool) else None,
        remedy_hint=_as_str(metadata.get("remedy_hint")),
        available_providers=_str_tuple(metadata.get("available_providers")),
        excluded_by=_str_tuple(availability.get("excluded_by")),
        fallback_models=_str_tuple(availability.get("fallback_models")),
    )


def _str_tuple(value: object, limit: int = 20) -> tuple[str, ...]:
    """The non-empty strings of a JSON list (at most ``limit``, each cut to 200 characters)."""
    if not isinstance(value, list):
        return ()
    items = (item.strip()[:200] for item in value if isinstance(item, str) and item.strip())
    return tuple(items)[:limit]


def _as_str(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:2000]
    return None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits only: str.isdigit() also accepts "²" or "¹", which int() refuses.
        if text.isascii() and text.isdigit() and len(text) < 20:
            return int(text)
    return None


def _as_seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


# --------------------------------------------------------------------------------------------------
# Retry hints and rate-limit scope
# --------------------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None or not value.strip():
        return None
    seconds = _as_seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_s)


def retry_hint_s(
    headers: Mapping[str, str] | httpx.Headers | None,
    envelope: ErrorEnvelope | None,
    *,
    now_s: float,
    reset_epoch_ms: bool = True,
) -> float | None:
    """How long the server asks us to wait, in the documented order, or None if it gives no hint.

    1. the ``Retry-After`` header; 2. ``error.availability.retry_after``;
    3. ``error.metadata.headers.X-RateLimit-Reset`` (epoch ms), else the ``X-RateLimit-Reset``
    response header. ``now_s`` is the wall clock (epoch seconds) to turn a reset time into a wait.
    Step 3 only with ``reset_epoch_ms``: the unit is OpenRouter's, and other servers send other units.

    A reset time that is not in the future (a stale header, or clocks apart) is no hint at all: it
    would mean "retry at once", again and again, so the caller falls back to its own backoff.
    """
    lowered = {k.lower(): v for k, v in headers.items()} if headers is not None else {}
    hint = parse_retry_after(lowered.get("retry-after"), now_s=now_s)
    if hint is not None:
        return hint
    if envelope is not None and envelope.retry_after_s is not None:
        return envelope.retry_after_s
    if not reset_epoch_ms:
        return None
    reset_ms = envelope.reset_ms if envelope is not None else None
    if reset_ms is None:
        reset_ms = _as_int(lowered.get("x-ratelimit-reset"))
    if reset_ms is not None:
        wait_s = reset_ms / 1000.0 - now_s
        return wait_s if wait_s > 0 else None
    return None


RateLimitScope = Literal["minute", "day"]

_DAY = re.compile(r"per[-_ ]?day|limit_rpd|requests per day|daily", re.IGNORECASE)
_MINUTE = re.compile(r"per[-_ ]?min|limit_rpm|requests per minute", re.IGNORECASE)


def rate_limit_scope(envelope: ErrorEnvelope | None) -> RateLimitScope:
    """Which account limit a RATE_LIMIT_ACCOUNT answer names: the daily quota or the minute rate.

    Unknown wording counts as the minute rate: waiting and retrying is safe, while stopping the
    whole run on a guess would not be.
    """
    text = envelope.text if envelope is not None else ""
    if _DAY.search(text) and not _MINUTE.search(text):
        return "day"
    return "minute"


# --------------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------------

_AVAILABILITY: dict[str, Failure] = {
    "model_not_found": Failure.WRONG_MODEL_ID,
    "wrong_endpoint": Failure.CAPABILITY_UNSUPPORTED,
    "no_endpoints": Failure.NO_ENDPOINTS,
    "model_deprecated": Failure.NO_ENDPOINTS,
    "model_unavailable_upstream": Failure.NO_ENDPOINTS,
    "capacity_exhausted": Failure.RATE_LIMIT_UPSTREAM,
    "temporarily_unavailable": Failure.PROVIDER_ERROR,
    "region_restricted": Failure.MODERATION,
    "privacy_restricted": Failure.PRIVACY_EXCLUDED,
    "constraint_filtered": Failure.CAPABILITY_UNSUPPORTED,
    "free_variant_ended": Failure.FREE_VARIANT_ENDED,
}

_ERROR_TYPE: dict[str, Failure] = {
    "context_length_exceeded": Failure.CONTEXT_LIMIT,
    "max_tokens_exceeded": Failure.CONTEXT_LIMIT,
    "token_limit_exceeded": Failure.CONTEXT_LIMIT,
    "string_too_long": Failure.CONTEXT_LIMIT,
    "authentication": Failure.AUTH,
    "permission_denied": Failure.MODERATION,
    "payment_required": Failure.CREDITS_REQUIRED,
    "rate_limit_exceeded": Failure.RATE_LIMIT_UPSTREAM,
    "provider_overloaded": Failure.PROVIDER_ERROR,
    "provider_unavailable": Failure.PROVIDER_ERROR,
    "server": Failure.PROVIDER_ERROR,
    "unmapped": Failure.PROVIDER_ERROR,
    "timeout": Failure.TIMEOUT,
    "not_found": Failure.NO_ENDPOINTS,
    "invalid_request": Failure.BAD_REQUEST,
    "invalid_prompt": Failure.BAD_REQUEST,
    "precondition_failed": Failure.BAD_REQUEST,
    "payload_too_large": Failure.BAD_REQUEST,
    "unprocessable": Failure.BAD_REQUEST,
    "content_policy_violation": Failure.MODERATION,
    "refusal": Failure.MODERATION,
}

# Message patterns (matched on message + metadata.raw, lower-cased), most specific first.
_WRONG_ID = ("is not a valid model id", "invalid model id", "model not found")
_CONTEXT = ("maximum context length", "context length", "context_length_exceeded", "too many tokens")
_FREE_ENDED = (
    "no longer available as a free model",  # documented example
    "period has ended",  # live, early 2026: "The free X period has ended. ... paid slug: Y"
    "unavailable for free",  # live, mid 2026: "This model is unavailable for free. ... instead: Y"
    "migrate to the paid slug",
    "free variant",
    "free_variant_ended",
)
_PRIVACY = ("data policy", "privacy", "guardrail restriction")
_PRIVACY_400 = ("data policy", "guardrail restriction")  # "0 endpoints out of N requested are available ..."
_PROVIDERS = ("no allowed providers", "allowed providers are available")
_APPS = ("agentic harness", "openrouter.ai/apps")
_CAPABILITY = ("that support", "does not support", "not supported by", "no endpoints found that")
_ACCOUNT_429 = ("free-models-per", "limit_rpd", "limit_rpm", "free_models_per")
_UPSTREAM_429 = ("upstream", "provider returned error", "capacity", "temporarily rate-limited")

SHARED_POOL = "upstream_provider_shared_pool"
"""``metadata.limit_source`` of an upstream 429 from a provider's shared pool of free capacity."""

AnswerChannel = Literal["content", "reasoning"]

_NO_REASONING_ANSWER = frozenset({"length", "content_filter", "error", "tool_calls"})


def answer_channel(
    content: str | None, reasoning: str | None, finish_reason: str | None
) -> AnswerChannel | None:
    """Where a 2xx answer's text is: ``content``, else ``reasoning``, else None (no text answer).

    Reasoning models can finish normally (``stop``) with empty or null ``content`` and the whole
    answer in the reasoning channel. That is an answer, read and graded from the reasoning text; an
    app that reads only ``content`` gets nothing from it. Reasoning that ends for ``length`` (the
    token budget ran out), ``content_filter``, ``error`` or ``tool_calls`` is not an answer.
    """
    if (content or "").strip():
        return "content"
    if (reasoning or "").strip() and finish_reason not in _NO_REASONING_ANSWER:
        return "reasoning"
    return None


def classify(
    *,
    http_status: int | None,
    envelope: ErrorEnvelope | None,
    exception: BaseException | None = None,
    finish_reason: str | None = None,
    content: str | None = None,
    reasoning: str | None = None,
    passed: bool | None = None,
    deadline_hit: bool = False,
) -> Failure | None:
    """The root cause of one attempt, or None for a success. Total: never raises.

    Every branch can be reached from what live traffic carries (status, ``error.code``,
    ``error.message``, ``metadata.raw`` and the other metadata live bodies have); the documented
    ``availability`` object and ``metadata.error_type`` refine the verdict where a server sends them.

    Decision tree (first match wins):

    1. ``deadline_hit`` (the probe's own total deadline fired) → TIMEOUT.
    2. HTTP status 300–599 → :func:`classify_status` (status refined by the envelope):

       a. ``availability.code`` when known (model_not_found → WRONG_MODEL_ID, no_endpoints /
          model_deprecated / model_unavailable_upstream → NO_ENDPOINTS, privacy_restricted →
          PRIVACY_EXCLUDED, free_variant_ended → FREE_VARIANT_ENDED, constraint_filtered →
          CAPABILITY_UNSUPPORTED or, when the constraint is ``max_price``, FREE_VARIANT_ENDED,
          capacity_exhausted → RATE_LIMIT_UPSTREAM, temporarily_unavailable → PROVIDER_ERROR,
          region_restricted → MODERATION, wrong_endpoint → CAPABILITY_UNSUPPORTED); an
          ``excluded_by`` naming ``allowed_providers`` → PROVIDER_RESTRICTED;
       b. by status and message:

          - 400 → WRONG_MODEL_ID ("is not a valid model ID") / FREE_VARIANT_ENDED ("period has
            ended", "unavailable for free", ...) / PRIVACY_EXCLUDED ("guardrail restrictions and
            data policy") / CONTEXT_LIMIT / else ``metadata.error_type`` / BAD_REQUEST;
          - 401 → AUTH; 402 → CREDITS_REQUIRED;
          - 403 → APP_RESTRICTED ("only available on agentic harnesses", openrouter.ai/apps) /
            MODERATION;
          - 404 → FREE_VARIANT_ENDED / PROVIDER_RESTRICTED ("No allowed providers are available",
            ``metadata.available_providers``) / PRIVACY_EXCLUDED ("data policy", "guardrail
            restrictions") / CAPABILITY_UNSUPPORTED ("No endpoints found that support ...") /
            WRONG_MODEL_ID / NO_ENDPOINTS;
          - 408 → TIMEOUT;
          - 429 → RATE_LIMIT_ACCOUNT (``free-models-per-*``, or no sign of a provider) /
            RATE_LIMIT_UPSTREAM ("Provider returned error", "rate-limited upstream", a provider
            name, a ``limit_source``);
          - 504 or error_type timeout → TIMEOUT; other 5xx → PROVIDER_ERROR;
          - other 4xx → BAD_REQUEST (error_type first); 3xx (redirects are never followed) →
            TRANSPORT_ERROR.

    3. An error object in a 2xx answer (a JSON body, an SSE error chunk, with or without
       ``choices``, or ``choices[].error``):

       a. no token arrived yet → the error stands for a status: classified as in 2. with
          ``error.code`` as the status (OpenRouter answers 200 once keep-alive comments were
          sent), except that a 429 there is RATE_LIMIT_UPSTREAM unless it names the account's
          own limit (``free-models-per-*`` or X-RateLimit metadata): OpenRouter checks the
          account's limits before it starts a response, so a 429 inside one came from the
          provider; a code outside 400–599 → ``availability.code`` → ``metadata.error_type`` →
          MID_STREAM_ERROR;
       b. tokens arrived → the model failed mid-stream: REASONING_EXHAUSTED when the stream
          had stopped for length with no content (the error only reports the token limit),
          else MID_STREAM_ERROR.

    4. ``exception`` (no usable status): read/write timeouts → TIMEOUT; anything else (connect
       errors and connect timeouts, resets, protocol errors, invalid UTF-8/JSON/SSE, an oversized
       body, unknown exceptions) → TRANSPORT_ERROR.
    5. No status at all → TRANSPORT_ERROR.
    6. ``finish_reason == "error"`` → MID_STREAM_ERROR.
    7. Empty content (``None`` or whitespace):

       a. ``finish_reason == "length"`` → REASONING_EXHAUSTED (reasoning, visible or not, used
          up ``max_tokens``); ``"content_filter"`` → MODERATION;
       b. reasoning text and any other finish reason but ``tool_calls`` → the answer is in the
          reasoning channel (:func:`answer_channel`): the caller graded the reasoning text, so
          ``passed is False`` → WRONG_ANSWER, else a success (with the caveat that an app
          reading only ``content`` gets nothing; the probe records the channel);
       c. otherwise → EMPTY_REPLY (cold start, or tool calls only).

    8. ``passed is False`` → WRONG_ANSWER. ``passed is None`` means no grader ran: a non-empty
       reply then counts as a success.
    9. → None (success).
    """
    if deadline_hit:
        return Failure.TIMEOUT
    if http_status is not None and 300 <= http_status <= 599:
        return classify_status(http_status, envelope)
    if envelope is not None and (http_status is None or 200 <= http_status < 300):
        return _classify_error_in_success(envelope, finish_reason, content, reasoning)
    if exception is not None:
        return _classify_exception(exception)
    if http_status is None or not 200 <= http_status < 300:
        # No response, or an informational / out-of-range status: nothing usable arrived.
        return Failure.TRANSPORT_ERROR
    if finish_reason == "error":
        return Failure.MID_STREAM_ERROR
    if not (content or "").strip():
        if finish_reason == "length":
            return Failure.REASONING_EXHAUSTED
        if finish_reason == "content_filter":
            return Failure.MODERATION
        if answer_channel(content, reasoning, finish_reason) != "reasoning":
            return Failure.EMPTY_REPLY
    if passed is False:
        return Failure.WRONG_ANSWER
    return None


def classify_status(status: int, envelope: ErrorEnvelope | None) -> Failure:
    """Class of a non-2xx answer (or an error object standing for one), per step 2 above."""
    if envelope is not None and envelope.availability_code is not None:
        code = envelope.availability_code.lower()
        if code == "constraint_filtered" and (envelope.constraint_field or "").lower() in {
            "max_price",
            "price",
        }:
            # The cost guard (max_price 0) removed every endpoint: no free endpoint is left.
            return Failure.FREE_VARIANT_ENDED
        if code in {"privacy_restricted", "constraint_filtered"} and "allowed_providers" in {
            e.lower() for e in envelope.excluded_by
        }:
            return Failure.PROVIDER_RESTRICTED
        if code in _AVAILABILITY:
            return _AVAILABILITY[code]
    text = envelope.text if envelope is not None else ""
    error_type = (envelope.error_type or "").lower() if envelope is not None else ""
    if 300 <= status < 400:
        return Failure.TRANSPORT_ERROR
    if status == 400:
        if _has(text, _WRONG_ID):
            return Failure.WRONG_MODEL_ID
        if _has(text, _FREE_ENDED):
            return Failure.FREE_VARIANT_ENDED
        if _has(text, _PRIVACY_400):
            return Failure.PRIVACY_EXCLUDED
        if _has(text, _CONTEXT):
            return Failure.CONTEXT_LIMIT
        return _ERROR_TYPE.get(error_type, Failure.BAD_REQUEST)
    if status == 401:
        return Failure.AUTH
    if status == 402:
        return Failure.CREDITS_REQUIRED
    if status == 403:
        if _has(text, _APPS):
            return Failure.APP_RESTRICTED
        return Failure.MODERATION
    if status == 404:
        if _has(text, _FREE_ENDED):
            return Failure.FREE_VARIANT_ENDED
        if _has(text, _PROVIDERS) or (envelope is not None and envelope.available_providers):
            return Failure.PROVIDER_RESTRICTED
        if _has(text, _PRIVACY):
            return Failure.PRIVACY_EXCLUDED
        if _has(text, _CAPABILITY):
            return Failure.CAPABILITY_UNSUPPORTED
        if _has(text, _WRONG_ID):
            return Failure.WRONG_MODEL_ID
        return Failure.NO_ENDPOINTS
    if status == 408:
        return Failure.TIMEOUT
    if status == 429:
        return _classify_429(envelope)
    if status == 504 or error_type == "timeout":
        return Failure.TIMEOUT
    if status >= 500:
        return Failure.PROVIDER_ERROR
    mapped = _ERROR_TYPE.get(error_type)
    if mapped is not None:
        return mapped
    return Failure.CONTEXT_LIMIT if _has(text, _CONTEXT) else Failure.BAD_REQUEST


def _classify_429(envelope: ErrorEnvelope | None) -> Failure:
    if envelope is None:
        return Failure.RATE_LIMIT_ACCOUNT
    text = envelope.text
    if _has(text, _ACCOUNT_429):
        return Failure.RATE_LIMIT_ACCOUNT
    if _has(text, _UPSTREAM_429) or envelope.provider_name or envelope.limit_source:
        return Failure.RATE_LIMIT_UPSTREAM
    # OpenRouter's own platform limits carry X-RateLimit metadata; a bare 429 without any sign of
    # a provider comes from the server we talk to, i.e. it limits this account.
    return Failure.RATE_LIMIT_ACCOUNT


def _names_account_limit(envelope: ErrorEnvelope) -> bool:
    """An account 429's own marks: the limit's name, or OpenRouter's X-RateLimit metadata."""
    return _has(envelope.text, _ACCOUNT_429) or envelope.reset_ms is not None


def _classify_error_in_success(
    envelope: ErrorEnvelope,
    finish_reason: str | None,
    content: str | None,
    reasoning: str | None,
) -> Failure:
    streamed = bool((content or "").strip() or (reasoning or "").strip())
    if not streamed:
        if envelope.code == 429 and not _names_account_limit(envelope):
            return Failure.RATE_LIMIT_UPSTREAM
        if envelope.code is not None and 400 <= envelope.code <= 599:
            return classify_status(envelope.code, envelope)
        if envelope.availability_code is not None and envelope.availability_code in _AVAILABILITY:
            return _AVAILABILITY[envelope.availability_code]
        mapped = _ERROR_TYPE.get((envelope.error_type or "").lower())
        if mapped is not None:
            return mapped
        return Failure.MID_STREAM_ERROR
    if finish_reason == "length" and not (content or "").strip():
        return Failure.REASONING_EXHAUSTED
    return Failure.MID_STREAM_ERROR


def _classify_exception(exc: BaseException) -> Failure:
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout | TimeoutError):
        return Failure.TIMEOUT
    # ConnectTimeout / PoolTimeout: the server was never reached — a network problem.
    return Failure.TRANSPORT_ERROR


def _has(text: str, needles: tuple[str, ...]) -> bool:
    return any(needle in text for needle in needles)


_SLUG = r"(~?[a-z0-9][a-z0-9._-]*/[a-z0-9](?:[a-z0-9._:-]*[a-z0-9])?)"
_SUGGESTED_SLUG = (
    re.compile(r"paid slug:\s*" + _SLUG, re.IGNORECASE),  # "... please migrate to the paid slug: Y"
    re.compile(r"slug instead:\s*" + _SLUG, re.IGNORECASE),  # "... use this slug instead: Y"
    re.compile(r"\buse\s+" + _SLUG + r"\s+instead", re.IGNORECASE),  # "... Use Y instead."
)


def suggested_model(envelope: ErrorEnvelope | None) -> str | None:
    """The model an error suggests instead (the paid slug of an ended free variant), or None.

    ``availability.fallback_models`` first, else the slug the message names (both live wordings:
    "migrate to the paid slug: Y" and "use this slug instead: Y").
    """
    if envelope is None:
        return None
    if envelope.fallback_models:
        return envelope.fallback_models[0]
    return suggested_model_in(envelope.message or "")


def suggested_model_in(text: str) -> str | None:
    """The slug an error message suggests instead (see :func:`suggested_model`), or None."""
    for pattern in _SUGGESTED_SLUG:
        match = pattern.search(text[:4000])
        if match:
            return match.group(1)
    return None


def is_retryable(failure: Failure, envelope: ErrorEnvelope | None) -> bool:
    """Whether a retry can help: the class says so and the server did not say otherwise."""
    if not FAILURE_INFO[failure].retryable:
        return False
    return not (envelope is not None and envelope.retryable is False)


def error_code(
    failure: Failure | None,
    envelope: ErrorEnvelope | None,
    exception: BaseException | None,
) -> str | None:
    """The short machine code stored with a failed attempt.

    ``availability.code``, else the account limit's name for account 429s, else the upstream
    limit's ``limit_source`` (e.g. ``upstream_provider_shared_pool``), else ``error_type``, else the
    exception's class name.
    """
    if failure is None:
        return None
    if envelope is not None:
        if envelope.availability_code:
            return envelope.availability_code
        if failure is Failure.RATE_LIMIT_ACCOUNT:
            match = re.search(r"free-models-per-[a-z-]+", envelope.text)
            if match:
                return match.group(0)
        if envelope.limit_source:
            return envelope.limit_source
        if envelope.error_type:
            return envelope.error_type
    if exception is not None:
        return type(exception).__name__
    return None

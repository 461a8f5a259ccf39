"""The classifier on OpenRouter's errors as live traffic shows them (``tests/live_bodies.py``): bodies
with only ``message``, ``code`` and ``user_id``, the 2026 wordings, the new classes, and every class
reachable from the live shape alone."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from freemodels.classify import (
    SHARED_POOL,
    ErrorEnvelope,
    answer_channel,
    classify,
    error_code,
    is_retryable,
    parse_error_envelope,
    rate_limit_scope,
    retry_hint_s,
    suggested_model,
    suggested_model_in,
)
from freemodels.failures import FAILURE_INFO, Failure
from freemodels.probe import StreamState
from tests.live_bodies import LIVE_CASES, LiveCase, live, live_case

DOCUMENTED_ONLY = ("availability", "error_type")


def classify_case(case: LiveCase) -> Failure | None:
    """Classify a live case as a probe would: a status plus its body, or a chunk inside a 200 stream."""
    if case.stream:
        state = StreamState(t0_ns=0)
        state.feed_chunk(case.body, 1)
        return classify(
            http_status=200,
            envelope=state.envelope,
            finish_reason=state.finish_reason,
            content=state.content,
            reasoning=state.reasoning,
        )
    return classify(http_status=case.status, envelope=parse_error_envelope(json.dumps(case.body)))


@pytest.mark.parametrize("case", LIVE_CASES, ids=lambda c: c.name)
def test_live_body_is_classified_right(case: LiveCase) -> None:
    assert classify_case(case) is case.expected


@pytest.mark.parametrize("case", LIVE_CASES, ids=lambda c: c.name)
def test_live_bodies_carry_none_of_the_documented_typed_fields(case: LiveCase) -> None:
    text = json.dumps(case.body)
    assert not any(f'"{name}"' in text for name in DOCUMENTED_ONLY)


@pytest.mark.parametrize("case", [c for c in LIVE_CASES if c.suggestion], ids=lambda c: c.name)
def test_the_paid_slug_of_an_ended_free_variant_is_kept_as_the_suggestion(case: LiveCase) -> None:
    env = parse_error_envelope(json.dumps(case.body))
    assert suggested_model(env) == case.suggestion


def test_suggestion_from_the_documented_fields_and_the_older_wording() -> None:
    documented = parse_error_envelope(
        {"error": {"code": 404, "message": "x", "availability": {"fallback_models": ["a/b"]}}}
    )
    assert suggested_model(documented) == "a/b"
    assert suggested_model_in("acme/m:free is no longer available as a free model. Use acme/m instead.") == (
        "acme/m"
    )
    assert suggested_model_in("No endpoints found for acme/m:free.") is None
    assert suggested_model(None) is None


def test_provider_restriction_is_its_own_cause_not_no_endpoints() -> None:
    case = live_case("no allowed providers")
    env = parse_error_envelope(json.dumps(case.body))
    assert env is not None and env.available_providers == ("chutes", "deepinfra")
    assert classify(http_status=404, envelope=env) is Failure.PROVIDER_RESTRICTED
    # available_providers alone marks it, whatever the wording
    bare = parse_error_envelope(live("No endpoints.", 404, available_providers=["x"]))
    assert classify(http_status=404, envelope=bare) is Failure.PROVIDER_RESTRICTED
    # and so does the documented excluded_by vocabulary
    documented = parse_error_envelope(
        {
            "error": {
                "code": 404,
                "message": "x",
                "availability": {"code": "privacy_restricted", "excluded_by": ["allowed_providers"]},
            }
        }
    )
    assert classify(http_status=404, envelope=documented) is Failure.PROVIDER_RESTRICTED
    assert FAILURE_INFO[Failure.PROVIDER_RESTRICTED].remedy != FAILURE_INFO[Failure.PRIVACY_EXCLUDED].remedy


def test_app_restriction_is_not_moderation() -> None:
    assert classify_case(live_case("only available on agentic harnesses")) is Failure.APP_RESTRICTED
    flagged = live('m requires moderation on OpenRouter. Your input was flagged for "harassment".', 403)
    assert classify(http_status=403, envelope=parse_error_envelope(flagged)) is Failure.MODERATION
    assert not FAILURE_INFO[Failure.APP_RESTRICTED].retryable
    assert "openrouter.ai/apps" in FAILURE_INFO[Failure.APP_RESTRICTED].remedy


def test_shared_pool_metadata_is_read() -> None:
    env = parse_error_envelope(json.dumps(live_case("upstream shared-pool 429").body))
    assert env is not None
    assert env.limit_source == SHARED_POOL
    assert env.is_byok is False
    assert env.remedy_hint is not None and env.remedy_hint.startswith("Retry shortly")
    assert env.provider_name == "DigitalOcean"
    assert error_code(Failure.RATE_LIMIT_UPSTREAM, env, None) == SHARED_POOL
    assert is_retryable(Failure.RATE_LIMIT_UPSTREAM, env)


def test_account_day_limits_stop_and_name_the_limit() -> None:
    for name in ("free-models-per-day (low balance)", "free-models-per-day-high-balance"):
        env = parse_error_envelope(json.dumps(live_case(name).body))
        assert rate_limit_scope(env) == "day"
        assert (error_code(Failure.RATE_LIMIT_ACCOUNT, env, None) or "").startswith("free-models-per-day")


def test_a_reset_time_already_past_is_no_retry_hint() -> None:
    # The live X-RateLimit-Reset of row 12 (2025-03-27 00:00 UTC) is long past now.
    env = parse_error_envelope(json.dumps(live_case("free-models-per-day (low balance)").body))
    assert env is not None and env.reset_ms == 1743033600000
    assert retry_hint_s(httpx.Headers({}), env, now_s=1743033600 + 5) is None
    assert retry_hint_s(httpx.Headers({}), env, now_s=1743033600 - 30) == pytest.approx(30.0)


def test_a_429_inside_a_200_is_the_providers_unless_it_names_the_account_limit() -> None:
    # OpenRouter checks the account's limits before a response starts.
    bare = ErrorEnvelope(code=429, message="Too Many Requests")
    assert classify(http_status=429, envelope=bare) is Failure.RATE_LIMIT_ACCOUNT
    assert classify(http_status=200, envelope=bare) is Failure.RATE_LIMIT_UPSTREAM
    day = parse_error_envelope(json.dumps(live_case("free-models-per-day (low balance)").body))
    assert classify(http_status=200, envelope=day) is Failure.RATE_LIMIT_ACCOUNT
    typed = parse_error_envelope(
        {"error": {"message": "slow down", "metadata": {"error_type": "rate_limit_exceeded"}}}
    )
    assert classify(http_status=200, envelope=typed) is Failure.RATE_LIMIT_UPSTREAM


# --- answers in the reasoning channel ------------------------------------------------------------

# chunkhound/chunkhound#415 (2026-09-16): HTTP 200, message.content null, finish_reason "stop", the JSON
# answer in message.reasoning; martindao/PM_Product_Flow_Pro:tests/results/result_test.md (2025-04):
# content "", the answer in reasoning.
REASONING_ANSWER: dict[str, Any] = {
    "id": "gen-…",
    "object": "chat.completion",
    "model": "poolside/laguna-xs-2.1",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": None, "reasoning": '{"city": "Quito", "code": 417}'},
        }
    ],
}


def test_an_answer_in_the_reasoning_channel_is_an_answer_not_an_empty_reply() -> None:
    state = StreamState(t0_ns=0)
    state.feed_chunk(REASONING_ANSWER, 1)
    assert state.content == "" and state.reasoning
    assert answer_channel(state.content, state.reasoning, state.finish_reason) == "reasoning"
    kwargs: dict[str, Any] = {
        "http_status": 200,
        "envelope": None,
        "finish_reason": state.finish_reason,
        "content": None,
        "reasoning": state.reasoning,
    }
    assert classify(**kwargs, passed=True) is None
    assert classify(**kwargs, passed=False) is Failure.WRONG_ANSWER
    assert classify(**{**kwargs, "reasoning": ""}) is Failure.EMPTY_REPLY
    assert classify(**{**kwargs, "finish_reason": "length"}) is Failure.REASONING_EXHAUSTED


# --- every class from the live shape alone ---------------------------------------------------------


def _status(status: int, message: str, **metadata: Any) -> dict[str, Any]:
    return {"http_status": status, "envelope": parse_error_envelope(live(message, status, **metadata))}


def _from_case(name: str) -> dict[str, Any]:
    case = live_case(name)
    return {"http_status": case.status, "envelope": parse_error_envelope(json.dumps(case.body))}


# One live-shaped outcome per class: bodies without availability or error_type, stream outcomes and
# exceptions. A class without an entry here could only be reached through the documented fields.
LIVE_SHAPE: dict[Failure, dict[str, Any]] = {
    Failure.WRONG_MODEL_ID: _from_case("invalid model id"),
    Failure.NO_ENDPOINTS: _from_case("no endpoints for a removed :free id"),
    Failure.FREE_VARIANT_ENDED: _from_case("unavailable for free (404)"),
    Failure.PRIVACY_EXCLUDED: _from_case("guardrail restrictions and data policy (404)"),
    Failure.PROVIDER_RESTRICTED: _from_case("no allowed providers"),
    Failure.APP_RESTRICTED: _from_case("only available on agentic harnesses"),
    Failure.CAPABILITY_UNSUPPORTED: _status(
        404,
        "No endpoints found that support tool use. To learn more about provider routing, visit: "
        "https://openrouter.ai/docs/provider-routing",
    ),
    Failure.CONTEXT_LIMIT: _status(
        400,
        "This endpoint's maximum context length is 200000 tokens. However, you requested about "
        "2000029 tokens (2000029 of text input). Please reduce the length of either one, or use the "
        '"middle-out" transform to compress your prompt automatically.',
    ),
    Failure.BAD_REQUEST: _from_case("'models' array longer than 3"),
    Failure.RATE_LIMIT_ACCOUNT: _status(429, "Rate limit exceeded: free-models-per-min."),
    Failure.RATE_LIMIT_UPSTREAM: _from_case("upstream shared-pool 429"),
    Failure.CREDITS_REQUIRED: _status(
        402, "Insufficient credits. Add more using https://openrouter.ai/settings/credits"
    ),
    Failure.AUTH: _status(401, "Missing Authentication header"),
    Failure.MODERATION: _status(
        403,
        'm requires moderation on OpenRouter. Your input was flagged for "harassment".',
        reasons=["harassment"],
        flagged_input="…",
        provider_name="Chutes",
        model_slug="m",
    ),
    Failure.TIMEOUT: {"http_status": None, "envelope": None, "exception": httpx.ReadTimeout("read")},
    Failure.PROVIDER_ERROR: _status(502, "Provider returned error", raw="upstream error", provider_name="X"),
    Failure.MID_STREAM_ERROR: {
        "http_status": 200,
        "envelope": parse_error_envelope(
            {"error": {"message": "Provider disconnected unexpectedly", "code": 502}}
        ),
        "content": "12",
        "finish_reason": "error",
    },
    Failure.EMPTY_REPLY: {"http_status": 200, "envelope": None, "content": "", "finish_reason": "stop"},
    Failure.REASONING_EXHAUSTED: {
        "http_status": 200,
        "envelope": None,
        "content": "",
        "reasoning": "Let me think.",
        "finish_reason": "length",
    },
    Failure.WRONG_ANSWER: {"http_status": 200, "envelope": None, "content": "41", "passed": False},
    Failure.TRANSPORT_ERROR: {
        "http_status": None,
        "envelope": None,
        "exception": httpx.ConnectError("refused"),
    },
}


def test_every_class_is_reachable_from_the_live_shape_alone() -> None:
    assert set(LIVE_SHAPE) == set(Failure)
    for failure, kwargs in LIVE_SHAPE.items():
        env = kwargs.get("envelope")
        if env is not None:
            assert env.availability_code is None and env.error_type is None, failure
        assert classify(**kwargs) is failure, failure

"""The closed failure taxonomy: every failed probe maps to exactly one :class:`Failure`.

Each class knows a human title, whether a retry can help, whether it settles the model (the model
cannot serve the account whatever it is asked, so nothing more is sent to it), and the remedy a user
should apply. The classifier that maps HTTP status, OpenRouter's error envelope, stream events and
grader verdicts onto this enum lives in :mod:`freemodels.classify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Failure(StrEnum):
    """Root cause of a failed probe (closed set)."""

    WRONG_MODEL_ID = "wrong_model_id"
    NO_ENDPOINTS = "no_endpoints"
    FREE_VARIANT_ENDED = "free_variant_ended"
    PRIVACY_EXCLUDED = "privacy_excluded"
    PROVIDER_RESTRICTED = "provider_restricted"
    APP_RESTRICTED = "app_restricted"
    CAPABILITY_UNSUPPORTED = "capability_unsupported"
    CONTEXT_LIMIT = "context_limit"
    BAD_REQUEST = "bad_request"
    RATE_LIMIT_ACCOUNT = "rate_limit_account"
    RATE_LIMIT_UPSTREAM = "rate_limit_upstream"
    CREDITS_REQUIRED = "credits_required"
    AUTH = "auth"
    MODERATION = "moderation"
    TIMEOUT = "timeout"
    PROVIDER_ERROR = "provider_error"
    MID_STREAM_ERROR = "mid_stream_error"
    EMPTY_REPLY = "empty_reply"
    REASONING_EXHAUSTED = "reasoning_exhausted"
    WRONG_ANSWER = "wrong_answer"
    TRANSPORT_ERROR = "transport_error"


@dataclass(frozen=True, slots=True)
class FailureInfo:
    """What a user needs to know about one failure class."""

    title: str
    retryable: bool
    remedy: str
    explanation: str
    settles_model: bool = False
    """The failure says the model cannot serve this account at all (whatever the task): one such
    answer settles the model, and an adaptive plan sends it nothing more."""


FAILURE_INFO: dict[Failure, FailureInfo] = {
    Failure.WRONG_MODEL_ID: FailureInfo(
        "Wrong model id",
        False,
        "Use the exact id from the catalog (GET /api/v1/models); see the suggested ids.",
        "OpenRouter does not know this id (400, 'is not a valid model ID').",
        settles_model=True,
    ),
    Failure.NO_ENDPOINTS: FailureInfo(
        "Not on OpenRouter / no endpoints",
        False,
        "Drop the model from the rotation; check the catalog again next month.",
        "The model exists but no provider serves it (404 'No endpoints found', deprecated or "
        "removed upstream).",
        settles_model=True,
    ),
    Failure.FREE_VARIANT_ENDED: FailureInfo(
        "No free variant (ended)",
        False,
        "Switch to another free model, or to the paid slug (the suggestion) if the budget allows.",
        "The model is on OpenRouter, but not as ':free': its free period has ended ('period has "
        "ended', 'unavailable for free', at 404 or 400, naming the paid slug) or the catalog lists "
        "only the paid slug.",
        settles_model=True,
    ),
    Failure.PRIVACY_EXCLUDED: FailureInfo(
        "Excluded by account privacy settings",
        False,
        "Allow free model publication/training at https://openrouter.ai/settings/privacy, or "
        "accept that this model stays unavailable to the account.",
        "The account's data policy or guardrails remove every endpoint of this model (404, or 400 "
        "'matching your guardrail restrictions and data policy').",
        settles_model=True,
    ),
    Failure.PROVIDER_RESTRICTED: FailureInfo(
        "Excluded by the account's allowed providers",
        False,
        "Add one of the providers that serve this model (the evidence names them) to the account's "
        "allowed providers at https://openrouter.ai/settings/preferences, or drop the model.",
        "The account (or the key's guardrail) allows only some providers, and none of them serves "
        "this model (404 'No allowed providers are available', with available_providers).",
        settles_model=True,
    ),
    Failure.APP_RESTRICTED: FailureInfo(
        "Served only to listed apps",
        False,
        "Drop the model from API use: OpenRouter serves it only inside the apps listed at "
        "https://openrouter.ai/apps (agentic harnesses), not to plain API calls.",
        "The catalog lists the model, but OpenRouter refuses plain API calls to it (403 'is only "
        "available on agentic harnesses').",
        settles_model=True,
    ),
    Failure.CAPABILITY_UNSUPPORTED: FailureInfo(
        "Capability unsupported",
        False,
        "Do not use this model for requests that need the missing capability.",
        "No endpoint supports what the request needs (tools, structured outputs, a parameter).",
        settles_model=True,
    ),
    Failure.CONTEXT_LIMIT: FailureInfo(
        "Context length exceeded",
        False,
        "Send shorter prompts or pick a model with a longer context.",
        "The request is longer than the model's context window (400 context_length_exceeded).",
    ),
    Failure.BAD_REQUEST: FailureInfo(
        "Request rejected",
        False,
        "Check the request parameters against the model's supported_parameters.",
        "The provider or OpenRouter rejected the request as invalid (400/413/422).",
    ),
    Failure.RATE_LIMIT_ACCOUNT: FailureInfo(
        "Rate limited (account quota)",
        True,
        "Wait for the reset (per minute or UTC midnight); buy 10 credits to lift the free daily "
        "quota from 50 to 1000 requests.",
        "The account's free-model limit was hit (429 free-models-per-min / per-day).",
    ),
    Failure.RATE_LIMIT_UPSTREAM: FailureInfo(
        "Rate limited upstream / no capacity",
        True,
        "Retry later or fall back to another model; bring your own provider key for this model.",
        "The upstream provider is rate-limiting or out of capacity (429 'Provider returned "
        "error', capacity_exhausted).",
    ),
    Failure.CREDITS_REQUIRED: FailureInfo(
        "Credits required",
        False,
        "Top up the balance (a negative balance blocks free models too) or disable paid plugins.",
        "OpenRouter asked for payment (402).",
        settles_model=True,
    ),
    Failure.AUTH: FailureInfo(
        "Authentication failed",
        False,
        "Check OPENROUTER_API_KEY: it must be a valid, unexpired key.",
        "The API key is missing, invalid or expired (401).",
        settles_model=True,
    ),
    Failure.MODERATION: FailureInfo(
        "Blocked by moderation or guardrail",
        False,
        "Review the account's guardrails; the suite's prompts are harmless, so this is a policy.",
        "The request was refused by moderation, a guardrail or a region restriction (403).",
        settles_model=True,
    ),
    Failure.TIMEOUT: FailureInfo(
        "Timeout",
        True,
        "Retry later; keep this model low in the rotation.",
        "No complete answer within the deadline (408, 504, or the probe's own deadline).",
    ),
    Failure.PROVIDER_ERROR: FailureInfo(
        "Provider error",
        True,
        "Retry later or fall back; the provider is down or returned an invalid response.",
        "The provider failed (5xx: 500, 502 provider_unavailable, 503 no instances).",
    ),
    Failure.MID_STREAM_ERROR: FailureInfo(
        "Error in the middle of the stream",
        True,
        "Retry; if it repeats, fall back to another model.",
        "The stream started (200) and then carried an error chunk (finish_reason 'error').",
    ),
    Failure.EMPTY_REPLY: FailureInfo(
        "Empty reply",
        True,
        "Retry after a short wait (cold start) or fall back to another model.",
        "The model answered with no text at all: no content and no reasoning (or tool calls only).",
    ),
    Failure.REASONING_EXHAUSTED: FailureInfo(
        "Reasoning used up max_tokens",
        False,
        "Raise max_tokens or lower the reasoning effort for this model.",
        "The model spent the whole token budget on reasoning (finish_reason 'length', no content).",
    ),
    Failure.WRONG_ANSWER: FailureInfo(
        "Wrong answer",
        False,
        "Do not rely on this model for tasks like the failed one.",
        "The model answered, but the grader rejected the answer.",
    ),
    Failure.TRANSPORT_ERROR: FailureInfo(
        "Transport error",
        True,
        "Check the network; retry.",
        "The connection failed, was reset, or the response was not valid HTTP/SSE/JSON.",
    ),
}


SETTLING: frozenset[Failure] = frozenset(f for f, i in FAILURE_INFO.items() if i.settles_model)
"""The classes that settle a model after one answer: wrong id, no endpoints, free variant ended, the
account's privacy settings, allowed providers or listed apps, capability, credits, auth, moderation."""


def info(failure: Failure) -> FailureInfo:
    """Title, retryability and remedy of a failure class."""
    return FAILURE_INFO[failure]

"""OpenRouter's error bodies (pure builders): ``{"error": {"code", "message", "metadata"?}, "user_id"?}``.

Shapes follow the recorded traffic (401 wordings, "No endpoints found for X.", upstream 429 "Provider
returned error" with ``metadata.raw`` and ``provider_name``, account 429 "Rate limit exceeded:
free-models-per-min." with ``metadata.headers`` X-RateLimit-*, the 400 for an over-long ``models`` array
with only ``message`` and ``code``), plus the documented typed ``metadata.error_type`` and, for
model-availability errors, ``error.availability``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freemodels.sandbox.scenario import Behavior

AVAILABILITY_DOCS = "https://openrouter.ai/docs/api/reference/errors-and-debugging#model-availability-errors"
PRIVACY_URL = "https://openrouter.ai/settings/privacy"
CREDITS_URL = "https://openrouter.ai/settings/credits"
LOW_BALANCE_DAILY_LIMIT = 50


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Status, body and extra headers of an error answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def envelope(
    code: int,
    message: str,
    *,
    metadata: dict[str, Any] | None = None,
    availability: dict[str, Any] | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """The error envelope."""
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    if availability is not None:
        error["availability"] = availability
    body: dict[str, Any] = {"error": error}
    if user_id is not None:
        body["user_id"] = user_id
    return body


def availability(code: str, retryable: bool, model_id: str, **extra: Any) -> dict[str, Any]:
    """The ``error.availability`` object of model-availability errors."""
    value: dict[str, Any] = {"code": code, "retryable": retryable, "requested_models": [model_id]}
    value.update({k: v for k, v in extra.items() if v is not None})
    value["docs_url"] = AVAILABILITY_DOCS
    return value


def missing_auth() -> ErrorReply:
    """No Authorization header (the wording of the newest recordings)."""
    return ErrorReply(401, {"error": {"message": "Missing Authentication header", "code": 401}})


def unknown_key() -> ErrorReply:
    """A bearer key that belongs to no account."""
    return ErrorReply(401, {"error": {"message": "User not found.", "code": 401}})


def bad_request(message: str, user_id: str | None = None) -> ErrorReply:
    return ErrorReply(
        400, envelope(400, message, metadata={"error_type": "invalid_request"}, user_id=user_id)
    )


def too_many_models(limit: int, user_id: str) -> ErrorReply:
    """400 for a ``models`` array longer than OpenRouter accepts, in the live body's shape: only
    ``message`` and ``code`` (no ``metadata``) plus the top-level ``user_id``. The whole request fails;
    no model is tried."""
    return ErrorReply(
        400,
        {
            "error": {"message": f"'models' array must have {limit} items or fewer.", "code": 400},
            "user_id": user_id,
        },
    )


def model_not_found(model_id: str, user_id: str) -> ErrorReply:
    """400 for an id the catalog does not list."""
    return ErrorReply(
        400,
        envelope(
            400,
            f"{model_id} is not a valid model ID",
            metadata={"error_type": "invalid_request"},
            availability=availability("model_not_found", False, model_id),
            user_id=user_id,
        ),
    )


def account_rate_limit(
    kind: str, *, limit: int, reset_ms: int, user_id: str, retry_after_s: float | None
) -> ErrorReply:
    """OpenRouter's own free-model 429 (``kind``: ``per-min`` or ``per-day``)."""
    if kind == "per-min":
        message = "Rate limit exceeded: free-models-per-min."
    elif limit <= LOW_BALANCE_DAILY_LIMIT:
        message = (
            "Rate limit exceeded: free-models-per-day. "
            "Add 10 credits to unlock 1000 free model requests per day"
        )
    else:
        message = "Rate limit exceeded: free-models-per-day-high-balance."
    limit_headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset_ms),
    }
    body = {
        "error": {
            "message": message,
            "code": 429,
            "metadata": {"headers": dict(limit_headers), "provider_name": None},
        },
        "user_id": user_id,
    }
    headers = dict(limit_headers)
    if retry_after_s is not None:
        headers["Retry-After"] = _seconds(retry_after_s)
    return ErrorReply(429, body, headers)


def behavior_error(
    behavior: Behavior,
    *,
    model_id: str,
    provider: str,
    user_id: str,
    retry_after_s: float | None,
    paid_slug: str | None = None,
    wants_tools: bool = False,
    prompt: str = "",
) -> ErrorReply:
    """The error a model with an error behaviour answers before any stream starts."""
    retry_headers = {"Retry-After": _seconds(retry_after_s)} if retry_after_s is not None else {}
    if behavior is Behavior.NO_ENDPOINTS:
        return ErrorReply(
            404,
            envelope(
                404,
                f"No endpoints found for {model_id}.",
                metadata={"error_type": "not_found"},
                availability=availability("no_endpoints", False, model_id),
                user_id=user_id,
            ),
        )
    if behavior is Behavior.FREE_VARIANT_ENDED:
        paid = paid_slug or model_id.removesuffix(":free")
        return ErrorReply(
            404,
            envelope(
                404,
                f"{model_id} is no longer available as a free model. Use {paid} instead.",
                metadata={"error_type": "not_found"},
                availability=availability("free_variant_ended", False, model_id, fallback_models=[paid]),
                user_id=user_id,
            ),
        )
    if behavior is Behavior.PRIVACY:
        return ErrorReply(
            404,
            envelope(
                404,
                "No endpoints found matching your data policy (Free model publication). "
                f"Configure: {PRIVACY_URL}",
                metadata={"error_type": "not_found"},
                availability=availability(
                    "privacy_restricted", False, model_id, excluded_by=["data_policy:training"]
                ),
                user_id=user_id,
            ),
        )
    if behavior is Behavior.CAPABILITY:
        if wants_tools:
            message = (
                "No endpoints found that support tool use. To learn more about provider "
                "routing, visit: https://openrouter.ai/docs/provider-routing"
            )
            constraint = {"field": "tools", "detail": "no endpoint supports tool use"}
        else:
            message = "No endpoints found that can handle the requested parameters."
            constraint = {"field": "require_parameters", "detail": "no endpoint supports them"}
        return ErrorReply(
            404,
            envelope(
                404,
                message,
                metadata={"error_type": "not_found"},
                availability=availability("constraint_filtered", False, model_id, constraint=constraint),
                user_id=user_id,
            ),
        )
    if behavior is Behavior.UPSTREAM_429:
        return ErrorReply(429, upstream_429(model_id, provider, user_id), retry_headers)
    if behavior is Behavior.CAPACITY_429:
        return ErrorReply(
            429,
            envelope(
                429,
                f"All providers for {model_id} are at capacity. Please retry shortly.",
                metadata={"error_type": "rate_limit_exceeded"},
                availability=availability(
                    "capacity_exhausted",
                    True,
                    model_id,
                    retry_after=retry_after_s,
                    affected_providers=[provider],
                ),
                user_id=user_id,
            ),
            retry_headers,
        )
    if behavior is Behavior.PROVIDER_502:
        return ErrorReply(502, provider_502(model_id, provider, user_id))
    if behavior is Behavior.PROVIDER_503:
        return ErrorReply(
            503,
            envelope(
                503,
                "No instances available",
                metadata={"error_type": "provider_overloaded", "provider_name": provider},
                availability=availability(
                    "temporarily_unavailable", True, model_id, retry_after=retry_after_s
                ),
                user_id=user_id,
            ),
            retry_headers,
        )
    if behavior is Behavior.TIMEOUT_408:
        return ErrorReply(
            408,
            envelope(
                408,
                "Timed out",
                metadata={"error_type": "timeout", "provider_name": provider},
                user_id=user_id,
            ),
        )
    if behavior is Behavior.CREDITS_402:
        return ErrorReply(
            402,
            envelope(
                402,
                f"Insufficient credits. Add more using {CREDITS_URL}",
                metadata={"error_type": "payment_required"},
                user_id=user_id,
            ),
        )
    if behavior is Behavior.MODERATION_403:
        flagged = prompt[:100]
        return ErrorReply(
            403,
            envelope(
                403,
                f'{model_id} requires moderation on OpenRouter. Your input was flagged for "harassment".',
                metadata={
                    "reasons": ["harassment"],
                    "flagged_input": flagged,
                    "provider_name": provider,
                    "model_slug": model_id,
                    "error_type": "permission_denied",
                },
                user_id=user_id,
            ),
        )
    raise ValueError(f"{behavior.value} is not an error behaviour")


def upstream_429(model_id: str, provider: str, user_id: str) -> dict[str, Any]:
    """The recorded upstream rate-limit body."""
    return envelope(
        429,
        "Provider returned error",
        metadata={
            "provider_name": provider,
            "raw": (
                f"{model_id} is temporarily rate-limited upstream. Please retry shortly, or add "
                "your own key to accumulate your rate limits: "
                "https://openrouter.ai/settings/integrations"
            ),
        },
        user_id=user_id,
    )


def provider_502(model_id: str, provider: str, user_id: str) -> dict[str, Any]:
    """An invalid upstream response."""
    return envelope(
        502,
        "Provider returned error",
        metadata={
            "provider_name": provider,
            "raw": f"{provider}: upstream returned an invalid response for {model_id}",
            "error_type": "provider_unavailable",
        },
        user_id=user_id,
    )


def storm_5xx(status: int, model_id: str, provider: str, user_id: str) -> ErrorReply:
    """One answer of a 5xx storm (no retry hint of any kind)."""
    if status == 502:
        return ErrorReply(502, provider_502(model_id, provider, user_id))
    messages = {500: "Internal Server Error", 503: "No instances available", 504: "Gateway Timeout"}
    types = {500: "server", 503: "provider_overloaded", 504: "timeout"}
    return ErrorReply(
        status,
        envelope(status, messages[status], metadata={"error_type": types[status]}, user_id=user_id),
    )


ERROR_BEHAVIORS = frozenset(
    {
        Behavior.NO_ENDPOINTS,
        Behavior.FREE_VARIANT_ENDED,
        Behavior.PRIVACY,
        Behavior.CAPABILITY,
        Behavior.UPSTREAM_429,
        Behavior.CAPACITY_429,
        Behavior.PROVIDER_502,
        Behavior.PROVIDER_503,
        Behavior.TIMEOUT_408,
        Behavior.CREDITS_402,
        Behavior.MODERATION_403,
    }
)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"

"""OpenRouter's error bodies (pure builders): ``{"error": {"message", "code", "metadata"?}, "user_id"?}``.

Two shapes (:class:`~freemodels.sandbox.scenario.ErrorShape`):

- **live** (the default), as production traffic shows them: ``message`` and ``code``, a top-level
  ``user_id``, and ``metadata`` only where live bodies carry it: an upstream 429's ``raw`` and
  ``provider_name`` (plus ``is_byok``, ``limit_source``, ``remedy_hint`` from a provider's shared
  pool), a 502's ``raw`` and ``provider_name``, moderation's ``reasons``, ``flagged_input``,
  ``provider_name``, ``model_slug``, the provider restriction's ``available_providers`` and
  ``requested_providers``, and the account 429's ``headers`` with X-RateLimit-*. The wordings are the
  live ones ("No endpoints found for X.", "This model is unavailable for free. ... use this slug
  instead: Y", "No endpoints available matching your guardrail restrictions and data policy", "X is
  only available on agentic harnesses ...", "No allowed providers are available for the selected
  model.").
- **documented**: the same bodies plus the documented ``metadata.error_type`` and, for
  model-availability errors, ``error.availability`` (``code``, ``retryable``, ``requested_models``,
  ``fallback_models``, ...). No live body found carries either.

The 400 for an over-long ``models`` array has the live shape in both: only ``message`` and ``code``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freemodels.sandbox.scenario import WORDINGS, Behavior, ErrorShape, Wording

AVAILABILITY_DOCS = "https://openrouter.ai/docs/api/reference/errors-and-debugging#model-availability-errors"
PRIVACY_URL = "https://openrouter.ai/settings/privacy"
CREDITS_URL = "https://openrouter.ai/settings/credits"
APPS_URL = "https://openrouter.ai/apps"
LOW_BALANCE_DAILY_LIMIT = 50
SHARED_POOL = "upstream_provider_shared_pool"


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Status, body and extra headers of an error answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Shaper:
    """Builds envelopes in one :class:`ErrorShape`, for one account (``user_id``)."""

    shape: ErrorShape = ErrorShape.LIVE
    user_id: str | None = None

    @property
    def documented(self) -> bool:
        return self.shape is ErrorShape.DOCUMENTED

    def envelope(
        self,
        code: int,
        message: str,
        *,
        metadata: dict[str, Any] | None = None,
        error_type: str | None = None,
        availability: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The error envelope: live fields always, the documented ones only in the documented shape."""
        error: dict[str, Any] = {"message": message, "code": code}
        meta = dict(metadata) if metadata else {}
        if self.documented and error_type is not None:
            meta["error_type"] = error_type
        if meta:
            error["metadata"] = meta
        if self.documented and availability is not None:
            error["availability"] = availability
        body: dict[str, Any] = {"error": error}
        if self.user_id is not None:
            body["user_id"] = self.user_id
        return body


def availability(code: str, retryable: bool, model_id: str, **extra: Any) -> dict[str, Any]:
    """The documented ``error.availability`` object of model-availability errors."""
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


def bad_request(message: str, shaper: Shaper | None = None) -> ErrorReply:
    shaper = shaper or Shaper()
    return ErrorReply(400, shaper.envelope(400, message, error_type="invalid_request"))


def too_many_models(limit: int, shaper: Shaper | None = None) -> ErrorReply:
    """400 for a ``models`` array longer than OpenRouter accepts, in the live body's shape in both
    shapes: only ``message`` and ``code`` (no ``metadata``) plus the top-level ``user_id``. The whole
    request fails; no model is tried."""
    shaper = shaper or Shaper()
    return ErrorReply(
        400, Shaper(user_id=shaper.user_id).envelope(400, f"'models' array must have {limit} items or fewer.")
    )


def not_found(message: str, shaper: Shaper | None = None) -> ErrorReply:
    """A 404 outside chat (an unknown model on the endpoints listing)."""
    shaper = shaper or Shaper()
    return ErrorReply(404, shaper.envelope(404, message, error_type="not_found"))


def model_not_found(model_id: str, shaper: Shaper) -> ErrorReply:
    """400 for an id the catalog does not list."""
    return ErrorReply(
        400,
        shaper.envelope(
            400,
            f"{model_id} is not a valid model ID",
            error_type="invalid_request",
            availability=availability("model_not_found", False, model_id),
        ),
    )


def account_rate_limit(
    kind: str, *, limit: int, reset_ms: int, user_id: str, retry_after_s: float | None
) -> ErrorReply:
    """OpenRouter's own free-model 429 (``kind``: ``per-min`` or ``per-day``); the same in both shapes."""
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


def _free_ended_message(model_id: str, paid: str, wording: Wording) -> str:
    if wording is Wording.PERIOD_ENDED:
        name = model_id.split("/", 1)[-1].removesuffix(":free")
        return (
            f"The free {name} period has ended. To continue using this model, please migrate to the "
            f"paid slug: {paid}"
        )
    if wording is Wording.NO_LONGER_FREE:
        return f"{model_id} is no longer available as a free model. Use {paid} instead."
    return (
        "This model is unavailable for free. The paid version is available now - use this slug "
        f"instead: {paid}"
    )


def _privacy_message(wording: Wording) -> str:
    if wording is Wording.GUARDRAIL_COUNT:
        return (
            "0 endpoints out of 1 requested are available matching your guardrail restrictions and "
            "data policy. Free model training violation (guardrail): 1 endpoint excluded"
        )
    if wording is Wording.DATA_POLICY_TRAINING:
        return "No endpoints found matching your data policy (Free model training)"
    if wording is Wording.DATA_POLICY_PUBLICATION:
        return (
            f"No endpoints found matching your data policy (Free model publication). Configure: {PRIVACY_URL}"
        )
    return (
        "No endpoints available matching your guardrail restrictions and data policy. "
        f"Configure: {PRIVACY_URL}"
    )


def _wording(behavior: Behavior, wording: Wording | None) -> Wording | None:
    """``wording`` when ``behavior`` knows it, else the behaviour's default (newest) wording."""
    known = WORDINGS.get(behavior, ())
    if wording in known:
        return wording
    return known[0] if known else None


def behavior_error(
    behavior: Behavior,
    *,
    model_id: str,
    provider: str,
    shaper: Shaper,
    retry_after_s: float | None,
    paid_slug: str | None = None,
    wants_tools: bool = False,
    prompt: str = "",
    wording: Wording | None = None,
    status: int | None = None,
) -> ErrorReply:
    """The error a model with an error behaviour answers before any stream starts.

    ``status`` replaces the behaviour's usual status (body ``code`` included); ``wording`` picks one
    of the behaviour's live wordings (:data:`~freemodels.sandbox.scenario.WORDINGS`).
    """
    reply = _behavior_reply(
        behavior,
        model_id=model_id,
        provider=provider,
        shaper=shaper,
        retry_after_s=retry_after_s,
        paid_slug=paid_slug,
        wants_tools=wants_tools,
        prompt=prompt,
        wording=_wording(behavior, wording),
    )
    if status is None or status == reply.status:
        return reply
    body = {**reply.body, "error": {**reply.body["error"], "code": status}}
    return ErrorReply(status, body, reply.headers)


def _behavior_reply(
    behavior: Behavior,
    *,
    model_id: str,
    provider: str,
    shaper: Shaper,
    retry_after_s: float | None,
    paid_slug: str | None,
    wants_tools: bool,
    prompt: str,
    wording: Wording | None,
) -> ErrorReply:
    retry_headers = {"Retry-After": _seconds(retry_after_s)} if retry_after_s is not None else {}
    envelope = shaper.envelope
    if behavior is Behavior.NO_ENDPOINTS:
        return ErrorReply(
            404,
            envelope(
                404,
                f"No endpoints found for {model_id}.",
                error_type="not_found",
                availability=availability("no_endpoints", False, model_id),
            ),
        )
    if behavior is Behavior.FREE_VARIANT_ENDED:
        paid = paid_slug or model_id.removesuffix(":free")
        return ErrorReply(
            404,
            envelope(
                404,
                _free_ended_message(model_id, paid, wording or Wording.UNAVAILABLE_FOR_FREE),
                error_type="not_found",
                availability=availability("free_variant_ended", False, model_id, fallback_models=[paid]),
            ),
        )
    if behavior is Behavior.PRIVACY:
        return ErrorReply(
            404,
            envelope(
                404,
                _privacy_message(wording or Wording.GUARDRAIL),
                error_type="not_found",
                availability=availability(
                    "privacy_restricted", False, model_id, excluded_by=["data_policy:training"]
                ),
            ),
        )
    if behavior is Behavior.PROVIDER_RESTRICTED:
        return ErrorReply(
            404,
            envelope(
                404,
                "No allowed providers are available for the selected model.",
                metadata={
                    "available_providers": [provider_slug(provider)],
                    "requested_providers": ["openai", "anthropic"],
                },
                error_type="not_found",
                availability=availability(
                    "privacy_restricted", False, model_id, excluded_by=["allowed_providers"]
                ),
            ),
        )
    if behavior is Behavior.APP_RESTRICTED:
        return ErrorReply(
            403,
            envelope(
                403,
                f"{model_id} is only available on agentic harnesses. Try plugging it into a coding agent "
                f"or productivity app listed on {APPS_URL}",
                error_type="permission_denied",
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
                error_type="not_found",
                availability=availability("constraint_filtered", False, model_id, constraint=constraint),
            ),
        )
    if behavior is Behavior.UPSTREAM_429:
        return ErrorReply(429, upstream_429(model_id, provider, shaper), retry_headers)
    if behavior is Behavior.CAPACITY_429:
        return ErrorReply(
            429,
            envelope(
                429,
                f"All providers for {model_id} are at capacity. Please retry shortly.",
                error_type="rate_limit_exceeded",
                availability=availability(
                    "capacity_exhausted",
                    True,
                    model_id,
                    retry_after=retry_after_s,
                    affected_providers=[provider],
                ),
            ),
            retry_headers,
        )
    if behavior is Behavior.PROVIDER_502:
        return ErrorReply(502, provider_502(model_id, provider, shaper))
    if behavior is Behavior.PROVIDER_503:
        return ErrorReply(
            503,
            envelope(
                503,
                "No instances available",
                error_type="provider_overloaded",
                availability=availability(
                    "temporarily_unavailable", True, model_id, retry_after=retry_after_s
                ),
            ),
            retry_headers,
        )
    if behavior is Behavior.TIMEOUT_408:
        return ErrorReply(408, envelope(408, "Timed out", error_type="timeout"))
    if behavior is Behavior.CREDITS_402:
        return ErrorReply(
            402,
            envelope(
                402, f"Insufficient credits. Add more using {CREDITS_URL}", error_type="payment_required"
            ),
        )
    if behavior is Behavior.MODERATION_403:
        return ErrorReply(
            403,
            envelope(
                403,
                f'{model_id} requires moderation on OpenRouter. Your input was flagged for "harassment".',
                metadata={
                    "reasons": ["harassment"],
                    "flagged_input": prompt[:100],
                    "provider_name": provider,
                    "model_slug": model_id,
                },
                error_type="permission_denied",
            ),
        )
    raise ValueError(f"{behavior.value} is not an error behaviour")


def upstream_429(model_id: str, provider: str, shaper: Shaper) -> dict[str, Any]:
    """The recorded upstream rate-limit body (``raw`` and ``provider_name`` only)."""
    return shaper.envelope(
        429,
        "Provider returned error",
        metadata={
            "raw": (
                f"{model_id} is temporarily rate-limited upstream. Please retry shortly, or add "
                "your own key to accumulate your rate limits: "
                "https://openrouter.ai/settings/integrations"
            ),
            "provider_name": provider,
        },
        error_type="rate_limit_exceeded",
    )


def shared_pool_429(model_id: str, provider: str, shaper: Shaper) -> dict[str, Any]:
    """An upstream 429 from a provider's shared pool of free capacity (the 2026 live metadata)."""
    return shaper.envelope(
        429,
        "Provider returned error",
        metadata={
            "raw": f"{model_id} is temporarily rate-limited upstream. Please retry shortly.",
            "provider_name": provider,
            "is_byok": False,
            "limit_source": SHARED_POOL,
            "remedy_hint": (
                "Retry shortly, add your own provider key at https://openrouter.ai/settings/integrations, "
                "or route to another provider with provider.order."
            ),
        },
        error_type="rate_limit_exceeded",
    )


def provider_502(model_id: str, provider: str, shaper: Shaper) -> dict[str, Any]:
    """An invalid upstream response."""
    return shaper.envelope(
        502,
        "Provider returned error",
        metadata={
            "raw": f"{provider}: upstream returned an invalid response for {model_id}",
            "provider_name": provider,
        },
        error_type="provider_unavailable",
    )


def storm_5xx(status: int, model_id: str, provider: str, shaper: Shaper) -> ErrorReply:
    """One answer of a 5xx storm (no retry hint of any kind)."""
    if status == 502:
        return ErrorReply(502, provider_502(model_id, provider, shaper))
    messages = {500: "Internal Server Error", 503: "No instances available", 504: "Gateway Timeout"}
    types = {500: "server", 503: "provider_overloaded", 504: "timeout"}
    return ErrorReply(status, shaper.envelope(status, messages[status], error_type=types[status]))


ERROR_BEHAVIORS = frozenset(
    {
        Behavior.NO_ENDPOINTS,
        Behavior.FREE_VARIANT_ENDED,
        Behavior.PRIVACY,
        Behavior.PROVIDER_RESTRICTED,
        Behavior.APP_RESTRICTED,
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

ROUTING_EXCLUSIONS = frozenset({Behavior.PRIVACY, Behavior.PROVIDER_RESTRICTED})
"""Behaviours that stand for the account's own settings excluding a model (``/models/user`` omits it)."""


def provider_slug(provider: str) -> str:
    """A provider's routing slug as ``available_providers`` lists it (``google-ai-studio``)."""
    return "-".join(provider.lower().replace(".", "-").split())


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"

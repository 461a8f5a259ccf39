"""OpenRouter's error bodies as live traffic shows them: the classifier's test data.

Each case is one response that projects running OpenRouter in production reported (issue threads, code
comments, test fixtures), with the report it comes from. Quoted text is kept verbatim, including the
``…`` where the report itself elided a part and the ``user_…`` ids. Where a report quotes only the
message, the case wraps it in the envelope live bodies have (``{"error": {"message", "code"},
"user_id"}``, row 1 of the list of live findings): never ``availability``, never ``metadata.error_type``.
Two cases describe a stream rather than quote one (the error chunk with empty ``choices`` and the answer
in the reasoning channel); they say so in ``note``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from freemodels.failures import Failure

USER = "user_…"


def live(message: str, code: int, **metadata: Any) -> dict[str, Any]:
    """The live envelope around a quoted message (metadata only where the report shows some)."""
    error: dict[str, Any] = {"message": message, "code": code}
    if metadata:
        error["metadata"] = metadata
    return {"error": error, "user_id": USER}


@dataclass(frozen=True, slots=True)
class LiveCase:
    """One live response, what it means, and where it was reported."""

    name: str
    status: int  # the HTTP status of the response (200 for an error inside a stream)
    body: dict[str, Any]  # the JSON body, or the SSE chunk when ``stream`` is set
    expected: Failure
    source: str
    stream: bool = False  # ``body`` is one chunk of a 200 SSE stream
    suggestion: str | None = None  # the model the error points to instead (the paid slug)
    note: str = ""
    tags: tuple[str, ...] = field(default=())


LIVE_CASES: tuple[LiveCase, ...] = (
    # Row 1: live bodies carry only message, code and a top-level user_id.
    LiveCase(
        "invalid model id",
        400,
        {"error": {"message": "minimax-m2.5:free is not a valid model ID", "code": 400}, "user_id": USER},
        Failure.WRONG_MODEL_ID,
        "sipeed/picoclaw#1790 (2026-03-19)",
    ),
    LiveCase(
        "no endpoints for a removed :free id",
        404,
        {
            "error": {"message": "No endpoints found for stepfun/step-3.5-flash:free.", "code": 404},
            "user_id": USER,
        },
        Failure.NO_ENDPOINTS,
        "stepfun-ai/Step-3.5-Flash#45 (2026-04-10)",
    ),
    # Row 16: a client that strips one "openrouter/" prefix sends "free".
    LiveCase(
        "router id stripped to 'free'",
        400,
        {"error": {"message": "free is not a valid model ID", "code": 400}},
        Failure.WRONG_MODEL_ID,
        "HKUDS/nanobot#847 (2026-02-19)",
    ),
    # Row 0: the models array cap.
    LiveCase(
        "'models' array longer than 3",
        400,
        live("'models' array must have 3 items or fewer.", 400),
        Failure.BAD_REQUEST,
        "ever-co/ever-gauzy#9915 (2026-08-05)",
    ),
    # Row 2: a retired free variant, both live wordings, at 404 and at 400.
    LiveCase(
        "free period has ended (404)",
        404,
        live(
            "The free MiMo-V2-Flash period has ended. To continue using this model, please migrate "
            "to the paid slug: xiaomi/mimo-v2-flash",
            404,
        ),
        Failure.FREE_VARIANT_ENDED,
        "code comments and logs, MiMo 2026-01/02; anomalyco/models.dev#1248 (2026-03-22)",
        suggestion="xiaomi/mimo-v2-flash",
    ),
    LiveCase(
        "free period has ended (400)",
        400,
        live(
            "The free MiMo-V2-Flash period has ended. To continue using this model, please migrate "
            "to the paid slug: xiaomi/mimo-v2-flash",
            400,
        ),
        Failure.FREE_VARIANT_ENDED,
        "one client saw the 'period has ended' wording at status 400 (Devstral 2512 fixture)",
        suggestion="xiaomi/mimo-v2-flash",
    ),
    LiveCase(
        "unavailable for free (404)",
        404,
        live(
            "This model is unavailable for free. The paid version is available now - use this slug "
            "instead: openai/gpt-oss-20b",
            404,
        ),
        Failure.FREE_VARIANT_ENDED,
        "logs on gpt-oss-20b:free (2026-09-14), gpt-oss-120b:free, llama-3.3-70b-instruct:free",
        suggestion="openai/gpt-oss-20b",
    ),
    LiveCase(
        "unavailable for free (400)",
        400,
        live(
            "This model is unavailable for free. The paid version is available now - use this slug "
            "instead: openai/gpt-oss-20b",
            400,
        ),
        Failure.FREE_VARIANT_ENDED,
        "the same wording at status 400, as the 'period has ended' wording was seen",
        suggestion="openai/gpt-oss-20b",
    ),
    # Row 3: a catalog-listed :free model served only to listed apps.
    LiveCase(
        "only available on agentic harnesses",
        403,
        live(
            "thinkingmachines/inkling:free is only available on agentic harnesses. Try plugging it "
            "into a coding agent or productivity app listed on https://openrouter.ai/apps",
            403,
        ),
        Failure.APP_RESTRICTED,
        "curtisgalloway/oxbox-survey:observations/2026-09-01-inkling-free-is-only-served-to-agentic-harnesses.md",
    ),
    # Held-out check: the account's provider restriction, not "no endpoints".
    LiveCase(
        "no allowed providers",
        404,
        live(
            "No allowed providers are available for the selected model.",
            404,
            available_providers=["chutes", "deepinfra"],
            requested_providers=["openai"],
        ),
        Failure.PROVIDER_RESTRICTED,
        "message as reported in several issue threads (2025-07 to 2026-07), with available_providers",
        note="provider names in the metadata are examples",
    ),
    # Row 4: the upstream shared-pool 429 and its extra metadata.
    LiveCase(
        "upstream shared-pool 429",
        429,
        {
            "error": {
                "message": "Provider returned error",
                "code": 429,
                "metadata": {
                    "raw": "deepseek/deepseek-v4-flash is temporarily rate-limited upstream. …",
                    "provider_name": "DigitalOcean",
                    "is_byok": False,
                    "limit_source": "upstream_provider_shared_pool",
                    "remedy_hint": (
                        "Retry shortly, add your own provider key …, or route to another provider …"
                    ),
                },
            }
        },
        Failure.RATE_LIMIT_UPSTREAM,
        "curtisgalloway/oxbox-survey:observations/2026-08-23-openrouter-429-clears-at-120s-retry.md; "
        "open-webui/computer#293 (2026-09-20)",
        tags=("shared_pool",),
    ),
    # Rows 6 and 12: the account's own free-model limits.
    LiveCase(
        "free-models-per-day (low balance)",
        429,
        live(
            "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests "
            "per day",
            429,
            headers={
                "X-RateLimit-Limit": "200",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": "1743033600000",
            },
        ),
        Failure.RATE_LIMIT_ACCOUNT,
        "Gitlawb/openclaude#936 (2026-04-28); r/openrouter 'When do free daily limits reset?' (2025-03)",
        tags=("day",),
    ),
    LiveCase(
        "free-models-per-day-high-balance",
        429,
        live("Rate limit exceeded: free-models-per-day-high-balance.", 429),
        Failure.RATE_LIMIT_ACCOUNT,
        "Gitlawb/openclaude#1549 (2026-06-05)",
        tags=("day",),
    ),
    # Row 8: data-policy and guardrail refusals, 2025 and 2026 wordings, at 404 and 400.
    LiveCase(
        "guardrail restrictions and data policy (404)",
        404,
        live(
            "No endpoints available matching your guardrail restrictions and data policy. Configure: "
            "https://openrouter.ai/settings/privacy",
            404,
        ),
        Failure.PRIVACY_EXCLUDED,
        "curtisgalloway/oxbox-survey:observations/2026-09-01-openrouter-eight-free-rows-404-on-this-accounts-data-policy.md",
    ),
    LiveCase(
        "0 endpoints out of 1 requested (400)",
        400,
        live(
            "0 endpoints out of 1 requested are available matching your guardrail restrictions and data "
            "policy. Free model training violation (guardrail): 1 endpoint excluded",
            400,
        ),
        Failure.PRIVACY_EXCLUDED,
        "a test fixture (repo not resolved), status 400",
    ),
    LiveCase(
        "0 endpoints out of 1 requested (404)",
        404,
        live(
            "0 endpoints out of 1 requested are available matching your guardrail restrictions and data "
            "policy. Free model training violation (guardrail): 1 endpoint excluded",
            404,
        ),
        Failure.PRIVACY_EXCLUDED,
        "another report of the same wording, status 404",
    ),
    LiveCase(
        "data policy (Free model training), 2025",
        404,
        live("No endpoints found matching your data policy (Free model training)", 404),
        Failure.PRIVACY_EXCLUDED,
        "BeehiveInnovations/zen-mcp-server:docs/models/openrouter-data-policy-requirements.md (2025-11-10)",
    ),
    LiveCase(
        "data policy (Free model publication), 2025",
        404,
        live("No endpoints found matching your data policy (Free model publication)", 404),
        Failure.PRIVACY_EXCLUDED,
        "BeehiveInnovations/zen-mcp-server:docs/models/openrouter-data-policy-requirements.md (2025-11-10)",
    ),
    # Row 7: an error chunk with empty choices inside a 200 stream.
    LiveCase(
        "error chunk with empty choices in a 200 stream",
        200,
        {
            "id": "gen-…",
            "object": "chat.completion.chunk",
            "model": "nvidia/nemotron-3-ultra-550b-a55b:free",
            "choices": [],
            "error": {
                "message": "Provider returned error",
                "code": 429,
                "metadata": {"raw": "Worker local total request limit reached (33/32)"},
            },
        },
        Failure.RATE_LIMIT_UPSTREAM,
        "diegosouzapw/OmniRoute#8210 (2026-07-22)",
        stream=True,
        note="the report describes the chunk (empty choices, a top-level error, 0 tokens) and quotes the "
        "upstream text; the envelope around that text is the live upstream shape",
    ),
)


def live_case(name: str) -> LiveCase:
    """The case called ``name``."""
    return next(case for case in LIVE_CASES if case.name == name)

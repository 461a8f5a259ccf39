"""OpenRouter's success wire format, as the recorded traffic shows it (pure builders, no I/O).

Streams are ``data: {json}`` lines separated by blank lines, ``: OPENROUTER PROCESSING`` comments while
waiting, a role-only first delta, reasoning deltas (``reasoning`` plus ``reasoning_details``) before
content, a chunk with ``finish_reason``, a final usage chunk, and ``data: [DONE]``. Non-streaming replies
are one ``chat.completion`` object. JSON is compact and keeps non-ASCII characters, as OpenRouter sends it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from freemodels.sandbox.scenario import UsageChunk

KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass(frozen=True, slots=True)
class Generation:
    """Identity of one generation, shared by all its chunks."""

    id: str
    created: int
    model: str
    provider: str


def dumps(value: Any) -> bytes:
    """Compact JSON bytes, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sse(value: Any) -> bytes:
    """One SSE event carrying ``value`` as JSON."""
    return b"data: " + dumps(value) + b"\n\n"


def role_delta() -> dict[str, Any]:
    return {"role": "assistant", "content": "", "reasoning": None, "reasoning_details": []}


def content_delta(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text, "reasoning": None, "reasoning_details": []}


def reasoning_delta(text: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "reasoning": text,
        "reasoning_details": [{"type": "reasoning.text", "text": text, "index": 0, "format": None}],
    }


def chunk(gen: Generation, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice."""
    return {
        "id": gen.id,
        "provider": gen.provider,
        "model": gen.model,
        "object": "chat.completion.chunk",
        "created": gen.created,
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "finish_reason": finish_reason,
                "native_finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
    }


def usage(
    prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0, cost: float = 0.0
) -> dict[str, Any]:
    """The ``usage`` object (reasoning tokens are part of ``completion_tokens``)."""
    cost_value: float | int = cost if cost else 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": cost_value,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": 0,
            "upstream_inference_completions_cost": cost_value,
        },
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens, "image_tokens": 0},
    }


def usage_chunk(
    gen: Generation, usage_value: dict[str, Any], style: UsageChunk, finish_reason: str = "stop"
) -> dict[str, Any]:
    """The final usage chunk, in one of the three forms real streams show."""
    if style is UsageChunk.EMPTY_CHOICES:
        body = chunk(gen, {})
        body["choices"] = []
    elif style is UsageChunk.WITH_CHOICE:
        body = chunk(gen, {"role": "assistant", "content": ""})
    else:
        plain = chunk(gen, {"role": "assistant", "content": ""}, finish_reason)
        body = {k: v for k, v in plain.items() if k != "choices"}
        body["service_tier"] = None
        body["choices"] = plain["choices"]
    body["usage"] = usage_value
    return body


def error_chunk(
    gen: Generation, error: dict[str, Any], usage_value: dict[str, Any], *, empty_choices: bool = False
) -> dict[str, Any]:
    """A mid-stream error: top-level ``error`` and ``finish_reason: "error"``; HTTP status stays 200.

    ``empty_choices`` sends ``choices: []`` instead of the one choice with ``finish_reason: "error"``
    (both shapes occur: the documented one, and an empty list in one live report).
    """
    body = chunk(gen, {"role": "assistant", "content": ""}, "error")
    return {
        "id": body["id"],
        "provider": body["provider"],
        "error": dict(error),
        "model": body["model"],
        "object": body["object"],
        "created": body["created"],
        "choices": [] if empty_choices else body["choices"],
        "usage": usage_value,
    }


def completion(
    gen: Generation,
    *,
    content: str | None,
    reasoning: str | None,
    finish_reason: str,
    usage_value: dict[str, Any],
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` (``error`` embeds a provider error next to partial content)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "reasoning": reasoning or None,
    }
    if reasoning:
        message["reasoning_details"] = [
            {"type": "reasoning.text", "text": reasoning, "index": 0, "format": None}
        ]
    choice: dict[str, Any] = {
        "index": 0,
        "logprobs": None,
        "finish_reason": finish_reason,
        "native_finish_reason": finish_reason,
        "message": message,
    }
    if error is not None:
        choice["error"] = error
    return {
        "id": gen.id,
        "object": "chat.completion",
        "created": gen.created,
        "model": gen.model,
        "provider": gen.provider,
        "system_fingerprint": None,
        "service_tier": None,
        "choices": [choice],
        "usage": usage_value,
    }

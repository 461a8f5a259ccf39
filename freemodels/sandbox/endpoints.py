"""``GET /api/v1/models/{author}/{slug}/endpoints`` (pure builders): the providers that serve a model.

The body follows the recorded listings (``{"data": {id, name, created, description, architecture,
endpoints: [...]}}``, fixtures from May 2025) with every field the current OpenAPI schema requires of
an endpoint (``model_id``, ``model_name``, the uptime and latency/throughput percentiles,
``supports_tool_choice``, ``native_tools``, ``service_tier``, ...).

It agrees with what each model is staged to do: ``{author}/{slug}`` names a model by its canonical
slug and lists one endpoint per variant the catalog lists (the ``:free`` one priced at zero);
``{author}/{slug}:free`` lists the free variant's alone. A variant staged as ``no_endpoints`` has no
endpoint (so a model whose only variant is that has an empty list); a ``:free`` id whose free variant
ended is not listed; a provider that fails (5xx, stalls, timeouts, mid-stream errors) shows a low
uptime; rate-limited requests are left out of uptime, as OpenRouter documents. The latency percentiles
centre on the time to the model's first token (a reasoning model's first reasoning token), as a
client measures it; the throughput on its staged total time. Routing exclusions of
the account (privacy, allowed providers) do not change this public listing: ``/models/user`` shows them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from freemodels.sandbox.bodies import provider_slug
from freemodels.sandbox.catalog import Catalog, SandboxModel
from freemodels.sandbox.profiles import Profile
from freemodels.sandbox.scenario import Behavior, Fault

_FAILING = frozenset(
    {
        Behavior.PROVIDER_502,
        Behavior.PROVIDER_503,
        Behavior.TIMEOUT_408,
        Behavior.MID_STREAM_ERROR,
        Behavior.STALL,
    }
)
_PRICE_KEYS = ("prompt", "completion", "request", "image", "web_search", "internal_reasoning")


def endpoints_json(
    catalog: Catalog, profiles: Mapping[str, Profile], author: str, slug: str
) -> dict[str, Any] | None:
    """The listing for ``author/slug`` (a canonical slug, or one variant's id), or None if unknown."""
    wanted = f"{author}/{slug}"
    base, _, variant = wanted.partition(":")
    variants = [
        model
        for model in catalog.models.values()
        if model.entry["canonical_slug"] == base and (not variant or model.id == wanted)
    ]
    if not variants:
        return None
    head = next((m for m in variants if m.id == base), variants[0])
    entry = head.entry
    architecture = entry["architecture"]
    endpoints = [
        _endpoint(model, profiles[model.id])
        for model in sorted(variants, key=lambda m: (m.free, m.id))
        if profiles[model.id].behavior is not Behavior.NO_ENDPOINTS
    ]
    return {
        "data": {
            "id": base,
            "name": str(entry["name"]).removesuffix(" (free)"),
            "created": entry["created"],
            "description": entry["description"],
            "architecture": {
                "tokenizer": architecture["tokenizer"],
                "instruct_type": architecture["instruct_type"],
                "modality": architecture["modality"],
                "input_modalities": list(architecture["input_modalities"]),
                "output_modalities": list(architecture["output_modalities"]),
            },
            "endpoints": endpoints,
        }
    }


def _endpoint(model: SandboxModel, profile: Profile) -> dict[str, Any]:
    entry = model.entry
    pricing = entry["pricing"]
    tag = provider_slug(profile.provider) + ("/free" if model.free else "")
    failing = profile.behavior in _FAILING or profile.fault is not Fault.NONE
    uptime = 35.0 if failing else 99.6
    ttft_s = (profile.ttft_ms - profile.reasoning_ms) / 1000  # the first token, reasoning or content
    total_s = max(profile.total_ms, profile.ttft_ms) / 1000
    params = list(entry["supported_parameters"])
    tools = "tools" in params
    return {
        "name": f"{profile.provider} | {entry['canonical_slug']}{':free' if model.free else ''}",
        "model_id": entry["canonical_slug"],
        "model_name": str(entry["name"]),
        "context_length": entry["context_length"],
        "pricing": {key: str(pricing.get(key, "0")) for key in _PRICE_KEYS} | {"discount": 0},
        "provider_name": profile.provider,
        "tag": tag,
        "quantization": None,
        "max_completion_tokens": entry["top_provider"]["max_completion_tokens"],
        "max_prompt_tokens": None,
        "supported_parameters": params,
        "status": 0,
        "uptime_last_5m": uptime,
        "uptime_last_30m": uptime,
        "uptime_last_1d": uptime,
        "latency_last_30m": _percentiles(ttft_s),
        "throughput_last_30m": _percentiles(max(1.0, 60.0 / max(total_s, 0.05)), rising=False),
        "supports_implicit_caching": False,
        "supports_tool_choice": {"auto": tools, "function": tools, "none": tools, "required": tools},
        "native_tools": {},
        "supports_diarization": False,
        "service_tier": None,
    }


def _percentiles(p50: float, *, rising: bool = True) -> dict[str, float]:
    """p50..p99 around ``p50``: later percentiles larger (latency) or smaller (throughput)."""
    factors = (1.0, 1.2, 1.5, 2.0) if rising else (1.0, 0.85, 0.7, 0.5)
    return {name: round(p50 * f, 3) for name, f in zip(("p50", "p75", "p90", "p99"), factors, strict=True)}

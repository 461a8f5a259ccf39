"""The rotation in forms that clients can use directly.

- :func:`rotation_json` (``docs/rotation.json``):

  - ``purposes``: per purpose, the two fields of an OpenRouter chat completion request that pick the
    model with fallbacks: ``model`` (the primary) and ``models`` (the ordered list OpenRouter tries when a
    model errors; "Model Fallbacks", https://openrouter.ai/docs/guides/routing/model-fallbacks). A client
    merges ``rotation["purposes"]["general"]`` into its request body. OpenRouter refuses a ``models``
    array of more than three ids (HTTP 400 ``'models' array must have 3 items or fewer.``), so ``models``
    holds at most ``models_limit`` ids (the ``rotation_models_limit`` setting): the primary, then the
    best fallbacks in chain order;
  - ``chains``: per purpose, the whole ordered chain (primary first), for clients that walk it
    themselves (LiteLLM, their own retry loop);
  - ``measurements``: per purpose, what each model of the chain measured.

  Free models only, so a fallback never bills.
- :func:`litellm_router_yaml` (``docs/litellm-router.yaml``): a LiteLLM router configuration (the
  ``config.yaml`` shape LiteLLM documents for its proxy and that ``litellm.Router(**config["router_settings"],
  model_list=config["model_list"])`` takes): one ``model_list`` entry per purpose (its ``model_name`` is
  the purpose, served by the primary) and one per model id in any chain (its ``model_name`` is the id),
  plus ``router_settings.fallbacks`` mapping each purpose to the rest of its whole chain in order (LiteLLM
  sends one model per request, so OpenRouter's ``models`` limit does not apply), and the retry, wait and
  cooldown settings of :data:`LITELLM_ROUTER_SETTINGS`. The API key is referenced as
  ``os.environ/OPENROUTER_API_KEY``, never written.

Both are pure functions of the rotation frame (:data:`~freemodels.records.ROTATION_SCHEMA`) and the run's
metadata, and produce the same text for the same input. A rotation the daily watch repaired (its lost
models removed, see :mod:`freemodels.watch`) carries a :class:`Repair`: ``rotation.json`` gets a
``repaired`` object and the YAML a comment saying what was removed and why.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl
import yaml

from freemodels.settings import OPENROUTER_MODELS_LIMIT
from freemodels.source import PROFILES, SourceKind, profile_of

LITELLM_ROUTER_SETTINGS: dict[str, Any] = {
    "num_retries": 0,
    "retry_after": 8,
    "retry_policy": {
        "RateLimitErrorRetries": 2,
        "TimeoutErrorRetries": 0,
        "InternalServerErrorRetries": 0,
        "ServiceUnavailableErrorRetries": 0,
        "NotFoundErrorRetries": 0,
        "BadRequestErrorRetries": 0,
        "AuthenticationErrorRetries": 0,
        "ContentPolicyViolationErrorRetries": 0,
    },
    "allowed_fails_policy": {
        "RateLimitErrorAllowedFails": 2,
        "NotFoundErrorAllowedFails": 0,
        "InternalServerErrorAllowedFails": 0,
        "ServiceUnavailableErrorAllowedFails": 0,
        "BadGatewayErrorAllowedFails": 0,
        "TimeoutErrorAllowedFails": 0,
    },
    "cooldown_time": 60,
}
"""The retry, wait and cooldown settings of the LiteLLM export (``router_settings`` beside the
fallbacks), as LiteLLM's ``Router`` names them (``retry_policy`` and ``allowed_fails_policy`` per
exception type, ``retry_after`` in seconds, ``cooldown_time`` in seconds). Why these values:

- LiteLLM raises the same ``RateLimitError`` for the account's own 429 (``free-models-per-min``,
  shared by every free model: falling back cannot help) and for a model's upstream 429 (another model
  can help), and OpenRouter's account 429 carries no ``Retry-After`` (only ``X-RateLimit-Reset``,
  which LiteLLM does not read). So every 429 first waits: two retries of the same model, each at
  least ``retry_after`` seconds later (LiteLLM caps a wait at 8 s), about 17 s in all; an account
  window that clears by then is waited out without walking the chain, each step of which would
  spend a request of the daily quota;
- a model that answered 429 three times within a minute (``RateLimitErrorAllowedFails``) is set aside
  for ``cooldown_time`` seconds: an upstream storm costs one slow request, later requests go straight
  to the next model;
- 404 (free variant ended, no endpoints), 5xx and timeouts fall back at once (no retry), and the model
  is set aside for a minute;
- ``num_retries`` 0: nothing else is retried (authentication, bad requests: no retry can help).

The drill (``discovery drill``) measures these settings against LiteLLM's defaults' behaviour under
each incident; the reports show the figures."""

SANDBOX_NOTE = (
    "Sandbox data: these chains were computed from the project's simulated OpenRouter, not from real "
    "models. Do not route real traffic with them."
)


@dataclass(frozen=True, slots=True)
class Repair:
    """How a watch repaired a measured rotation: the models it removed and why."""

    on: str  # the watch's date, YYYY-MM-DD
    watch_id: str
    measured_run_id: str
    removed: tuple[tuple[str, str, str], ...]  # (model id, reason, detail)
    emptied: tuple[str, ...] = ()  # purposes left without any model

    def as_json(self) -> dict[str, Any]:
        return {
            "on": self.on,
            "watch_id": self.watch_id,
            "measured_run_id": self.measured_run_id,
            "removed": [{"model": m, "reason": r, "detail": d} for m, r, d in self.removed],
            "purposes_left_empty": list(self.emptied),
            "note": (
                "The daily watch removed these models from the measured rotation (gone from the "
                "catalog, no longer free, or without endpoints); the fallbacks moved up. The "
                "measurements are the run's."
            ),
        }

    def comment_lines(self) -> list[str]:
        """YAML comment lines (model ids JSON-quoted: a catalog id never breaks out of a comment)."""
        lines = [
            f"# Repaired on {self.on} by watch {self.watch_id}: lost models removed, fallbacks moved up."
        ]
        lines += [f"#   removed {json.dumps(m)} ({r})" for m, r, _ in self.removed]
        if self.emptied:
            lines.append(f"#   purposes left without a model: {', '.join(self.emptied)}")
        return lines


def _chains(rotation: pl.DataFrame, order: Sequence[str] | None) -> dict[str, list[dict[str, Any]]]:
    """Purpose -> its rows by rank; purposes in ``order``, then any others alphabetically."""
    chains: dict[str, list[dict[str, Any]]] = {}
    for row in rotation.sort(["purpose", "rank"]).iter_rows(named=True):
        chains.setdefault(row["purpose"], []).append(row)
    position = {p: i for i, p in enumerate(order or ())}
    return dict(sorted(chains.items(), key=lambda item: (position.get(item[0], len(position)), item[0])))


def _iso(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def rotation_json(
    rotation: pl.DataFrame,
    *,
    run_id: str,
    source: str,
    generated_at: datetime | str | None,
    order: Sequence[str] | None = None,
    models_limit: int = OPENROUTER_MODELS_LIMIT,
    repaired: Repair | None = None,
) -> dict[str, Any]:
    """The rotation as a JSON-ready dict (see the module docstring for the shape).

    ``generated_at`` is the run's time (not the wall clock), so the output is reproducible; ``order``
    lists purposes in the order to write them (others follow alphabetically); ``models_limit`` caps each
    purpose's ``models`` array (the whole chain stays under ``chains``).

    Raises ``ValueError`` if ``models_limit`` is below 1.
    """
    if models_limit < 1:
        raise ValueError(f"models_limit must be at least 1, not {models_limit}")
    chains = _chains(rotation, order)
    document: dict[str, Any] = {
        "generated_by": "Free Model Discovery",
        "run_id": run_id,
        "source": source,
        "generated_at": _iso(generated_at),
        "usage": (
            "Merge purposes[<purpose>] into an OpenRouter chat completion request body: 'model' is the "
            f"primary, 'models' the primary and the next best fallbacks (at most {models_limit} ids; "
            "OpenRouter refuses a longer 'models' array with HTTP 400), tried in order when a model "
            "errors. chains[<purpose>] is the whole ordered chain, primary first, for clients that try "
            "models themselves (LiteLLM, your own loop); never send it as 'models'."
        ),
        "models_limit": models_limit,
    }
    if _simulated(source):
        document["warning"] = SANDBOX_NOTE
    if repaired is not None:
        document["repaired"] = repaired.as_json()
    document["purposes"] = {
        purpose: {"model": rows[0]["model_id"], "models": [r["model_id"] for r in rows[:models_limit]]}
        for purpose, rows in chains.items()
    }
    document["chains"] = {purpose: [r["model_id"] for r in rows] for purpose, rows in chains.items()}
    document["measurements"] = {
        purpose: [
            {
                "model": r["model_id"],
                "rank": r["rank"],
                "family": r["family"],
                "tier": r["tier"],
                "p50_total_ms": r["p50_total_ms"],
                "success_rate": r["success_rate"],
            }
            for r in rows
        ]
        for purpose, rows in chains.items()
    }
    return document


def _simulated(source: str) -> bool:
    profile = profile_of(source)
    return profile is not None and profile.simulated


def _deployment(model_id: str, *, source: str, base_url: str | None) -> dict[str, Any]:
    """One LiteLLM deployment of ``model_id`` as the source's profile says LiteLLM reaches it."""
    profile = profile_of(source) or PROFILES[SourceKind.OPENROUTER]
    params: dict[str, Any] = {"model": profile.litellm_model(model_id)}
    if profile.litellm_sets_api_base and base_url:
        params["api_base"] = base_url
    params["api_key"] = profile.litellm_key_ref
    return params


def litellm_config(
    rotation: pl.DataFrame,
    *,
    source: str = "openrouter",
    base_url: str | None = None,
    order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The LiteLLM router configuration as a dict (``model_list`` and ``router_settings``)."""
    chains = _chains(rotation, order)
    model_list: list[dict[str, Any]] = []
    for purpose, rows in chains.items():
        params = _deployment(rows[0]["model_id"], source=source, base_url=base_url)
        model_list.append({"model_name": purpose, "litellm_params": params})
    seen: set[str] = set()
    for rows in chains.values():
        for row in rows:
            if row["model_id"] in seen:
                continue
            seen.add(row["model_id"])
            params = _deployment(row["model_id"], source=source, base_url=base_url)
            model_list.append({"model_name": row["model_id"], "litellm_params": params})
    fallbacks = [
        {purpose: [r["model_id"] for r in rows[1:]]} for purpose, rows in chains.items() if len(rows) > 1
    ]
    return {
        "model_list": model_list,
        "router_settings": {"fallbacks": fallbacks, **copy.deepcopy(LITELLM_ROUTER_SETTINGS)},
    }


def litellm_router_yaml(
    rotation: pl.DataFrame,
    *,
    run_id: str = "",
    source: str = "openrouter",
    base_url: str | None = None,
    order: Sequence[str] | None = None,
    repaired: Repair | None = None,
) -> str:
    """:func:`litellm_config` as YAML, with a comment header naming the run and the source."""
    header = [
        "# LiteLLM router configuration generated by Free Model Discovery.",
        f"# Run: {run_id or 'unknown'}; source: {source}.",
        "# Use a purpose (general, json, long-context, tier:<name>) as the model name; LiteLLM falls",
        "# back along router_settings.fallbacks through the whole chain, in order. Load with",
        "# `litellm --config litellm-router.yaml` or",
        "# litellm.Router(model_list=cfg['model_list'], **cfg['router_settings']).",
        "# A 429 waits first: 2 retries of the same model, each at least retry_after (8 s) later, since",
        "# the account's own 429 (every free model shares it) looks to LiteLLM like a model's upstream",
        "# 429 and carries no Retry-After. A model that answered 429 three times in a minute, or any",
        "# 404, 5xx or timeout, is set aside for cooldown_time (60 s) and the request falls back at once.",
    ]
    if _simulated(source):
        header.append(f"# WARNING: {SANDBOX_NOTE}")
    if repaired is not None:
        header += repaired.comment_lines()
    body: str = yaml.safe_dump(
        litellm_config(rotation, source=source, base_url=base_url, order=order),
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return "\n".join(header) + "\n" + body

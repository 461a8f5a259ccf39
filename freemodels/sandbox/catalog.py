"""The sandbox's catalog, built from the compact table ``models.toml`` into OpenRouter's exact schema.

Each model object carries the key set of the newest real catalogs (``id, canonical_slug, hugging_face_id,
name, created, description, context_length, architecture, pricing, top_provider, per_request_limits,
supported_parameters, default_parameters, supported_voices, knowledge_cutoff, expiration_date, links``),
plus the documented ``reasoning`` object on reasoning models. Prices are strings; free variants carry
``"0"``, routers with variable prices ``"-1"``. ``GET /api/v1/models`` answers ``{"data": [...],
"total_count": N, "links": {"next": null}}``, newest first: the root object of OpenRouter's current API
reference, which its official SDK requires (older recorded catalogs carry only ``data``); with
``offset``/``limit`` it pages, ``links.next`` pointing at the next page.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from freemodels.errors import ScenarioError
from freemodels.sandbox.scenario import CatalogChanges

PARAMETER_TAGS: dict[str, tuple[str, ...]] = {
    "core": ("max_tokens", "temperature", "top_p"),
    "penalties": ("frequency_penalty", "presence_penalty"),
    "stop": ("stop",),
    "top_k": ("top_k",),
    "tools": ("tool_choice", "tools"),
    "reasoning": ("include_reasoning", "reasoning"),
    "json": ("response_format", "structured_outputs"),
    "seed": ("seed",),
    "min_p": ("min_p",),
    "logit": ("logit_bias", "logprobs", "top_logprobs"),
    "extra": ("logit_bias", "logprobs", "min_p", "repetition_penalty", "top_logprobs"),
    "web": ("web_search_options",),
}
DEFAULT_TAGS = ("core", "penalties", "stop", "top_k")
PAID_EXTRA_TAGS = ("json", "seed")

_DEFAULT_PARAMETERS: dict[str, dict[str, Any]] = {
    "none": {},
    "basic": {"temperature": None, "top_p": None, "frequency_penalty": None},
    "full": {
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "frequency_penalty": None,
        "presence_penalty": None,
        "repetition_penalty": None,
    },
}
_MODALITY_ORDER = ("text", "image", "file", "audio", "video")
_ROW_KEYS = {
    "id", "name", "created", "ctx", "desc", "slug", "hf", "max_out", "moderated", "inputs",
    "outputs", "tokenizer", "instruct", "params", "defaults", "price", "prices", "reasoning",
    "knowledge", "expires", "provider", "paid",
}  # fmt: skip
_PAID_PROVIDER = "DeepInfra"
_SYNTHETIC_PAID_PRICE = ("0.0000001", "0.0000004")


@dataclass(frozen=True, slots=True)
class SandboxModel:
    """One listed model: its catalog object and what the server needs to play it."""

    id: str
    entry: Mapping[str, Any] = field(repr=False)
    provider: str
    free: bool
    router: bool
    reasoning: bool
    supports_tools: bool
    max_completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class Catalog:
    """The listed models, plus ``:free`` ids whose free variant ended (id -> paid slug)."""

    models: Mapping[str, SandboxModel]
    ended_free: Mapping[str, str]

    def free_ids(self) -> list[str]:
        """Ids of free models (``:free`` or zero-priced), routers included, in listing order."""
        return [m.id for m in self.models.values() if m.free]

    def listing(self, output_modalities: str | None = None) -> list[dict[str, Any]]:
        """Catalog objects, newest first, filtered like OpenRouter's ``output_modalities`` (default text)."""
        wanted = {p.strip() for p in (output_modalities or "text").split(",") if p.strip()}
        result = []
        for model in self.models.values():
            outputs = set(model.entry["architecture"]["output_modalities"])
            if "all" in wanted or outputs & wanted:
                result.append(_copy(model.entry))
        return result


def load_table() -> list[dict[str, Any]]:
    """The rows of the shipped ``models.toml``."""
    text = resources.files("freemodels.sandbox").joinpath("models.toml").read_text("utf-8")
    rows: list[dict[str, Any]] = tomllib.loads(text)["models"]
    for row in rows:
        unknown = set(row) - _ROW_KEYS
        if unknown:
            raise ValueError(f"models.toml: unknown keys {sorted(unknown)} in {row.get('id')}")
    return rows


def build_catalog(
    changes: CatalogChanges | None = None,
    rows: Iterable[Mapping[str, Any]] | None = None,
    *,
    today: date | None = None,
) -> Catalog:
    """Expand the table (plus generated paid counterparts) and apply a scenario's catalog changes.

    ``today`` (default: the UTC date now) anchors the expiration dates given as days from today."""
    changes = changes if changes is not None else CatalogChanges()
    table = list(rows) if rows is not None else load_table()
    expanded: dict[str, dict[str, Any]] = {}
    for row in table:
        expanded[row["id"]] = dict(row)
        if "paid" in row:
            paid = _paid_row(row, tuple(row["paid"]))
            expanded.setdefault(paid["id"], paid)

    for model_id in changes.remove:
        if model_id not in expanded:
            raise ScenarioError(f"catalog.remove: {model_id!r} is not in the sandbox catalog")
        del expanded[model_id]
    ended: dict[str, str] = {}
    for model_id in changes.paid:
        found = expanded.pop(model_id, None)
        if found is None:
            raise ScenarioError(f"catalog.paid: {model_id!r} is not in the sandbox catalog")
        paid_id = model_id.removesuffix(":free")
        if paid_id not in expanded:
            expanded[paid_id] = _paid_row(found, found.get("paid", _SYNTHETIC_PAID_PRICE))
        ended[model_id] = paid_id
    newest = max((int(r["created"]) for r in expanded.values()), default=1_700_000_000)
    for offset, model_id in enumerate(changes.add_free, start=1):
        if model_id in expanded:
            raise ScenarioError(f"catalog.add_free: {model_id!r} is already in the sandbox catalog")
        expanded[model_id] = _synthetic_free_row(model_id, newest + offset * 86_400)
    for model_id, when in changes.expires.items():
        if model_id not in expanded:
            raise ScenarioError(f"catalog.expires: {model_id!r} is not in the sandbox catalog")
        if isinstance(when, int):
            anchor = today if today is not None else datetime.now(UTC).date()
            when = (anchor + timedelta(days=when)).isoformat()
        expanded[model_id] = {**expanded[model_id], "expires": when}

    ordered = sorted(expanded.values(), key=lambda r: (-int(r["created"]), r["id"]))
    models = {row["id"]: _model(row) for row in ordered}
    return Catalog(models=models, ended_free=ended)


def catalog_json(
    catalog: Catalog,
    *,
    output_modalities: str | None = None,
    offset: int | None = None,
    limit: int | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """The body of ``GET /api/v1/models`` (and, less the ``exclude`` ids, of ``/models/user``)."""
    data = [entry for entry in catalog.listing(output_modalities) if entry["id"] not in exclude]
    if offset is None and limit is None:
        # The whole list; the current schema requires total_count and links (next: null) here too.
        return {"data": data, "total_count": len(data), "links": {"next": None}}
    start = offset or 0
    size = limit or 500
    page = data[start : start + size]
    next_link = None
    if start + size < len(data):
        next_link = f"/api/v1/models?offset={start + size}&limit={size}"
    return {"data": page, "total_count": len(data), "links": {"next": next_link}}


def is_free_entry(entry: Mapping[str, Any]) -> bool:
    """OpenRouter's free rule: id ends in ``:free`` or prompt and completion prices are both zero."""
    if str(entry["id"]).endswith(":free"):
        return True
    pricing = entry.get("pricing") or {}
    return _is_zero(pricing.get("prompt")) and _is_zero(pricing.get("completion"))


# --------------------------------------------------------------------------------------------------
# row expansion


def _model(row: Mapping[str, Any]) -> SandboxModel:
    entry = _entry(row)
    params = entry["supported_parameters"]
    return SandboxModel(
        id=entry["id"],
        entry=entry,
        provider=str(row.get("provider") or "Chutes"),
        free=is_free_entry(entry),
        router=entry["architecture"]["tokenizer"] == "Router",
        reasoning="reasoning" in entry,
        supports_tools="tools" in params,
        max_completion_tokens=entry["top_provider"]["max_completion_tokens"],
    )


def _entry(row: Mapping[str, Any]) -> dict[str, Any]:
    model_id = str(row["id"])
    slug = str(row.get("slug") or model_id.split(":", 1)[0])
    inputs = list(row.get("inputs", ["text"]))
    outputs = list(row.get("outputs", ["text"]))
    prompt, completion = row.get("price", ("0", "0"))
    pricing = {"prompt": str(prompt), "completion": str(completion)}
    pricing.update({k: str(v) for k, v in row.get("prices", {}).items()})
    entry: dict[str, Any] = {
        "id": model_id,
        "canonical_slug": slug,
        "hugging_face_id": row.get("hf"),
        "name": str(row["name"]),
        "created": int(row["created"]),
        "description": str(row["desc"]),
        "context_length": int(row["ctx"]),
        "architecture": {
            "modality": f"{_modality(inputs)}->{_modality(outputs)}",
            "input_modalities": inputs,
            "output_modalities": outputs,
            "tokenizer": str(row["tokenizer"]),
            "instruct_type": row.get("instruct"),
        },
        "pricing": pricing,
        "top_provider": {
            "context_length": None if row["tokenizer"] == "Router" else int(row["ctx"]),
            "max_completion_tokens": row.get("max_out"),
            "is_moderated": bool(row.get("moderated", False)),
        },
        "per_request_limits": None,
        "supported_parameters": _parameters(row.get("params", DEFAULT_TAGS)),
        "default_parameters": dict(_DEFAULT_PARAMETERS[str(row.get("defaults", "none"))]),
    }
    if "reasoning" in row:
        mandatory = row["reasoning"] == "mandatory"
        entry["reasoning"] = {
            "mandatory": mandatory,
            "default_enabled": True,
            "default_effort": "medium",
            "supported_efforts": ["minimal", "low", "medium", "high"],
            "supports_max_tokens": True,
        }
    entry["supported_voices"] = None
    entry["knowledge_cutoff"] = row.get("knowledge")
    entry["expiration_date"] = row.get("expires")
    entry["links"] = {"details": f"/api/v1/models/{slug}/endpoints"}
    return entry


def _paid_row(row: Mapping[str, Any], price: tuple[str, str] | list[str]) -> dict[str, Any]:
    paid = {k: v for k, v in row.items() if k != "paid"}
    paid["id"] = str(row["id"]).removesuffix(":free")
    paid["name"] = str(row["name"]).removesuffix(" (free)")
    paid["price"] = [str(price[0]), str(price[1])]
    tags = list(row.get("params", DEFAULT_TAGS))
    paid["params"] = tags + [t for t in PAID_EXTRA_TAGS if t not in tags]
    paid["provider"] = _PAID_PROVIDER
    return paid


def _synthetic_free_row(model_id: str, created: int) -> dict[str, Any]:
    author, _, rest = model_id.partition("/")
    base = rest.split(":", 1)[0] or author
    title = " ".join(part.capitalize() for part in base.replace("_", "-").split("-"))
    return {
        "id": model_id,
        "name": f"{author.capitalize()}: {title} (free)",
        "created": created,
        "ctx": 131072,
        "desc": f"{title} is a newly listed model, offered as a free variant while it is evaluated.",
        "tokenizer": "Other",
        "params": [*DEFAULT_TAGS, "tools"],
        "provider": "Chutes",
    }


def _parameters(tags: Iterable[str]) -> list[str]:
    names: set[str] = set()
    for tag in tags:
        try:
            names.update(PARAMETER_TAGS[tag])
        except KeyError:
            raise ValueError(f"models.toml: unknown parameter tag {tag!r}") from None
    return sorted(names)


def _modality(kinds: Iterable[str]) -> str:
    present = set(kinds)
    return "+".join(k for k in _MODALITY_ORDER if k in present)


def _is_zero(value: object) -> bool:
    try:
        return Decimal(str(value)) == 0
    except InvalidOperation:
        return False


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value

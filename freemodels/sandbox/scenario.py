"""Scenario files: stage exact situations in the sandbox.

A scenario is a TOML file (or JSON with the same structure). Every key is optional; an unknown key, a value
of the wrong type or out of range raises :class:`ScenarioError` naming the key. Without a scenario the
sandbox runs its default profiles (see :mod:`freemodels.sandbox.profiles`).

Format::

    seed = 123                  # seeds the behaviour profiles (default: the seed the sandbox is started
                                # with, i.e. settings.sandbox_seed)
    error_shape = "live"        # "live" (default): error bodies carry what live OpenRouter bodies
                                # carry: message, code, a top-level user_id, and metadata only where
                                # live bodies have it (an upstream 429's raw/provider_name, a shared
                                # pool's is_byok/limit_source/remedy_hint, moderation reasons, the
                                # provider restriction's available_providers, the account 429's
                                # X-RateLimit headers). "documented": also the documented
                                # metadata.error_type and error.availability {code, retryable,
                                # requested_models, fallback_models, ...}, which no live body shows

    [limits]                    # the account, as OpenRouter's platform limits see it
    requests_per_minute = 600   # sliding 60 s window over chat requests to free models, account-wide;
                                # beyond it: 429 "Rate limit exceeded: free-models-per-min."  (>= 1)
    requests_per_day = 1000     # daily free quota (UTC day); beyond it: 429 free-models-per-day;
                                # reported by /api/v1/key as free_model_daily_requests  (>= 0)
    requests_used_today = 0     # requests already spent today when the sandbox starts
    api_key = "sk-or-v1-..."    # if set, only this bearer key is accepted (401 "User not found." for
                                # others); if unset any non-empty bearer key is accepted; a request
                                # without a key always gets 401 "Missing Authentication header"
    retry_after_s = 2           # adds Retry-After to the account-level 429s (default: none, like
                                # OpenRouter's free tier, which gives only X-RateLimit-Reset)
    count_rejected = true       # requests refused with an account 429 still count toward the
                                # minute window and the daily quota (default true: OpenRouter's help
                                # centre says "Failed attempts still count toward your daily quota");
                                # false counts only requests the limits let through
    requests_this_minute = 0    # requests already in the sliding 60 s window when the sandbox starts
                                # (other traffic of the same account): with the limit's worth of them,
                                # every free request gets the per-minute 429 until they leave  (>= 0)
    minute_clears_in_s = 60     # seconds after the start when those requests leave the window (their
                                # X-RateLimit-Reset); less than 60 stages a minute that is partly over
                                # (0-60)

    [catalog]                   # changes to the shipped catalog (for "what changed" runs)
    remove = ["vendor/model:free"]        # drop listed models (requests then answer 400 invalid id)
    add_free = ["vendor/new-model:free"]  # add a free model (profile from the seed)
    paid = ["vendor/model:free"]          # the free variant ended: the ':free' entry leaves the
                                          # catalog, the paid slug is listed with prices, and requests
                                          # to the ':free' id answer 404 free_variant_ended

    [catalog.expires]           # a listed model's expiration_date: a date ("2027-01-15"), or a whole
    "vendor/model:free" = 7     # number of days from the sandbox's today (UTC), so a scenario stays
                                # "expiring in a week" whenever it runs

    A scenario describes one state of the catalog. To show a catalog changing between two reads (two
    watches, or a run and a watch), give each read its own scenario file: the sandbox is started
    afresh for each, with the changes of the file it is given. An endpoints listing with no provider
    is staged with ``behavior = "no_endpoints"`` (the model stays listed, its listing is empty).

    [shared_pool."DigitalOcean"]  # a provider's shared pool of free capacity (key: the provider
                                  # name models answer with, see `provider`)
    max_concurrent = 1          # requests to this provider in flight at once; one more is refused
                                # with an upstream 429 (limit_source "upstream_provider_shared_pool",
                                # is_byok, remedy_hint)  (>= 1)
    clear_s = 120               # after a refusal the pool refuses every request to the provider for
                                # this long (seconds), serial or not; then it takes requests again

    [defaults]                  # applied to every free model before its own [models."id"] table;
                                # takes the same keys as a model table

    [models."meta-llama/llama-3.3-70b-instruct:free"]   # any listed model, or a catalog.paid id
    behavior = "ok"             # ok | wrong_answer | empty | reasoning_exhausted | reasoning_answer |
                                # no_endpoints | free_variant_ended | privacy | provider_restricted |
                                # app_restricted | capability | upstream_429 | capacity_429 |
                                # provider_502 | provider_503 | timeout_408 | credits_402 |
                                # moderation_403 | mid_stream_error | stall
    wording = "period_ended"    # which live wording an error behaviour uses (default: the newest):
                                # free_variant_ended: "unavailable_for_free" (mid 2026, default) |
                                # "period_ended" (early 2026) | "no_longer_free" (documented);
                                # privacy: "guardrail" (2026, default) | "guardrail_count" ("0
                                # endpoints out of 1 requested ...") | "data_policy_training" |
                                # "data_policy_publication" (2025)
    error_status = 400          # the HTTP status of the behaviour's error instead of its usual one
                                # (live traffic shows some 404 wordings at 400)  (400-599)
    error_chunk = "with_choice" # an error inside a 200 stream: "with_choice" (one choice with
                                # finish_reason "error", as documented) or "empty_choices" (choices: [],
                                # as one live report shows)
    ttft_ms = 300               # request -> first content token (after reasoning, if any); error
                                # behaviours answer at this time (timeout_408 at total_ms)
    reasoning_ms = 0            # reasoning deltas stream for this long before content
                                # (TTFT-any = ttft_ms - reasoning_ms); must be <= ttft_ms
    total_ms = 1200             # request -> last content token; must be >= ttft_ms
    keepalive_ms = 0            # ': OPENROUTER PROCESSING' comment at N, 2N, ... ms until the first
                                # data chunk (streams); "\n" at the same steps (non-streaming). The
                                # first keep-alive commits status 200: a later error arrives in-band
    retry_after_s = 2           # adds Retry-After to this model's 429/503 (and, with error_shape
                                # "documented", availability.retry_after)
    fail_first = 0              # behave as `behavior`/`fault` for the first N requests, then "ok"
    ok_first = 0                # answer "ok" for the first N requests, then as `behavior`/`fault`
                                # (a free variant that ends, or a storm that starts, mid-run); with
                                # fail_first too, requests N+1 .. fail_first fail and the rest are ok
    replay = "file.sse"         # answer with a recorded response: the body file verbatim, status and
                                # headers from the sibling <name>.meta.json if present (relative paths
                                # are resolved against the scenario file's folder). A list replays a
                                # sequence: the Nth request gets the Nth file, the last one repeats
                                # (e.g. a recorded 429, then a recorded success)
    fault = "none"              # none | connection_reset | never_answer | stall_after_tokens |
                                # truncated_json | huge_body | invalid_utf8 | storm_5xx | storm_429
    fault_after_tokens = 3      # content tokens sent before connection_reset (default 0: reset before
                                # any response byte) or stall_after_tokens (default 3) strikes
    huge_body_bytes = 8000000   # size of the huge_body answer (default 8 MB)
    answer = "42"               # fixed reply text instead of the computed answer
    reasoning_tokens = 120      # reasoning tokens the model spends (reasoning_ms > 0)
    cost = 0.0                  # usage.cost reported (a non-zero cost on a free model is a billing bug)
    usage_chunk = "empty_choices"   # final usage chunk (all three occur in recorded streams):
                                    # "empty_choices" (choices: []), "with_choice" (one choice, empty
                                    # delta, finish_reason null), "with_finish" (one choice repeating
                                    # the finish_reason, plus service_tier: null)
    provider = "Chutes"         # provider name in responses
    redirect = "http://127.0.0.1:9/x"   # answer 307 Temporary Redirect with this Location (a
                                        # misconfigured proxy; OpenRouter never redirects): tests
                                        # that a client never carries the key to another host

Precedence per model: seed profile, then ``[defaults]`` (free models only), then ``[models."id"]``. After
merging, ``total_ms`` is raised to ``ttft_ms`` and ``reasoning_ms`` is capped at ``ttft_ms`` when values
from different layers disagree; within one table such contradictions are errors. ``redirect`` wins over
``replay``, which wins over ``fault``, which wins over ``behavior``; ``fail_first`` and ``ok_first`` apply
to all four.

What the behaviours answer (stream or not; errors are the JSON envelope with that status):

- ``ok`` the right answer to suite prompts (filler text otherwise); ``wrong_answer`` a plausible wrong
  one; ``empty`` content ``""`` with ``finish_reason: "stop"`` and no reasoning at all;
  ``reasoning_exhausted`` reasoning until ``max_tokens`` is spent, then ``finish_reason: "length"`` with
  empty content; ``reasoning_answer`` the right answer in the reasoning channel only (a line of thinking,
  then the answer), ``finish_reason: "stop"``, content ``""`` in a stream and ``null`` in a JSON body;
  ``mid_stream_error`` half
  the answer, then a chunk with ``error`` (502) and ``finish_reason: "error"`` under status 200 (JSON: a
  ``choices[].error`` next to the partial content); ``stall`` starts the stream (role delta at ``ttft_ms``)
  and never sends a token, only keep-alives if ``keepalive_ms`` is set.
- ``no_endpoints`` 404 "No endpoints found for X."; ``free_variant_ended`` 404 in the live wording
  naming the paid slug; ``privacy`` 404 "No endpoints available matching your guardrail restrictions
  and data policy"; ``provider_restricted`` 404 "No allowed providers are available for the selected
  model." with ``metadata.available_providers``; ``app_restricted`` 403 "X is only available on
  agentic harnesses ..."; ``capability`` 404 "No endpoints found that support tool use" (or "...
  can handle the requested parameters"); ``upstream_429`` 429 "Provider returned error" with
  ``metadata.raw`` and ``provider_name``; ``capacity_429`` 429 "All providers ... are at capacity";
  ``provider_502`` 502; ``provider_503`` 503 "No instances available"; ``timeout_408`` 408 at
  ``total_ms``; ``credits_402`` 402; ``moderation_403`` 403 with ``metadata.reasons``. With
  ``error_shape = "documented"`` they add ``metadata.error_type`` and ``error.availability``
  (``no_endpoints``, ``free_variant_ended`` + ``fallback_models``, ``privacy_restricted``,
  ``privacy_restricted`` excluded by ``allowed_providers``, ``constraint_filtered``,
  ``capacity_exhausted``, ``temporarily_unavailable``).
- ``/api/v1/models/user`` lists the models the account may route: every listed model except those
  staged as ``privacy`` or ``provider_restricted``; ``/api/v1/models/{author}/{slug}/endpoints`` lists
  one endpoint per listed variant of the model, none for a variant staged as ``no_endpoints``.

What the faults do: ``connection_reset`` TCP RST (before any byte, or after ``fault_after_tokens`` content
deltas of a stream); ``never_answer`` accepts the request and sends nothing, ever; ``stall_after_tokens``
sends ``fault_after_tokens`` deltas (JSON: half the body) and then nothing; ``truncated_json`` cuts the JSON
body (or one SSE chunk) in half; ``huge_body`` streams ``huge_body_bytes`` of content; ``invalid_utf8``
puts bytes ``FF FE FD`` into the content; ``storm_5xx`` answers 500, 502, 503, 504 in turn and
``storm_429`` an upstream 429, both with no Retry-After or reset hint at all. Connections held open end
when the client leaves or the server stops (then with a reset).

A replayed recording keeps its bytes: SSE comments are spread over ``[0, ttft_ms)``, data events over
``[ttft_ms, total_ms]``; a JSON body is sent at ``total_ms`` (``ttft_ms`` if its status is an error).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from freemodels.errors import ScenarioError

__all__ = [
    "WORDINGS",
    "Behavior",
    "CatalogChanges",
    "ErrorChunk",
    "ErrorShape",
    "Fault",
    "Limits",
    "ModelSpec",
    "Scenario",
    "ScenarioError",
    "SharedPool",
    "UsageChunk",
    "Wording",
    "load_scenario",
]


class Behavior(StrEnum):
    """How a model answers (before faults)."""

    OK = "ok"
    WRONG_ANSWER = "wrong_answer"
    EMPTY = "empty"
    REASONING_EXHAUSTED = "reasoning_exhausted"
    REASONING_ANSWER = "reasoning_answer"
    NO_ENDPOINTS = "no_endpoints"
    FREE_VARIANT_ENDED = "free_variant_ended"
    PRIVACY = "privacy"
    PROVIDER_RESTRICTED = "provider_restricted"
    APP_RESTRICTED = "app_restricted"
    CAPABILITY = "capability"
    UPSTREAM_429 = "upstream_429"
    CAPACITY_429 = "capacity_429"
    PROVIDER_502 = "provider_502"
    PROVIDER_503 = "provider_503"
    TIMEOUT_408 = "timeout_408"
    CREDITS_402 = "credits_402"
    MODERATION_403 = "moderation_403"
    MID_STREAM_ERROR = "mid_stream_error"
    STALL = "stall"


class Fault(StrEnum):
    """Transport-level misbehaviour; takes precedence over the behaviour while it applies."""

    NONE = "none"
    CONNECTION_RESET = "connection_reset"
    NEVER_ANSWER = "never_answer"
    STALL_AFTER_TOKENS = "stall_after_tokens"
    TRUNCATED_JSON = "truncated_json"
    HUGE_BODY = "huge_body"
    INVALID_UTF8 = "invalid_utf8"
    STORM_5XX = "storm_5xx"
    STORM_429 = "storm_429"


class ErrorShape(StrEnum):
    """What the sandbox's error bodies carry."""

    LIVE = "live"  # message, code, user_id, and metadata only where live bodies have it
    DOCUMENTED = "documented"  # plus metadata.error_type and error.availability


class Wording(StrEnum):
    """Live wordings of an error behaviour's message."""

    UNAVAILABLE_FOR_FREE = "unavailable_for_free"
    PERIOD_ENDED = "period_ended"
    NO_LONGER_FREE = "no_longer_free"
    GUARDRAIL = "guardrail"
    GUARDRAIL_COUNT = "guardrail_count"
    DATA_POLICY_TRAINING = "data_policy_training"
    DATA_POLICY_PUBLICATION = "data_policy_publication"


WORDINGS: dict[Behavior, tuple[Wording, ...]] = {
    Behavior.FREE_VARIANT_ENDED: (Wording.UNAVAILABLE_FOR_FREE, Wording.PERIOD_ENDED, Wording.NO_LONGER_FREE),
    Behavior.PRIVACY: (
        Wording.GUARDRAIL,
        Wording.GUARDRAIL_COUNT,
        Wording.DATA_POLICY_TRAINING,
        Wording.DATA_POLICY_PUBLICATION,
    ),
}
"""The wordings each behaviour knows, its default first."""


class ErrorChunk(StrEnum):
    """Shape of an error chunk inside a 200 stream."""

    WITH_CHOICE = "with_choice"
    EMPTY_CHOICES = "empty_choices"


class UsageChunk(StrEnum):
    """Shape of the final usage chunk of a stream (both occur in real traffic)."""

    EMPTY_CHOICES = "empty_choices"
    WITH_CHOICE = "with_choice"
    WITH_FINISH = "with_finish"


DEFAULT_REQUESTS_PER_MINUTE = 600
DEFAULT_REQUESTS_PER_DAY = 1000


@dataclass(frozen=True, slots=True)
class Limits:
    """Account limits; generous defaults keep a default run quick (OpenRouter: 20/min, 50 or 1000/day)."""

    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    requests_per_day: int = DEFAULT_REQUESTS_PER_DAY
    requests_used_today: int = 0
    api_key: str | None = field(default=None, repr=False)
    retry_after_s: float | None = None
    count_rejected: bool = True
    requests_this_minute: int = 0
    minute_clears_in_s: float = 60.0


@dataclass(frozen=True, slots=True)
class CatalogChanges:
    """Edits to the shipped catalog."""

    remove: tuple[str, ...] = ()
    add_free: tuple[str, ...] = ()
    paid: tuple[str, ...] = ()
    expires: Mapping[str, str | int] = field(default_factory=dict)
    """model id -> an ISO date, or days from the sandbox's today."""


@dataclass(frozen=True, slots=True)
class SharedPool:
    """A provider's shared pool of free capacity: refuses concurrency, then stays refused a while."""

    max_concurrent: int = 1
    clear_s: float = 120.0


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model table (or ``[defaults]``); None means "not set here"."""

    behavior: Behavior | None = None
    ttft_ms: int | None = None
    reasoning_ms: int | None = None
    total_ms: int | None = None
    keepalive_ms: int | None = None
    retry_after_s: float | None = None
    fail_first: int | None = None
    ok_first: int | None = None
    replay: tuple[Path, ...] | None = None
    fault: Fault | None = None
    fault_after_tokens: int | None = None
    huge_body_bytes: int | None = None
    answer: str | None = None
    reasoning_tokens: int | None = None
    cost: float | None = None
    usage_chunk: UsageChunk | None = None
    provider: str | None = None
    redirect: str | None = None
    wording: Wording | None = None
    error_status: int | None = None
    error_chunk: ErrorChunk | None = None

    def set_values(self) -> dict[str, Any]:
        """The keys this table sets, with their values."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed, validated scenario. Build with :meth:`from_mapping` or :func:`load_scenario`."""

    seed: int | None = None
    error_shape: ErrorShape = ErrorShape.LIVE
    limits: Limits = field(default_factory=Limits)
    catalog: CatalogChanges = field(default_factory=CatalogChanges)
    shared_pool: Mapping[str, SharedPool] = field(default_factory=dict)
    defaults: ModelSpec = field(default_factory=ModelSpec)
    models: Mapping[str, ModelSpec] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> Scenario:
        """Validate a decoded scenario (TOML or JSON structure); relative replay paths use ``base_dir``."""
        return _parse(data, base_dir if base_dir is not None else Path.cwd())

    def replay_files(self) -> list[Path]:
        """Every file the scenario's models replay (a deployment run checks each one it may read)."""
        specs = [self.defaults, *self.models.values()]
        return [path for spec in specs for path in (spec.replay or ())]


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file (``.json`` is JSON, anything else TOML) and validate it."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {source}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"scenario file {source} is not UTF-8 text") from None
    try:
        data = json.loads(text) if source.suffix.lower() == ".json" else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"scenario file {source} is not valid JSON: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario file {source} is not valid TOML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ScenarioError(f"scenario file {source} must hold a table/object at the top level")
    try:
        return _parse(data, source.resolve().parent)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# validation

_E = TypeVar("_E", bound=StrEnum)

_ROOT_KEYS = {"seed", "error_shape", "limits", "catalog", "shared_pool", "defaults", "models"}


def _parse(data: Mapping[str, Any], base_dir: Path) -> Scenario:
    _no_unknown(data, _ROOT_KEYS, "")
    seed = _int(data, "seed", "seed", minimum=0)
    shape = _enum(data, "error_shape", "error_shape", ErrorShape) or ErrorShape.LIVE
    limits = _parse_limits(_table(data, "limits", "limits"))
    catalog = _parse_catalog(_table(data, "catalog", "catalog"))
    pools: dict[str, SharedPool] = {}
    for provider, table in _table(data, "shared_pool", "shared_pool").items():
        where = f'shared_pool."{provider}"'
        if not isinstance(provider, str) or not provider.strip():
            raise ScenarioError("shared_pool: provider names must be non-empty strings")
        if not isinstance(table, Mapping):
            raise ScenarioError(f"{where} must be a table")
        _no_unknown(table, {"max_concurrent", "clear_s"}, where)
        most = _int(table, "max_concurrent", f"{where}.max_concurrent", minimum=1)
        clear = _number(table, "clear_s", f"{where}.clear_s")
        base = SharedPool()
        pools[provider] = SharedPool(
            max_concurrent=base.max_concurrent if most is None else most,
            clear_s=base.clear_s if clear is None else clear,
        )
    defaults = _parse_model(_table(data, "defaults", "defaults"), "defaults", base_dir)
    models_table = _table(data, "models", "models")
    models: dict[str, ModelSpec] = {}
    for model_id, table in models_table.items():
        where = f'models."{model_id}"'
        if not isinstance(model_id, str) or not model_id.strip():
            raise ScenarioError("models: model ids must be non-empty strings")
        if not isinstance(table, Mapping):
            raise ScenarioError(f"{where} must be a table")
        models[model_id] = _parse_model(table, where, base_dir)
    return Scenario(
        seed=seed,
        error_shape=shape,
        limits=limits,
        catalog=catalog,
        shared_pool=pools,
        defaults=defaults,
        models=models,
    )


def _parse_limits(table: Mapping[str, Any]) -> Limits:
    allowed = {f.name for f in fields(Limits)}
    _no_unknown(table, allowed, "limits")
    base = Limits()
    api_key = table.get("api_key")
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ScenarioError("limits.api_key must be a non-empty string")
    count_rejected = table.get("count_rejected", base.count_rejected)
    if not isinstance(count_rejected, bool):
        raise ScenarioError("limits.count_rejected must be true or false")
    rpm = _int(table, "requests_per_minute", "limits.requests_per_minute", minimum=1)
    rpd = _int(table, "requests_per_day", "limits.requests_per_day", minimum=0)
    used = _int(table, "requests_used_today", "limits.requests_used_today", minimum=0)
    this_minute = _int(table, "requests_this_minute", "limits.requests_this_minute", minimum=0)
    clears = _number(table, "minute_clears_in_s", "limits.minute_clears_in_s")
    if clears is not None and clears > 60:
        raise ScenarioError(f"limits.minute_clears_in_s must be at most 60, not {clears:g}")
    return Limits(
        requests_per_minute=base.requests_per_minute if rpm is None else rpm,
        requests_per_day=base.requests_per_day if rpd is None else rpd,
        requests_used_today=base.requests_used_today if used is None else used,
        api_key=api_key.strip() if isinstance(api_key, str) else None,
        retry_after_s=_number(table, "retry_after_s", "limits.retry_after_s"),
        count_rejected=count_rejected,
        requests_this_minute=base.requests_this_minute if this_minute is None else this_minute,
        minute_clears_in_s=base.minute_clears_in_s if clears is None else clears,
    )


def _parse_catalog(table: Mapping[str, Any]) -> CatalogChanges:
    _no_unknown(table, {"remove", "add_free", "paid", "expires"}, "catalog")
    lists = {name: _str_list(table, name, f"catalog.{name}") for name in ("remove", "add_free", "paid")}
    for model_id in lists["paid"]:
        if not model_id.endswith(":free"):
            raise ScenarioError(f"catalog.paid: {model_id!r} is not a ':free' id")
    expires: dict[str, str | int] = {}
    for model_id, value in _table(table, "expires", "catalog.expires").items():
        where = f'catalog.expires."{model_id}"'
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ScenarioError(f"{where} must be a date (YYYY-MM-DD) or a whole number of days")
        if isinstance(value, str):
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ScenarioError(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from None
        expires[str(model_id)] = value
    return CatalogChanges(**lists, expires=expires)


_MODEL_KEYS = {f.name for f in fields(ModelSpec)}


def _parse_model(table: Mapping[str, Any], where: str, base_dir: Path) -> ModelSpec:
    _no_unknown(table, _MODEL_KEYS, where)
    values: dict[str, Any] = {}
    for name in ("ttft_ms", "reasoning_ms", "total_ms", "keepalive_ms", "fail_first", "ok_first"):
        values[name] = _int(table, name, f"{where}.{name}", minimum=0)
    values["fault_after_tokens"] = _int(table, "fault_after_tokens", f"{where}.fault_after_tokens", minimum=0)
    values["huge_body_bytes"] = _int(table, "huge_body_bytes", f"{where}.huge_body_bytes", minimum=1)
    values["reasoning_tokens"] = _int(table, "reasoning_tokens", f"{where}.reasoning_tokens", minimum=0)
    values["retry_after_s"] = _number(table, "retry_after_s", f"{where}.retry_after_s")
    values["cost"] = _number(table, "cost", f"{where}.cost")
    values["behavior"] = _enum(table, "behavior", f"{where}.behavior", Behavior)
    values["fault"] = _enum(table, "fault", f"{where}.fault", Fault)
    values["usage_chunk"] = _enum(table, "usage_chunk", f"{where}.usage_chunk", UsageChunk)
    values["wording"] = _enum(table, "wording", f"{where}.wording", Wording)
    values["error_chunk"] = _enum(table, "error_chunk", f"{where}.error_chunk", ErrorChunk)
    status = _int(table, "error_status", f"{where}.error_status", minimum=400)
    if status is not None and status > 599:
        raise ScenarioError(f"{where}.error_status must be at most 599, not {status}")
    values["error_status"] = status
    for name in ("answer", "provider"):
        value = table.get(name)
        if value is not None and not isinstance(value, str):
            raise ScenarioError(f"{where}.{name} must be a string")
        values[name] = value
    redirect = table.get("redirect")
    if redirect is not None and (
        not isinstance(redirect, str) or not redirect.startswith(("http://", "https://"))
    ):
        raise ScenarioError(f"{where}.redirect must be an http(s) URL, not {redirect!r}")
    values["redirect"] = redirect
    replay = table.get("replay")
    if replay is not None:
        files = replay if isinstance(replay, list) else [replay]
        if not files or not all(isinstance(f, str) and f.strip() for f in files):
            raise ScenarioError(f"{where}.replay must be a file path or a non-empty list of file paths")
        paths = []
        for name in files:
            path = Path(name).expanduser()
            if not path.is_absolute():
                path = base_dir / path
            if not path.is_file():
                raise ScenarioError(f"{where}.replay: file not found: {path}")
            paths.append(path)
        values["replay"] = tuple(paths)
    spec = ModelSpec(**values)
    if (
        spec.wording is not None
        and spec.behavior is not None
        and spec.wording not in WORDINGS.get(spec.behavior, ())
    ):
        known = " | ".join(w.value for w in WORDINGS.get(spec.behavior, ())) or "none"
        raise ScenarioError(
            f"{where}.wording: {spec.wording.value!r} is not a wording of {spec.behavior.value} "
            f"(known: {known})"
        )
    if spec.ttft_ms is not None and spec.total_ms is not None and spec.total_ms < spec.ttft_ms:
        raise ScenarioError(
            f"{where}: total_ms ({spec.total_ms}) must not be less than ttft_ms ({spec.ttft_ms})"
        )
    if spec.ttft_ms is not None and spec.reasoning_ms is not None and spec.reasoning_ms > spec.ttft_ms:
        raise ScenarioError(
            f"{where}: reasoning_ms ({spec.reasoning_ms}) must not exceed ttft_ms ({spec.ttft_ms})"
        )
    return spec


def _no_unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            name = f"{where}.{key}" if where else str(key)
            known = ", ".join(sorted(allowed))
            raise ScenarioError(f"unknown key {name!r} (known keys here: {known})")


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ScenarioError(f"{where} must be a table")
    return value


def _int(table: Mapping[str, Any], key: str, where: str, *, minimum: int) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where} must be a whole number, not {value!r}")
    if value < minimum:
        raise ScenarioError(f"{where} must be at least {minimum}, not {value}")
    return value


def _number(table: Mapping[str, Any], key: str, where: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where} must be a number, not {value!r}")
    if value < 0:
        raise ScenarioError(f"{where} must not be negative, not {value}")
    return float(value)


def _enum(table: Mapping[str, Any], key: str, where: str, kind: type[_E]) -> _E | None:
    value = table.get(key)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        choices = " | ".join(member.value for member in kind)
        raise ScenarioError(f"{where}: {value!r} is not one of {choices}") from None


def _str_list(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ScenarioError(f"{where} must be a list of model ids")
    return tuple(v.strip() for v in value)

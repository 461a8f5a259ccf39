"""Sources: where a run's catalog and probes go, and everything that differs between them.

Each kind of source has one frozen :class:`SourceProfile` in :data:`PROFILES`. It holds every
difference the rest of the code needs: how reports name the source and whether its numbers are
simulated, which environment variable holds its key, the default per-minute and per-day limits, whether
``GET key`` reports the daily quota, how its retry hints are read, whether the cost guard applies,
whether its catalog carries prices, and how LiteLLM reaches it. Code asks the profile; no other module
compares source names. A new source (another aggregator, a local server kind) is one profile here plus
its tests.

A :class:`Source` is a profile resolved for one run: the base URL, the key (a ``SecretStr``, never in a
``repr``), the limits in force and the identity a resumed run must match. A base URL with credentials
(``http://user:pw@host/v1``) is shown, stored and compared with them masked
(:func:`~freemodels.secrets.safe_url`); only the HTTP client is given the URL as it was typed.
:func:`open_source` yields one and, for the sandbox, serves it on loopback for the duration of the
block.

Choosing the kind (:func:`choose_kind`): ``--base-url`` (or a URL as the source) means the base-URL
source; ``sandbox`` and ``openrouter`` are taken as given; ``auto`` means OpenRouter when
``OPENROUTER_API_KEY`` is set and the sandbox otherwise. A machine without network never falls back
to the sandbox on its own: simulated numbers must never be mistaken for real ones.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import httpx
import polars as pl
from pydantic import SecretStr

from freemodels.client import KeyInfo, build_http_client
from freemodels.errors import ConfigError
from freemodels.scheduler import RateLimiter
from freemodels.secrets import real_url, safe_url
from freemodels.settings import Settings, read_env_secret


class SourceKind(StrEnum):
    """The kinds of source; their values are what the ``runs`` table stores."""

    SANDBOX = "sandbox"
    OPENROUTER = "openrouter"
    BASE_URL = "base_url"


@dataclass(frozen=True, slots=True)
class SourceProfile:
    """What differs between sources. One instance per :class:`SourceKind` (see :data:`PROFILES`)."""

    kind: SourceKind
    label: str
    """How reports name the source (Markdown-safe text)."""
    run_label: str
    """The source in Prefect run names and tags (``2026-12-01-openrouter``, ``source:base-url``)."""
    server_name: str
    """Who answered, for headings such as "OpenRouter's message" or "the server's message"."""
    simulated: bool
    """Its numbers are simulated, not measurements: reports and exports carry a warning."""
    key_env: str | None
    """The environment variable that holds the key by default (None: no key unless one is named)."""
    key_required: bool
    """A run cannot start without a key."""
    requests_per_minute: int | None
    """Default pacing (None: the server states its own limit, as the sandbox does)."""
    requests_per_day: int | None
    """Daily budget when ``GET key`` does not tell one (None: unlimited)."""
    reads_quota: bool
    """``GET key`` reports the free daily quota (``free_model_daily_requests``)."""
    reset_header_epoch_ms: bool
    """Retry hints: ``X-RateLimit-Reset`` is OpenRouter's epoch milliseconds. Elsewhere its unit is
    unknown, so only ``Retry-After`` and the error body's own hints are honoured."""
    cost_guard: bool
    """Probes carry ``provider.max_price`` zero and a non-zero ``usage.cost`` is flagged."""
    lists_prices: bool
    """The catalog carries OpenRouter's prices; without them every model the server lists counts as
    free."""
    notes_missing_extras: bool
    """Reports say what the server did not provide of OpenRouter's extras (prices, ``GET key``, usage
    in streams, timings of its own)."""
    lists_endpoints: bool
    """``GET models/{author}/{slug}/endpoints`` lists each model's providers with their uptime and
    latency (OpenRouter's free signals, no chat quota). Without it, the listings are not asked for."""
    lists_user_models: bool
    """``GET models/user`` lists the models the key may route under the account's settings (read only
    when the source has a key)."""
    one_request_at_a_time: bool
    """Probe one request at a time unless ``DISCOVERY_MAX_CONCURRENCY`` says otherwise (a self-hosted
    server queues concurrent requests, so TTFT would include queueing)."""
    litellm_prefix: str
    """LiteLLM's provider prefix for the model ids of this source."""
    litellm_key_ref: str
    """How the LiteLLM configuration refers to the key (never the key itself)."""
    litellm_sets_api_base: bool
    """The LiteLLM configuration names the server's base URL."""
    chosen_by_name: bool = True
    """``--source <kind>`` picks it (the base-URL source is picked by giving a URL instead)."""
    base_url_setting: str | None = None
    """The setting that holds its API root (None: the URL given as the source, or served locally)."""
    openrouter_routing: bool = True
    """It understands OpenRouter's ``models`` fallback array and serves ``openrouter/free`` (the drill
    sends both only where it does)."""

    def litellm_model(self, model_id: str) -> str:
        """The model name LiteLLM routes for ``model_id`` on this source."""
        return f"{self.litellm_prefix}{model_id}"


SANDBOX_PLACEHOLDER_KEY = "sk-or-sandbox-local"
"""Sent to the sandbox when no key is set: it expects a bearer key as OpenRouter does."""

PROFILES: dict[SourceKind, SourceProfile] = {
    SourceKind.OPENROUTER: SourceProfile(
        kind=SourceKind.OPENROUTER,
        label="OpenRouter",
        run_label="openrouter",
        server_name="OpenRouter",
        simulated=False,
        key_env="OPENROUTER_API_KEY",
        key_required=True,
        requests_per_minute=20,  # free tier, per account
        requests_per_day=50,  # free tier without credits; GET key tells the real figure
        reads_quota=True,
        reset_header_epoch_ms=True,
        cost_guard=True,
        lists_prices=True,
        notes_missing_extras=False,
        lists_endpoints=True,
        lists_user_models=True,
        one_request_at_a_time=False,
        litellm_prefix="openrouter/",
        litellm_key_ref="os.environ/OPENROUTER_API_KEY",
        litellm_sets_api_base=False,
        base_url_setting="openrouter_base_url",
    ),
    SourceKind.SANDBOX: SourceProfile(
        kind=SourceKind.SANDBOX,
        label="the built-in sandbox (simulated OpenRouter)",
        run_label="sandbox",
        server_name="the sandbox",
        simulated=True,
        key_env=None,
        key_required=False,
        requests_per_minute=None,
        requests_per_day=None,
        reads_quota=True,
        reset_header_epoch_ms=True,
        cost_guard=False,
        lists_prices=True,
        notes_missing_extras=False,
        lists_endpoints=True,
        lists_user_models=True,
        one_request_at_a_time=False,
        litellm_prefix="openrouter/",
        litellm_key_ref="os.environ/OPENROUTER_API_KEY",
        litellm_sets_api_base=False,
    ),
    SourceKind.BASE_URL: SourceProfile(
        kind=SourceKind.BASE_URL,
        label="an OpenAI-compatible server (not OpenRouter)",
        run_label="base-url",
        server_name="the server",
        simulated=False,
        key_env=None,
        key_required=False,
        requests_per_minute=600,
        requests_per_day=None,
        reads_quota=False,
        reset_header_epoch_ms=False,
        cost_guard=False,
        lists_prices=False,
        notes_missing_extras=True,
        lists_endpoints=False,
        lists_user_models=False,
        one_request_at_a_time=True,
        litellm_prefix="openai/",
        litellm_key_ref="os.environ/OPENAI_API_KEY",
        litellm_sets_api_base=True,
        chosen_by_name=False,
        openrouter_routing=False,
    ),
}

NAMED_SOURCES: tuple[str, ...] = tuple(k.value for k, p in PROFILES.items() if p.chosen_by_name)
"""The values ``--source`` (and ``DISCOVERY_SOURCE``) take besides ``auto`` and a base URL."""


def profile_of(kind: str | SourceKind | None) -> SourceProfile | None:
    """The profile of a stored source name, or None for a name this program does not know."""
    try:
        return PROFILES[SourceKind(kind)] if kind is not None else None
    except ValueError:
        return None


def choose_kind(source: str, *, key_present: bool) -> SourceKind:
    """The kind a ``source`` setting (``auto``, ``sandbox``, ``openrouter`` or a base URL) means."""
    if source == "auto":
        return SourceKind.OPENROUTER if key_present else SourceKind.SANDBOX
    if source in NAMED_SOURCES:
        return SourceKind(source)
    return SourceKind.BASE_URL


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (a sandbox scenario), so a resumed run can tell it is unchanged."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True)
class SourceIdentity:
    """What a resumed run must find unchanged: the same kind, server and (sandbox) staging."""

    kind: SourceKind
    base_url: str | None  # None for the sandbox: it listens on a new port every time
    scenario_digest: str | None = None
    seed: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "base_url": self.base_url,
            "scenario_digest": self.scenario_digest,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: object) -> SourceIdentity | None:
        """The identity stored with a run (None when absent or unreadable)."""
        if not isinstance(data, dict):
            return None
        try:
            kind = SourceKind(str(data.get("kind")))
        except ValueError:
            return None
        base_url = data.get("base_url")
        digest = data.get("scenario_digest")
        seed = data.get("seed")
        return cls(
            kind=kind,
            base_url=base_url if isinstance(base_url, str) else None,
            scenario_digest=digest if isinstance(digest, str) else None,
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        )

    def mismatch(self, now: SourceIdentity) -> str | None:
        """Why ``now`` is not this source (one phrase), or None when it is the same."""
        if now.kind is not self.kind:
            then, later = PROFILES[self.kind].run_label, PROFILES[now.kind].run_label
            return f"it ran against {then}, this would use {later}"
        if self.base_url != now.base_url:
            return f"it ran against {self.base_url}, this would use {now.base_url}"
        if self.scenario_digest != now.scenario_digest:
            return "its sandbox scenario file changed since (or is gone)"
        if self.seed != now.seed:
            return f"it used sandbox seed {self.seed}, this would use {now.seed}"
        return None


@dataclass(frozen=True, slots=True)
class Source:
    """A source resolved for one run: profile, base URL, key and the limits in force.

    ``base_url`` is the URL as shown and stored (credentials masked); the client is built on the URL
    as given."""

    profile: SourceProfile
    base_url: str
    requests_per_minute: int
    max_concurrency: int
    identity: SourceIdentity
    api_key: SecretStr | None = field(default=None, repr=False)
    counters: Callable[[], Mapping[str, object]] | None = field(default=None, repr=False, compare=False)
    """What a simulated source counted itself (the sandbox's ``/_sandbox/stats``: chat requests and
    every request); None for a real one."""

    @property
    def kind(self) -> SourceKind:
        return self.profile.kind

    def client(self, settings: Settings) -> httpx.AsyncClient:
        """The run's shared HTTP client for this source (the key goes to its origin only)."""
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        return build_http_client(settings, base_url=real_url(self.base_url), api_key=key)

    def daily_budget(self, budget: int | None, settings: Settings, quota: KeyInfo | None) -> int | None:
        """Requests this run may send: ``budget``, else the setting, else the quota the server
        reports, else the profile's default (None: unlimited)."""
        if budget is not None:
            return budget
        if settings.requests_per_day is not None:
            return settings.requests_per_day
        if quota is not None and quota.daily_remaining is not None:
            return quota.daily_remaining
        return self.profile.requests_per_day

    def rate_limiter(self, budget: int | None) -> RateLimiter:
        return RateLimiter(self.requests_per_minute, budget)

    @property
    def reads_user_models(self) -> bool:
        """``GET models/user`` is read: the source has it and the run has a key to ask with."""
        return self.profile.lists_user_models and self.api_key is not None


def source_notes(
    profile: SourceProfile,
    *,
    unpriced: bool,
    quota: KeyInfo | None,
    budget: int | None,
    probes: pl.DataFrame,
) -> list[str]:
    """What the reports must say about how far this run's source could be measured."""
    notes: list[str] = []
    if unpriced:
        notes.append("The server lists no prices: every model it serves counts as free.")
    if quota is None and not profile.simulated:
        if profile.reads_quota:
            limit = "no budget applied" if budget is None else f"a budget of {budget} requests applied"
            notes.append(f"GET /key did not report the daily quota: {limit}.")
        else:
            notes.append("The server has no /key endpoint: the daily quota is unknown, no budget applies.")
    if profile.notes_missing_extras and not probes.is_empty():
        if probes.get_column("completion_tokens").is_null().all():
            notes.append("The server reports no token usage in its streams: token counts are unknown.")
        if probes.get_column("server_ttft_ms").is_null().all():
            notes.append(
                "The server reports no timings of its own: only the timings measured here are shown."
            )
    return notes


def required_key_missing(profile: SourceProfile, settings: Settings, api_key_env: str | None) -> str | None:
    """The one-line reason a run of ``profile`` cannot start for want of a key, or None."""
    if api_key_env and read_env_secret(api_key_env) is None:
        return f"--api-key-env names {api_key_env}, but that variable is not set"
    if profile.key_required and settings.resolved_api_key() is None:
        return f"source '{profile.run_label}' needs {profile.key_env}; it is not set"
    return None


def resolve_identity(settings: Settings, *, kind: SourceKind) -> SourceIdentity:
    """The identity of the source ``settings`` point at (before the sandbox is started)."""
    if kind is SourceKind.SANDBOX:
        scenario = settings.sandbox_scenario
        return SourceIdentity(
            kind=kind,
            base_url=None,
            scenario_digest=file_digest(Path(scenario)) if scenario else None,
            seed=settings.sandbox_seed,
        )
    setting = PROFILES[kind].base_url_setting
    root = str(getattr(settings, setting)) if setting else settings.source
    return SourceIdentity(kind=kind, base_url=safe_url(root.rstrip("/")))


def source_key(profile: SourceProfile, settings: Settings, api_key_env: str | None) -> SecretStr | None:
    """The key requests to a source of ``profile`` carry (the sandbox's placeholder when none is set)."""
    return _key(profile, settings, api_key_env)


def _key(profile: SourceProfile, settings: Settings, api_key_env: str | None) -> SecretStr | None:
    if api_key_env:
        value = read_env_secret(api_key_env)
    elif profile.key_env is not None or profile.kind is SourceKind.SANDBOX:
        value = settings.resolved_api_key()
    else:
        value = None
    if value is None and profile.kind is SourceKind.SANDBOX:
        value = SANDBOX_PLACEHOLDER_KEY
    return SecretStr(value) if value else None


def _concurrency(profile: SourceProfile, settings: Settings) -> int:
    if profile.one_request_at_a_time and "max_concurrency" not in settings.model_fields_set:
        return 1
    return settings.max_concurrency


@contextlib.contextmanager
def open_source(
    settings: Settings, *, kind: SourceKind, api_key_env: str | None = None, need_key: bool = True
) -> Iterator[Source]:
    """Yield the resolved source; a sandbox is served on 127.0.0.1 for the duration of the block.

    ``need_key=False``: only what needs no key will be asked (the catalog and the endpoints listings),
    so a source that requires a key for chat requests opens without one."""
    profile = PROFILES[kind]
    missing = required_key_missing(profile, settings, api_key_env)
    if missing is not None and (need_key or api_key_env):
        raise ConfigError(missing)
    identity = resolve_identity(settings, kind=kind)
    key = _key(profile, settings, api_key_env)
    concurrency = _concurrency(profile, settings)
    if kind is SourceKind.SANDBOX:
        from freemodels.sandbox.scenario import load_scenario
        from freemodels.sandbox.server import SandboxServer

        scenario = load_scenario(settings.sandbox_scenario) if settings.sandbox_scenario else None
        with SandboxServer(scenario, seed=settings.sandbox_seed) as server:
            yield Source(
                profile=profile,
                base_url=server.base_url,
                requests_per_minute=settings.requests_per_minute or server.requests_per_minute,
                max_concurrency=concurrency,
                identity=identity,
                api_key=key,
                counters=server.stats,
            )
        return
    base_url = identity.base_url or ""
    default_rpm = profile.requests_per_minute or 600
    yield Source(
        profile=profile,
        base_url=base_url,
        requests_per_minute=settings.requests_per_minute or default_rpm,
        max_concurrency=concurrency,
        identity=identity,
        api_key=key,
    )

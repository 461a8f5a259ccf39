"""Resolve where a run's catalog and probes go: the sandbox, OpenRouter, or any base URL.

The flow owns what this opens: the sandbox server (started on 127.0.0.1 with a free port for the run's
duration) and the settings of the shared HTTP client and rate limiter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from freemodels.client import KeyInfo, build_http_client
from freemodels.errors import ConfigError
from freemodels.scheduler import RateLimiter
from freemodels.settings import Settings, SourceKind, read_env_secret

# The sandbox needs a bearer key like OpenRouter; without a user key this local placeholder is sent.
SANDBOX_PLACEHOLDER_KEY = "sk-or-sandbox-local"
OPENROUTER_FREE_RPM = 20
OPENROUTER_DEFAULT_DAILY = 50  # free tier without credits; /api/v1/key tells the real figure
BASE_URL_DEFAULT_RPM = 600


@dataclass(slots=True)
class ResolvedSource:
    """A source ready to use: its kind, base URL, key, limits and notes for the reports."""

    kind: str
    base_url: str
    settings: Settings
    api_key: str | None
    requests_per_minute: int
    default_daily: int | None
    max_concurrency: int
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Record something the reports must say about this source (once)."""
        if text not in self.notes:
            self.notes.append(text)

    def client(self) -> httpx.AsyncClient:
        return build_http_client(self.settings, base_url=self.base_url, api_key=self.api_key)

    def daily_budget(self, budget: int | None, quota: KeyInfo | None) -> int | None:
        """Requests this run may send: --budget, else the setting, else the key's remaining quota."""
        if budget is not None:
            return budget
        if self.settings.requests_per_day is not None:
            return self.settings.requests_per_day
        if quota is not None and quota.daily_remaining is not None:
            return quota.daily_remaining
        return self.default_daily

    def rate_limiter(self, budget: int | None) -> RateLimiter:
        return RateLimiter(self.requests_per_minute, budget)


@contextlib.contextmanager
def open_source(settings: Settings, *, api_key_env: str | None = None) -> Iterator[ResolvedSource]:
    """Yield the resolved source; a sandbox is served for the duration of the block."""
    kind = settings.source_kind()
    if kind is SourceKind.SANDBOX:
        from freemodels.sandbox.scenario import load_scenario
        from freemodels.sandbox.server import SandboxServer

        scenario = load_scenario(settings.sandbox_scenario) if settings.sandbox_scenario else None
        with SandboxServer(scenario, seed=settings.sandbox_seed) as server:
            yield ResolvedSource(
                kind="sandbox",
                base_url=server.base_url,
                settings=settings,
                api_key=settings.resolved_api_key() or SANDBOX_PLACEHOLDER_KEY,
                requests_per_minute=settings.requests_per_minute or server.requests_per_minute,
                default_daily=None,
                max_concurrency=settings.max_concurrency,
            )
        return
    if kind is SourceKind.OPENROUTER:
        key = settings.resolved_api_key()
        if key is None:
            raise ConfigError("source 'openrouter' needs OPENROUTER_API_KEY; unset it to use the sandbox")
        yield ResolvedSource(
            kind="openrouter",
            base_url=settings.openrouter_base_url,
            settings=settings,
            api_key=key,
            requests_per_minute=settings.requests_per_minute or OPENROUTER_FREE_RPM,
            default_daily=OPENROUTER_DEFAULT_DAILY,
            max_concurrency=settings.max_concurrency,
        )
        return
    key = read_env_secret(api_key_env) if api_key_env else None
    if api_key_env and key is None:
        raise ConfigError(f"--api-key-env names {api_key_env}, but that variable is not set")
    yield ResolvedSource(
        kind="base_url",
        base_url=settings.source,
        settings=settings,
        api_key=key,
        requests_per_minute=settings.requests_per_minute or BASE_URL_DEFAULT_RPM,
        default_daily=None,
        # A self-hosted server often answers one request at a time: concurrent probes would measure
        # queueing, not the model. One at a time unless DISCOVERY_MAX_CONCURRENCY says otherwise.
        max_concurrency=(settings.max_concurrency if "max_concurrency" in settings.model_fields_set else 1),
    )

"""One settings class for the whole project.

Values come from, in this order (first wins): explicit keyword arguments (the CLI passes its flags this
way), environment variables with the ``DISCOVERY_`` prefix, a ``.env`` file in the working directory, and the
defaults below. The OpenRouter key is read from ``OPENROUTER_API_KEY`` (or ``DISCOVERY_API_KEY``); it is a
:class:`~pydantic.SecretStr` and is resolved in exactly one place, :meth:`Settings.resolved_api_key`.

No other module reads ``os.environ``. Every secret read here is registered with the redaction point
(:func:`freemodels.secrets.register_secret`) at the moment it is read.

The settings under "deployment runs" are the trust boundary of the ``discovery/monthly`` deployment:
anyone who can reach the Prefect API can start a run with any parameters, so such a run may name only
the key variables, base URLs and files these settings allow (see :mod:`flows.prepare`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from freemodels.errors import ConfigError
from freemodels.secrets import register_secret

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
OPENROUTER_MODELS_LIMIT = 3
"""Most ids OpenRouter accepts in a chat request's ``models`` array (primary included). A longer array is
refused with HTTP 400 ``'models' array must have 3 items or fewer.``; the limit is enforced by the API
(reported from live traffic) though its "Model Fallbacks" page does not state it."""


class Settings(BaseSettings):
    """Every knob of a discovery run, with bounds. Environment prefix: ``DISCOVERY_``."""

    model_config = SettingsConfigDict(
        env_prefix="DISCOVERY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Field(
        Path("data"), description="Runtime data: the DuckDB file and Parquet files per run."
    )
    db_path: Path | None = Field(None, description="DuckDB file; defaults to <data_dir>/discovery.duckdb.")
    docs_dir: Path = Field(Path("docs"), description="Where the Markdown reports are written.")
    stack_dir: Path = Field(
        Path(".stack"),
        description=(
            "The local Prefect stack's folder (`discovery up`); while it runs, `discovery run` records "
            "into its server."
        ),
    )

    # --- the source ----------------------------------------------------------------------------
    source: str = Field(
        "auto",
        description=(
            "'auto' (OpenRouter when a key is set, else the sandbox), 'sandbox', 'openrouter', "
            "or the base URL of any OpenAI-compatible server (http://host:port/v1)."
        ),
    )
    openrouter_base_url: str = Field(
        OPENROUTER_BASE_URL, description="OpenRouter's API root (used when source is openrouter)."
    )
    api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENROUTER_API_KEY", "DISCOVERY_API_KEY", "api_key"),
        description="OpenRouter API key. Never printed, logged or stored.",
    )
    sandbox_scenario: Path | None = Field(
        None, description="Scenario file (TOML or JSON) that stages sandbox behaviour."
    )
    sandbox_seed: int = Field(20261101, ge=0, description="Seed of the sandbox's behaviour profiles.")
    http_referer: str = Field(
        "https://github.com/free-model-discovery",
        description="Attribution header sent to OpenRouter (HTTP-Referer).",
    )
    app_title: str = Field(
        "Free Model Discovery", description="Attribution header sent to OpenRouter (X-Title)."
    )

    # --- timeouts (seconds) --------------------------------------------------------------------
    connect_timeout_s: float = Field(10.0, gt=0, le=120, description="TCP/TLS connect timeout.")
    read_timeout_s: float = Field(30.0, gt=0, le=600, description="Longest wait between two received chunks.")
    write_timeout_s: float = Field(10.0, gt=0, le=120, description="Request upload timeout.")
    pool_timeout_s: float = Field(10.0, gt=0, le=600, description="Wait for a free connection in the pool.")
    probe_deadline_s: float = Field(
        90.0, gt=0, le=1800, description="Total deadline of one probe, on top of the read timeout."
    )
    catalog_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Total timeout for fetching the catalog."
    )

    # --- limits and quota ----------------------------------------------------------------------
    requests_per_minute: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description=(
            "Account-wide request rate. Default: 20 on OpenRouter (free tier), the sandbox's own "
            "limit on the sandbox, 600 on other base URLs."
        ),
    )
    requests_per_day: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        description=(
            "Daily request budget. Default: read from /api/v1/key "
            "(free_model_daily_requests), else 50 on OpenRouter, unlimited elsewhere."
        ),
    )
    max_concurrency: int = Field(8, ge=1, le=1024, description="Most probes in flight at once.")
    max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts per probe where the failure class allows a retry."
    )
    backoff_base_s: float = Field(
        1.0, ge=0, le=120, description="First backoff delay when no reset hint is given."
    )
    backoff_max_s: float = Field(60.0, ge=0, le=3600, description="Longest single backoff.")
    shared_pool_clear_s: float = Field(
        120.0,
        ge=0,
        le=3600,
        description=(
            "Wait after a provider's shared free pool refused a request (429 with limit_source "
            "upstream_provider_shared_pool) when the answer gives no Retry-After; that provider then "
            "gets one request at a time."
        ),
    )
    listing_requests_per_minute: int = Field(
        240,
        ge=1,
        le=100_000,
        description=(
            "Pace of the free signals read before probing (each free model's endpoints listing): "
            "they cost no chat quota, but are asked for politely."
        ),
    )
    listing_concurrency: int = Field(4, ge=1, le=64, description="Endpoints listings read at once.")
    max_response_bytes: int = Field(
        2_000_000, ge=1024, le=100_000_000, description="Cap on bytes read from one response."
    )

    # --- the suite and the analysis ------------------------------------------------------------
    max_tokens: int = Field(
        1024, ge=16, le=32_768, description="max_tokens per probe (room for reasoning models)."
    )
    samples_per_task: int = Field(
        1, ge=1, le=20, description="How many times each task of the suite is sent per model."
    )
    min_samples_for_tier: int = Field(
        3, ge=1, le=100, description="Fewest successful samples before a model is tiered."
    )
    max_models: int | None = Field(None, ge=1, description="Probe at most this many free models (None: all).")
    probe_all: bool = Field(
        False,
        description=(
            "Probe the models the free signals settle (no endpoints listed, not routable for the key) "
            "with chat requests anyway."
        ),
    )

    progress_every_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description=(
            "How often the progress line is logged while probing when the output is not a terminal "
            "(on a terminal it is redrawn in place twice a second)."
        ),
    )

    # --- the reports -----------------------------------------------------------------------------
    min_answers_for_tail: int = Field(
        10,
        ge=1,
        le=10_000,
        description=(
            "Fewest answers before the reports show a P90 (models) or a P95 (the drill); with fewer, "
            "they show — and the number of answers, since a tail percentile of a handful of answers "
            "is only their slowest one."
        ),
    )

    # --- the drill -------------------------------------------------------------------------------
    drill_requests: int = Field(
        10,
        ge=1,
        le=500,
        description=(
            "Requests the drill sends per client (OpenRouter's models array, LiteLLM), arm (rotation, "
            "primary alone, openrouter/free) and incident; within the run's budget."
        ),
    )
    drill_minute_clears_s: float = Field(
        20.0,
        ge=0,
        le=60,
        description=(
            "Sandbox drill, incident 'account per-minute limit reached': seconds until the full "
            "minute window clears."
        ),
    )

    # --- the environment ---------------------------------------------------------------------
    min_free_disk_mb: int = Field(
        64,
        ge=0,
        le=1_000_000,
        description=(
            "Free space the data folder must have before a run sends its first request (MB): room "
            "for the run's checkpoints, Parquet files and the DuckDB load."
        ),
    )

    # --- deployment runs (the trust boundary) ---------------------------------------------------
    allowed_key_envs: str = Field(
        "OPENROUTER_API_KEY",
        description=(
            "Comma-separated environment variables a deployment run may name in its api_key_env "
            "parameter (the command line may name any)."
        ),
    )
    allowed_base_urls: str = Field(
        "https://openrouter.ai/api/v1, http://127.0.0.1, http://localhost, http://[::1]",
        description=(
            "Comma-separated base URLs a deployment run may probe (its base_url parameter, or a URL as "
            "its source). An entry allows URLs with its scheme and host, its port (any port when it "
            "names none) and a path inside its path; credentials in the URL are never allowed."
        ),
    )
    input_dir: Path | None = Field(
        None,
        description=(
            "The folder whose files a deployment run may read as its candidates and scenario files "
            "(default: the folder the run starts in, the project folder of `discovery up`). Hidden "
            "files and folders (.env, .stack/, .git/) inside it are never read."
        ),
    )
    max_input_file_bytes: int = Field(
        1_000_000,
        ge=1,
        le=1_000_000_000,
        description="Largest candidates or scenario file (and sandbox replay file) a deployment run reads.",
    )

    # --- the exports ---------------------------------------------------------------------------
    rotation_models_limit: int = Field(
        OPENROUTER_MODELS_LIMIT,
        ge=1,
        le=100,
        description=(
            "Most model ids in each purpose's `models` array in rotation.json (the primary, then the "
            "best fallbacks). OpenRouter refuses a longer array with HTTP 400; the full chain is "
            "exported under `chains` either way."
        ),
    )

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        from freemodels.source import NAMED_SOURCES  # the profiles import this module

        value = value.strip()
        if value == "auto" or value in NAMED_SOURCES:
            return value
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
        names = ", ".join(f"'{n}'" for n in ("auto", *NAMED_SOURCES))
        raise ValueError(f"source must be {names} or an http(s) base URL, not {value!r}")

    # --- derived values --------------------------------------------------------------------------
    @property
    def database(self) -> Path:
        """The DuckDB file."""
        return self.db_path if self.db_path is not None else self.data_dir / "discovery.duckdb"

    @property
    def runs_dir(self) -> Path:
        """Parquet files per run live under here."""
        return self.data_dir / "runs"

    def model_post_init(self, context: Any) -> None:
        """Register the key with the redaction point as soon as the settings hold it."""
        if self.api_key is not None:
            register_secret(self.api_key.get_secret_value())

    @property
    def key_env_allowlist(self) -> tuple[str, ...]:
        """:attr:`allowed_key_envs` as names."""
        return tuple(name for part in self.allowed_key_envs.split(",") if (name := part.strip()))

    @property
    def base_url_allowlist(self) -> tuple[str, ...]:
        """:attr:`allowed_base_urls` as URLs."""
        return tuple(url for part in self.allowed_base_urls.split(",") if (url := part.strip()))

    def resolved_api_key(self) -> str | None:
        """The API key, or None. Order: ``OPENROUTER_API_KEY``, then ``DISCOVERY_API_KEY``.

        The only place the secret's value is read; it is registered with the redaction point.
        """
        if self.api_key is None:
            return None
        value = self.api_key.get_secret_value().strip()
        register_secret(value)
        return value or None

    def timeouts(self) -> dict[str, float]:
        """httpx timeout parts, named."""
        return {
            "connect": self.connect_timeout_s,
            "read": self.read_timeout_s,
            "write": self.write_timeout_s,
            "pool": self.pool_timeout_s,
        }


def read_env_secret(name: str) -> str | None:
    """The value of the environment variable ``name`` (for ``--api-key-env``), or None.

    The one other place that reads the environment: it reads only the variable the user named.
    """
    import os

    if not name or not name.replace("_", "").isalnum() or not name.isascii():
        raise ConfigError(f"not a valid environment variable name: {name!r}")
    value = os.environ.get(name, "").strip()
    register_secret(value)
    return value or None


_MESSAGES: dict[str, str] = {
    "int_parsing": "is not a whole number",
    "int_from_float": "is not a whole number",
    "float_parsing": "is not a number",
    "bool_parsing": "is not true or false",
    "finite_number": "is not a finite number",
}


def _problem(error: Any, overrides: dict[str, object]) -> str:
    """One validation error as ``NAME='value' <what is wrong>``, naming the environment variable when
    the value came from the environment (or ``.env``) rather than from an explicit argument."""
    loc = [str(p) for p in error.get("loc", ())]
    field = loc[0] if loc else "settings"
    if field in overrides or field not in Settings.model_fields:
        name = field
    elif field == "api_key":
        name = "OPENROUTER_API_KEY"
    else:
        name = f"DISCOVERY_{field.upper()}"
    value = error.get("input")
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    if kind in _MESSAGES:
        what = _MESSAGES[kind]
    elif kind == "greater_than_equal":
        what = f"must be at least {ctx.get('ge')}"
    elif kind == "greater_than":
        what = f"must be more than {ctx.get('gt')}"
    elif kind == "less_than_equal":
        what = f"must be at most {ctx.get('le')}"
    elif kind == "less_than":
        what = f"must be less than {ctx.get('lt')}"
    else:
        what = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    if field == "api_key" or isinstance(value, dict):
        return f"{name} {what}"  # never echo a secret or a whole structure
    shown = str(value) if value is not None else ""
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{name}={shown!r} {what}"


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning validation errors into one clear :class:`ConfigError` that names the
    environment variable (or argument) and the value, e.g. ``DISCOVERY_REQUESTS_PER_MINUTE='abc' is
    not a whole number``."""
    from pydantic import ValidationError

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_problem(err, clean) for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None


def debug_requested() -> bool:
    """Whether ``DISCOVERY_DEBUG`` asks for tracebacks (``1``, ``true``, ``yes``)."""
    import os

    return os.environ.get("DISCOVERY_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}

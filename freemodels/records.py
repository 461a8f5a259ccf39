"""Domain records (frozen, slotted dataclasses) and the polars schemas of every table.

The schemas here are the contract between the pipeline steps, the Parquet files and DuckDB: each table in
DuckDB has exactly these columns, in this order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum

import polars as pl

from freemodels.failures import Failure

ANSWER_IN_REASONING = "answer_in_reasoning"
"""``model_results.caveat`` of a model whose answers came only in the reasoning channel (``content``
empty or null, ``finish_reason`` stop): it works, but an app that reads ``content`` gets nothing."""


class Verdict(StrEnum):
    """A model's outcome in one run."""

    WORKING = "working"  # at least one task passed and most probes succeeded
    DEGRADED = "degraded"  # answered, but failed some tasks or some probes
    FAILING = "failing"  # no probe succeeded
    UNTESTED_QUOTA = "untested_quota"  # left out because the daily quota did not allow it
    NOT_LISTED = "not_listed"  # a candidate id that the catalog does not list


class RunStatus(StrEnum):
    """Where a run stands. Only ``completed`` means every step is done (store, render, artifacts,
    alerts, docs commit); ``interrupted`` and ``failed`` runs can be resumed."""

    RUNNING = "running"  # a process is working on it (or was killed before it could say otherwise)
    INTERRUPTED = "interrupted"  # SIGINT or SIGTERM: stopped on purpose, checkpoint flushed
    FAILED = "failed"  # stopped by an error; ``status_reason`` says which
    COMPLETED = "completed"  # every step done; models the quota left untested are counted apart
    ABANDONED = "abandoned"  # the user gave it up (``discovery runs abandon``): never resumed


class RunStep(StrEnum):
    """The steps of a run that must each be done once; recorded in ``steps_done`` as they finish."""

    PROBED = "probed"  # every planned probe has a result (or the quota ended probing)
    STORED = "stored"  # Parquet files loaded into DuckDB
    RENDERED = "rendered"  # docs/ written
    PUBLISHED = "published"  # Prefect artifacts created
    DRILLED = "drilled"  # the rotation drilled through the clients (when asked), rows stored
    ALERTED = "alerted"  # lost-model events emitted
    COMMITTED = "committed"  # docs/ committed with git (when asked)


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One (model, task, sample) to send."""

    model_id: str
    family: str
    task: str
    sample: int = 0
    priority: int = 0  # lower is sent first (family representatives first)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one HTTP attempt of one probe produced."""

    run_id: str
    model_id: str
    family: str
    task: str
    sample: int
    attempt: int
    started_at: datetime
    http_status: int | None
    failure: Failure | None
    passed: bool
    error_code: str | None = None  # availability.code or error_type or exception name
    message: str | None = None  # OpenRouter's message (redacted, truncated)
    ttft_any_ms: float | None = None
    ttft_content_ms: float | None = None
    total_ms: float | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    finish_reason: str | None = None
    generation_id: str | None = None
    provider: str | None = None
    cache_status: str | None = None
    cost: float | None = None
    retry_after_s: float | None = None
    reply_excerpt: str | None = None
    server_ttft_ms: float | None = None  # the server's own timing, where it reports one
    server_total_ms: float | None = None
    source: str | None = None  # the source kind that answered (a run never mixes sources)
    answer_channel: str | None = None  # "content" | "reasoning": where the answer was read (graded)
    limit_source: str | None = None  # a 429's metadata.limit_source (upstream_provider_shared_pool)
    is_byok: bool | None = None  # a 429's metadata.is_byok
    remedy_hint: str | None = None  # a 429's metadata.remedy_hint (OpenRouter's words, redacted)

    def as_row(self) -> dict[str, object]:
        row = asdict(self)
        row["failure"] = self.failure.value if self.failure else None
        return row


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One discovery run."""

    run_id: str
    started_at: datetime
    source: str  # a SourceKind value: sandbox | openrouter | base_url
    base_url: str
    status: str = RunStatus.RUNNING.value  # a RunStatus value
    finished_at: datetime | None = None
    quota_before: int | None = None
    quota_after: int | None = None
    quota_limit: int | None = None
    prefect_flow_run_id: str | None = None
    catalog_fetched_at: datetime | None = None
    suite_version: str = ""
    settings_json: str = "{}"
    notes: list[str] = field(default_factory=list)
    status_reason: str | None = None  # why a run failed or was interrupted (one line)
    steps_done: list[str] = field(default_factory=list)  # RunStep values, in the order done
    untested_models: int | None = None  # free models the quota left without a verdict or part-tested
    owner_pid: int | None = None  # the process working on the run while it is running
    owner_host: str | None = None
    owner_started: int | None = None  # that process's start time (clock ticks since boot)


RUNS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "source": pl.String(),
    "base_url": pl.String(),
    "status": pl.String(),
    "quota_before": pl.Int64(),
    "quota_after": pl.Int64(),
    "quota_limit": pl.Int64(),
    "prefect_flow_run_id": pl.String(),
    "catalog_fetched_at": pl.Datetime("us", "UTC"),
    "suite_version": pl.String(),
    "settings_json": pl.String(),
    "notes": pl.String(),
    "status_reason": pl.String(),
    "steps_done": pl.String(),  # JSON list of RunStep values
    "untested_models": pl.Int64(),
}

# The parsed catalog: one row per listed model (see freemodels.catalog for the rules).
CATALOG_SCHEMA: dict[str, pl.DataType] = {
    "model_id": pl.String(),
    "canonical_slug": pl.String(),
    "name": pl.String(),
    "author": pl.String(),
    "family": pl.String(),
    "variant": pl.String(),
    "created": pl.Int64(),
    "description": pl.String(),
    "context_length": pl.Int64(),
    "max_completion_tokens": pl.Int64(),
    "modality": pl.String(),
    "input_modalities": pl.List(pl.String()),
    "output_modalities": pl.List(pl.String()),
    "tokenizer": pl.String(),
    "instruct_type": pl.String(),
    "price_prompt": pl.Float64(),
    "price_completion": pl.Float64(),
    "price_request": pl.Float64(),
    "price_image": pl.Float64(),
    "pricing_json": pl.String(),
    "is_router": pl.Boolean(),
    "is_free": pl.Boolean(),
    "free_rule": pl.String(),  # "suffix" | "zero_price" | None
    "is_moderated": pl.Boolean(),
    "supported_parameters": pl.List(pl.String()),
    "supports_tools": pl.Boolean(),
    "supports_structured_outputs": pl.Boolean(),
    "supports_reasoning": pl.Boolean(),
    "expiration_date": pl.String(),
    "hugging_face_id": pl.String(),
}

PROBES_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "model_id": pl.String(),
    "family": pl.String(),
    "task": pl.String(),
    "sample": pl.Int64(),
    "attempt": pl.Int64(),
    "started_at": pl.Datetime("us", "UTC"),
    "http_status": pl.Int64(),
    "failure": pl.String(),
    "passed": pl.Boolean(),
    "error_code": pl.String(),
    "message": pl.String(),
    "ttft_any_ms": pl.Float64(),
    "ttft_content_ms": pl.Float64(),
    "total_ms": pl.Float64(),
    "completion_tokens": pl.Int64(),
    "reasoning_tokens": pl.Int64(),
    "finish_reason": pl.String(),
    "generation_id": pl.String(),
    "provider": pl.String(),
    "cache_status": pl.String(),
    "cost": pl.Float64(),
    "retry_after_s": pl.Float64(),
    "reply_excerpt": pl.String(),
    "server_ttft_ms": pl.Float64(),
    "server_total_ms": pl.Float64(),
    "source": pl.String(),
    "answer_channel": pl.String(),
    "limit_source": pl.String(),
    "is_byok": pl.Boolean(),
    "remedy_hint": pl.String(),
}

MODEL_RESULTS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "model_id": pl.String(),
    "family": pl.String(),
    "verdict": pl.String(),
    "n": pl.Int64(),  # final attempts recorded (one per probe)
    "n_ok": pl.Int64(),  # probes that got a non-empty answer
    "n_passed": pl.Int64(),  # probes whose answer passed the grader
    "success_rate": pl.Float64(),  # n_passed / n
    "p50_total_ms": pl.Float64(),
    "p90_total_ms": pl.Float64(),
    "p50_ttft_ms": pl.Float64(),
    "p90_ttft_ms": pl.Float64(),
    "p50_ttft_content_ms": pl.Float64(),
    "tier": pl.String(),
    "is_reasoning": pl.Boolean(),
    "tasks_passed": pl.String(),  # comma list of task names
    "tasks_failed": pl.String(),
    "root_cause": pl.String(),  # Failure value of the dominant failure, or None
    "remedy": pl.String(),
    "evidence": pl.String(),  # status + OpenRouter's message of a representative failure
    "suggestion": pl.String(),  # closest catalog ids (candidates) or the paid slug (free variant ended)
    "caveat": pl.String(),  # ANSWER_IN_REASONING, or None
}

ROTATION_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "purpose": pl.String(),
    "rank": pl.Int64(),
    "model_id": pl.String(),
    "family": pl.String(),
    "tier": pl.String(),
    "p50_total_ms": pl.Float64(),
    "success_rate": pl.Float64(),
}

CHANGES_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "prev_run_id": pl.String(),
    "model_id": pl.String(),
    "change": pl.String(),
    "detail": pl.String(),
}

ENDPOINTS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "model_id": pl.String(),  # the free model (its catalog id)
    "listing": pl.String(),  # what GET models/{id}/endpoints gave: endpoints | empty | not_found | unreadable
    "routable": pl.Boolean(),  # listed by GET models/user for the key (null: not read)
    "provider": pl.String(),  # provider_name; null on the one row of a listing without endpoints
    "endpoint": pl.String(),  # the endpoint's name
    "tag": pl.String(),
    "status": pl.Int64(),  # OpenRouter's endpoint status (0 seen on working endpoints; others undocumented)
    "uptime_5m": pl.Float64(),  # percent of requests that succeeded (rate-limited ones left out)
    "uptime_30m": pl.Float64(),
    "uptime_1d": pl.Float64(),
    "latency_p50_ms": pl.Float64(),  # time to first token over the last 30 minutes, as reported
    "latency_p75_ms": pl.Float64(),
    "latency_p90_ms": pl.Float64(),
    "latency_p99_ms": pl.Float64(),
    "throughput_p50": pl.Float64(),  # tokens per second over the last 30 minutes, as reported
    "throughput_p75": pl.Float64(),
    "throughput_p90": pl.Float64(),
    "throughput_p99": pl.Float64(),
    "context_length": pl.Int64(),
    "max_completion_tokens": pl.Int64(),
    "quantization": pl.String(),
    "fetched_at": pl.Datetime("us", "UTC"),
}
"""A free model's provider endpoints as the source reports them (no chat quota spent): one row per
endpoint; a model whose listing has none (or could not be read) has one row with ``provider`` null."""
DRILL_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "client": pl.String(),  # DrillClient value: models_array | litellm
    "arm": pl.String(),  # DrillArm value: rotation | primary | free_router
    "incident": pl.String(),  # Incident value: steady | upstream_429_storm | ...
    "purpose": pl.String(),  # the rotation purpose drilled (general)
    "seq": pl.Int64(),  # the request's number in its (client, arm, incident) workload, from 1
    "started_at": pl.Datetime("us", "UTC"),
    "outcome": pl.String(),  # DrillOutcome value: ok | wrong_answer | error | not_sent
    "failure": pl.String(),  # Failure value of the last failed attempt (None when answered at once)
    "http_status": pl.Int64(),  # of the last attempt
    "answered_by": pl.String(),  # the model that answered (the response's `model`)
    "latency_ms": pl.Float64(),  # first attempt sent -> the answer complete, waits and retries included
    "attempts": pl.Int64(),  # HTTP requests the client sent for it (retries and LiteLLM's fallbacks)
    "message": pl.String(),  # why it failed (redacted), or None
}
"""One request of the drill (``discovery drill``, or the run's ``drill`` step): the rotation as the
exports deploy it, through OpenRouter's ``models`` array and through LiteLLM's router, beside the
primary alone and ``openrouter/free``, under staged incidents on the sandbox."""

WATCHES_SCHEMA: dict[str, pl.DataType] = {
    "watch_id": pl.String(),
    "at": pl.Datetime("us", "UTC"),  # when the catalog was read
    "finished_at": pl.Datetime("us", "UTC"),
    "source": pl.String(),  # a SourceKind value
    "base_url": pl.String(),
    "status": pl.String(),  # "completed" | "failed"
    "status_reason": pl.String(),
    "based_on_run_id": pl.String(),  # the latest completed run of the source: the rotation watched
    "previous_watch_id": pl.String(),
    "catalog_models": pl.Int64(),
    "free_models": pl.Int64(),
    "rotation_models": pl.Int64(),  # distinct models in the watched rotation
    "listings_read": pl.Int64(),  # endpoints listings asked for (no chat quota)
    "chat_requests": pl.Int64(),  # liveness probes sent (0 unless asked for)
    "lost": pl.Int64(),
    "added": pl.Int64(),
    "expiring": pl.Int64(),
    "restored": pl.Int64(),
    "rotation_repaired": pl.Boolean(),  # the exports name fewer models than the run measured
    "exports_rewritten": pl.Boolean(),  # docs/rotation.json and docs/litellm-router.yaml written
    "prefect_flow_run_id": pl.String(),
    "notes": pl.String(),  # JSON list
}
"""One row per watch (``discovery watch``): what it read, what it found, whether it repaired the
rotation."""

WATCH_CHANGES_SCHEMA: dict[str, pl.DataType] = {
    "watch_id": pl.String(),
    "compared_with": pl.String(),  # the snapshot compared against: a run id or a watch id
    "model_id": pl.String(),
    "change": pl.String(),  # lost | restored | added | removed | free_ended | expiring
    "reason": pl.String(),  # lost: gone | no_longer_free | no_endpoints | broken
    "detail": pl.String(),
    "in_rotation": pl.Boolean(),  # a model of the watched rotation
    "new": pl.Boolean(),  # not reported by the previous watch: an event went out
    "expiration_date": pl.String(),
}
"""What a watch found changed: the catalog snapshot's differences from the previous snapshot (added,
removed, free ended), the rotation's members lost or back, and free models about to expire."""

AVAILABILITY_SCHEMA: dict[str, pl.DataType] = {
    "snapshot_id": pl.String(),  # a run id or a watch id
    "kind": pl.String(),  # "run" | "watch"
    "source": pl.String(),
    "at": pl.Datetime("us", "UTC"),  # when the catalog was read
    "model_id": pl.String(),
    "listed": pl.Boolean(),  # the catalog lists it
    "free": pl.Boolean(),  # listed and free
    "endpoints": pl.Int64(),  # provider endpoints its listing names (null: not read)
    "listing": pl.String(),  # endpoints | empty | not_found | unreadable (null: not read)
    "expiration_date": pl.String(),
}
"""Per model and snapshot (every run and every watch): listed, free, how many endpoints. A run's rows
are its catalog (written when the run is stored); a watch's are its catalog plus the models it
watched that the catalog no longer lists."""

WATCH_TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "watches": WATCHES_SCHEMA,
    "watch_changes": WATCH_CHANGES_SCHEMA,
    "availability": AVAILABILITY_SCHEMA,
}
"""The tables of the watch and of availability over time (not per run: :data:`TABLE_SCHEMAS` is)."""

ADDED_COLUMNS: dict[str, frozenset[str]] = {
    "probes": frozenset({"source", "answer_channel", "limit_source", "is_byok", "remedy_hint"}),
    "model_results": frozenset({"caveat"}),
}
"""Columns added after files of the first schema were written (DuckDB migration 2). A Parquet file
without them (a run interrupted before an upgrade and resumed after it) reads them as nulls."""

TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "runs": RUNS_SCHEMA,
    "catalog": CATALOG_SCHEMA,
    "probes": PROBES_SCHEMA,
    "model_results": MODEL_RESULTS_SCHEMA,
    "rotation": ROTATION_SCHEMA,
    "changes": CHANGES_SCHEMA,
    "endpoints": ENDPOINTS_SCHEMA,
    "drill": DRILL_SCHEMA,
}


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty DataFrame with the given schema."""
    return pl.DataFrame(schema=schema)


def probes_frame(results: list[ProbeResult]) -> pl.DataFrame:
    """Probe results as a DataFrame with :data:`PROBES_SCHEMA`."""
    if not results:
        return empty_frame(PROBES_SCHEMA)
    return pl.DataFrame([r.as_row() for r in results], schema=PROBES_SCHEMA)

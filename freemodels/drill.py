"""The drill: the rotation as people deploy it, sent a small workload, under incidents.

A discovery ranks a rotation; the exports are what people deploy. The drill checks that the deployed
forms survive what free models do, and measures what each costs. It sends ``requests`` requests (the
suite's tasks, in turn) through each of two **clients**:

- ``models_array``: an OpenRouter chat request with the purpose's ``model`` and ``models`` exactly as
  ``rotation.json`` exports them; OpenRouter tries the models in order when one errors. The client
  around it retries as the discovery itself does (:mod:`freemodels.scheduler`: ``Retry-After``, the
  account's ``X-RateLimit-Reset``, else exponential backoff);
- ``litellm``: ``litellm.Router`` loaded from the exported ``litellm-router.yaml``, asked for the
  purpose by name; LiteLLM retries and falls back along the whole chain as its ``router_settings`` say.

and, for each client, three **arms**: the purpose's rotation, its primary alone (no fallback), and
OpenRouter's Free Models Router ``openrouter/free`` (a random working free model: the choice a user
would make instead of a rotation). Every request is one row of the ``drill`` table
(:data:`~freemodels.records.DRILL_SCHEMA`): outcome, the model that answered, latency (first attempt
sent to the answer complete, waits included) and the HTTP attempts the client sent for it.

On the sandbox each **incident** is staged afresh for every (client, arm): a new sandbox serves the
run's scenario with the incident laid over it, so every arm meets the same incident from the same
start. On any other source nothing can be staged: the drill sends the workload as things are
(incident ``live``). The incidents:

- ``steady``: nothing goes wrong (what the rotation costs when it is not needed);
- ``upstream_429_storm``: every request to the primary gets an upstream 429 ("Provider returned
  error", no retry hint);
- ``free_variant_ended``: the primary answers the first half of the workload, then its free variant
  ends (404, for good);
- ``account_minute_limit``: the account's per-minute limit is already reached by other traffic when
  the workload starts (20 a minute, the free tier's); the window clears ``minute_clears_in_s`` later.
  Every free model shares it: falling back cannot help, waiting does;
- ``provider_5xx_burst``: the primary's first ``burst`` requests get 500/502/503/504, then it recovers.

Every HTTP attempt of the drill goes through the run's :class:`~freemodels.scheduler.RateLimiter`:
paced like the probes and counted against the same budget; when the budget is spent the remaining
requests are recorded ``not_sent``.

This module holds the records, the staging and the summaries (pure); the clients that send requests
are in :mod:`freemodels.drill_clients` and the step in :mod:`tasks.drill`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from enum import StrEnum

import polars as pl

from freemodels.records import DRILL_SCHEMA
from freemodels.sandbox.scenario import Behavior, Fault, ModelSpec, Scenario

FREE_ROUTER = "openrouter/free"
"""OpenRouter's Free Models Router: a random working free model per request."""

FREE_TIER_REQUESTS_PER_MINUTE = 20
"""The account's per-minute limit staged by ``account_minute_limit`` (OpenRouter's free tier)."""


class DrillClient(StrEnum):
    """How the rotation is deployed."""

    MODELS_ARRAY = "models_array"  # OpenRouter's `models` fallback array (rotation.json)
    LITELLM = "litellm"  # litellm.Router from litellm-router.yaml


class DrillArm(StrEnum):
    """What the client is asked for."""

    ROTATION = "rotation"  # the purpose's chain, with its fallbacks
    PRIMARY = "primary"  # the primary alone
    FREE_ROUTER = "free_router"  # openrouter/free


class Incident(StrEnum):
    """What the drill stages on the sandbox (``live``: nothing staged, any other source)."""

    STEADY = "steady"
    UPSTREAM_429_STORM = "upstream_429_storm"
    FREE_VARIANT_ENDED = "free_variant_ended"
    ACCOUNT_MINUTE_LIMIT = "account_minute_limit"
    PROVIDER_5XX_BURST = "provider_5xx_burst"
    LIVE = "live"


class DrillOutcome(StrEnum):
    """How one drill request ended."""

    OK = "ok"  # answered, and the answer passed the task's grader
    WRONG_ANSWER = "wrong_answer"  # answered, but the grader rejected the answer
    ERROR = "error"  # no answer after every attempt the client made
    NOT_SENT = "not_sent"  # the run's request budget was spent before it could be sent


CLIENT_LABELS: dict[DrillClient, str] = {
    DrillClient.MODELS_ARRAY: "OpenRouter `models` array",
    DrillClient.LITELLM: "LiteLLM router",
}
ARM_LABELS: dict[DrillArm, str] = {
    DrillArm.ROTATION: "rotation",
    DrillArm.PRIMARY: "primary alone",
    DrillArm.FREE_ROUTER: "`openrouter/free`",
}
INCIDENT_LABELS: dict[Incident, str] = {
    Incident.STEADY: "Steady (nothing goes wrong)",
    Incident.UPSTREAM_429_STORM: "The primary's upstream 429 storm",
    Incident.FREE_VARIANT_ENDED: "The primary's free variant ends mid-drill",
    Incident.ACCOUNT_MINUTE_LIMIT: "The account's per-minute limit reached",
    Incident.PROVIDER_5XX_BURST: "A 5xx burst on the primary",
    Incident.LIVE: "Live (nothing staged)",
}
"""Project text for the reports (Markdown, shown as written)."""

INCIDENT_SHORT: dict[Incident, str] = {
    Incident.STEADY: "Steady",
    Incident.UPSTREAM_429_STORM: "Upstream 429 storm",
    Incident.FREE_VARIANT_ENDED: "Free variant ended",
    Incident.ACCOUNT_MINUTE_LIMIT: "Account minute limit",
    Incident.PROVIDER_5XX_BURST: "5xx burst",
    Incident.LIVE: "Live",
}
CLIENT_SHORT: dict[DrillClient, str] = {
    DrillClient.MODELS_ARRAY: "`models` array",
    DrillClient.LITELLM: "LiteLLM",
}
"""Short labels for narrow tables (the Prefect artifact)."""

STAGED_INCIDENTS: tuple[Incident, ...] = (
    Incident.STEADY,
    Incident.UPSTREAM_429_STORM,
    Incident.FREE_VARIANT_ENDED,
    Incident.ACCOUNT_MINUTE_LIMIT,
    Incident.PROVIDER_5XX_BURST,
)


@dataclass(frozen=True, slots=True)
class Staging:
    """How hard the staged incidents hit (see the module docstring)."""

    requests: int  # the workload of each (client, arm, incident)
    minute_clears_in_s: float = 20.0  # account_minute_limit: when the full minute window clears
    burst: int | None = None  # provider_5xx_burst: 5xx answers before the primary recovers

    @property
    def burst_size(self) -> int:
        return self.burst if self.burst is not None else max(2, self.requests // 3)

    @property
    def ends_after(self) -> int:
        """free_variant_ended: requests to the primary answered before its free variant ends."""
        return max(1, self.requests // 2)

    def describe(self, incident: Incident) -> str:
        """What the incident stages, in words (project text for the reports)."""
        if incident is Incident.UPSTREAM_429_STORM:
            return "every request to the primary gets an upstream 429, without a retry hint"
        if incident is Incident.FREE_VARIANT_ENDED:
            return (
                f"the primary answers {self.ends_after} requests, then its free variant ends "
                "(404 from then on)"
            )
        if incident is Incident.ACCOUNT_MINUTE_LIMIT:
            return (
                f"the account's {FREE_TIER_REQUESTS_PER_MINUTE} requests a minute are already spent when "
                f"the workload starts; the window clears {self.minute_clears_in_s:g} s later"
            )
        if incident is Incident.PROVIDER_5XX_BURST:
            return f"the primary's first {self.burst_size} requests get 500, 502, 503, 504 in turn"
        if incident is Incident.STEADY:
            return "every model answers"
        return "nothing staged: the source as it is"


def staged_scenario(base: Scenario, incident: Incident, primary: str, staging: Staging) -> Scenario:
    """``base`` with ``incident`` laid over it for a drill whose rotation starts with ``primary``."""
    if incident in (Incident.STEADY, Incident.LIVE):
        return base
    if incident is Incident.ACCOUNT_MINUTE_LIMIT:
        limits = replace(
            base.limits,
            requests_per_minute=FREE_TIER_REQUESTS_PER_MINUTE,
            requests_this_minute=FREE_TIER_REQUESTS_PER_MINUTE,
            minute_clears_in_s=staging.minute_clears_in_s,
            count_rejected=True,
        )
        return replace(base, limits=limits)
    if incident is Incident.UPSTREAM_429_STORM:
        change = ModelSpec(fault=Fault.STORM_429, fail_first=0, ok_first=0)
    elif incident is Incident.FREE_VARIANT_ENDED:
        change = ModelSpec(
            behavior=Behavior.FREE_VARIANT_ENDED, fault=Fault.NONE, ok_first=staging.ends_after
        )
    else:
        change = ModelSpec(fault=Fault.STORM_5XX, fail_first=staging.burst_size, ok_first=0)
    current = base.models.get(primary, ModelSpec())
    merged = replace(current, **change.set_values())
    return replace(base, models={**base.models, primary: merged})


@dataclass(frozen=True, slots=True)
class Cell:
    """One workload: a client, an arm, an incident."""

    client: DrillClient
    arm: DrillArm
    incident: Incident


def plan_cells(incidents: Sequence[Incident], *, litellm: bool, openrouter_routing: bool) -> list[Cell]:
    """Every (incident, client, arm) the drill sends, in the order it sends them.

    ``litellm``: LiteLLM is installed; ``openrouter_routing``: the source understands OpenRouter's
    ``models`` array and ``openrouter/free`` (elsewhere only LiteLLM's rotation and primary apply).
    """
    clients = [DrillClient.MODELS_ARRAY] if openrouter_routing else []
    if litellm:
        clients.append(DrillClient.LITELLM)
    arms = [DrillArm.ROTATION, DrillArm.PRIMARY]
    if openrouter_routing:
        arms.append(DrillArm.FREE_ROUTER)
    return [Cell(c, a, i) for i in incidents for c in clients for a in arms]


def requests_that_fit(cells: int, requests: int, budget: int | None) -> int:
    """Requests per cell within ``budget`` (first attempts; retries take what is left, if any)."""
    if budget is None or cells == 0:
        return requests
    return max(0, min(requests, budget // cells))


@dataclass(frozen=True, slots=True)
class DrillRequest:
    """One request of the drill, as the ``drill`` table stores it."""

    run_id: str
    client: str
    arm: str
    incident: str
    purpose: str
    seq: int
    started_at: datetime | None
    outcome: str
    failure: str | None = None
    http_status: int | None = None
    answered_by: str | None = None
    latency_ms: float | None = None
    attempts: int = 0
    message: str | None = None


def drill_frame(rows: Iterable[DrillRequest]) -> pl.DataFrame:
    """Drill requests as a frame with :data:`~freemodels.records.DRILL_SCHEMA`."""
    records = [asdict(r) for r in rows]
    if not records:
        return pl.DataFrame(schema=DRILL_SCHEMA)
    return pl.DataFrame(records, schema=DRILL_SCHEMA)


# --------------------------------------------------------------------------------------------------
# summaries (what the reports show)

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "incident": pl.String(),
    "client": pl.String(),
    "arm": pl.String(),
    "n": pl.Int64(),  # requests sent (not_sent left out)
    "n_ok": pl.Int64(),  # answered and passed
    "not_sent": pl.Int64(),
    "success_rate": pl.Float64(),  # n_ok / n
    "p50_ms": pl.Float64(),  # over answered requests
    "p95_ms": pl.Float64(),  # over answered requests; null below the tail threshold
    "n_answered": pl.Int64(),  # requests that got an answer (ok or wrong), the latencies' n
    "attempts": pl.Int64(),  # HTTP attempts sent in total
    "attempts_per_request": pl.Float64(),  # attempts / n
}
"""One row per (incident, client, arm): what the reports show of the drill."""


def summarise(drill: pl.DataFrame, *, tail_min_answers: int) -> pl.DataFrame:
    """Per (incident, client, arm): success, P50/P95 latency and attempts (:data:`SUMMARY_SCHEMA`).

    Latencies are over the requests that got an answer; a P95 needs ``tail_min_answers`` of them
    (below it the P95 is null and the reports show the n instead).
    """
    if drill.is_empty():
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    answered = pl.col("outcome").is_in([DrillOutcome.OK.value, DrillOutcome.WRONG_ANSWER.value])
    sent = pl.col("outcome") != DrillOutcome.NOT_SENT.value
    latency = pl.col("latency_ms").filter(answered)
    frame = (
        drill.group_by("incident", "client", "arm")
        .agg(
            sent.sum().cast(pl.Int64).alias("n"),
            (pl.col("outcome") == DrillOutcome.OK.value).sum().cast(pl.Int64).alias("n_ok"),
            (~sent).sum().cast(pl.Int64).alias("not_sent"),
            latency.quantile(0.5, "linear").alias("p50_ms"),
            latency.quantile(0.95, "linear").alias("p95_ms"),
            answered.sum().cast(pl.Int64).alias("n_answered"),
            pl.col("attempts").fill_null(0).sum().cast(pl.Int64).alias("attempts"),
        )
        .with_columns(
            pl.when(pl.col("n") > 0).then(pl.col("n_ok") / pl.col("n")).alias("success_rate"),
            pl.when(pl.col("n_answered") >= tail_min_answers).then(pl.col("p95_ms")).alias("p95_ms"),
            pl.when(pl.col("n") > 0).then(pl.col("attempts") / pl.col("n")).alias("attempts_per_request"),
        )
    )
    order = {
        "incident": [i.value for i in Incident],
        "client": [c.value for c in DrillClient],
        "arm": [a.value for a in DrillArm],
    }
    keyed = frame.with_columns(
        *(
            pl.col(name)
            .replace_strict(values, list(range(len(values))), default=len(values))
            .alias(f"_{name}")
            for name, values in order.items()
        )
    )
    return keyed.sort(["_incident", "_client", "_arm", "incident", "client", "arm"]).select(
        list(SUMMARY_SCHEMA)
    )


def answered_by(drill: pl.DataFrame) -> dict[tuple[str, str, str], list[tuple[str, int]]]:
    """Per (incident, client, arm): the models that answered, most answers first."""
    found: dict[tuple[str, str, str], list[tuple[str, int]]] = {}
    if drill.is_empty():
        return found
    counted = (
        drill.filter(pl.col("answered_by").is_not_null())
        .group_by("incident", "client", "arm", "answered_by")
        .len()
        .sort(
            ["incident", "client", "arm", "len", "answered_by"], descending=[False, False, False, True, False]
        )
    )
    for row in counted.iter_rows(named=True):
        key = (row["incident"], row["client"], row["arm"])
        found.setdefault(key, []).append((row["answered_by"], row["len"]))
    return found

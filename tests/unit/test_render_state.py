"""A fixed report state for the rendering tests, and checks that it covers what the reports must show.

The state has working models in every tier, a reasoning model that answers only in the reasoning
channel, a model with too few samples, a degraded
model, a model left untested by the quota, a wrong candidate id, failing models covering every
:class:`~freemodels.failures.Failure` class, changes of every known kind and a three-run history.
Other test modules build on :func:`fixed_report_data`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from freemodels.availability import AVAILABILITY_DAYS_SCHEMA, Availability, summarize
from freemodels.changes import CHANGE_KINDS
from freemodels.drill import STAGED_INCIDENTS, DrillArm, DrillClient, Incident
from freemodels.failures import FAILURE_INFO, Failure
from freemodels.listings import NO_ENDPOINTS_EVIDENCE
from freemodels.records import (
    ANSWER_IN_REASONING,
    CATALOG_SCHEMA,
    CHANGES_SCHEMA,
    DRILL_SCHEMA,
    ENDPOINTS_SCHEMA,
    MODEL_RESULTS_SCHEMA,
    PROBES_SCHEMA,
    RUNS_SCHEMA,
    Verdict,
)
from freemodels.storage import HISTORY_SCHEMA, ReportData
from freemodels.suite import TASKS
from tasks.rank import TIERS, TOO_FEW_SAMPLES, assign_tiers, build_rotation, providers_from_probes
from tasks.render import CHANGE_LABELS

RUN_ID = "2026-11-01T06-00-00Z-sandbox"
PREV_RUN_ID = "2026-10-01T06-00-00Z-sandbox"
OLD_RUN_ID = "2026-09-01T06-00-00Z-sandbox"
STARTED = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
MIN_SAMPLES = 3

# model id -> (family, p50 total ms, provider, reasoning)
WORKING: dict[str, tuple[str, float, str, bool]] = {
    "meta-llama/llama-3.2-3b-instruct:free": ("meta-llama/llama", 900.0, "Together", False),
    "meta-llama/llama-3.3-70b-instruct:free": ("meta-llama/llama", 1500.0, "Together", False),
    "google/gemma-3-27b-it:free": ("google/gemma", 3200.0, "Google AI Studio", False),
    "mistralai/mistral-small-3.2-24b-instruct:free": (
        "mistralai/mistral-small",
        7000.0,
        "Chutes",
        False,
    ),
    "deepseek/deepseek-r1:free": ("deepseek/deepseek-r1", 21000.0, "Chutes", True),
}
TOO_FEW_ID = "qwen/qwen3-8b:free"
DEGRADED_ID = "nousresearch/hermes-3-llama-3.1-405b:free"
UNTESTED_ID = "moonshotai/kimi-k2:free"
PARTIAL_ID = "qwen/qwen3-235b-a22b:free"  # screened only: the quota ended its suite
SETTLED_ID = "acme/listed-nowhere-7b:free"  # settled by its endpoints listing, never asked
SLOWER_THAN_REPORTED = "google/gemma-3-27b-it:free"
UP_BUT_FAILING = Failure.PROVIDER_ERROR
REASONING_CHANNEL_ID = "deepseek/deepseek-r1:free"  # answers only in the reasoning channel
WRONG_ID = "meta-llama/llama-3.3-70b:free"
WRONG_SUGGESTION = "meta-llama/llama-3.3-70b-instruct:free"


def failing_id(failure: Failure) -> str:
    """The failing model that shows ``failure`` in the fixed state."""
    if failure is Failure.WRONG_MODEL_ID:
        return WRONG_ID
    return f"acme/{failure.value.replace('_', '-')}-7b:free"


_STATUS: dict[Failure, int | None] = {
    Failure.WRONG_MODEL_ID: 400,
    Failure.NO_ENDPOINTS: 404,
    Failure.FREE_VARIANT_ENDED: 404,
    Failure.PRIVACY_EXCLUDED: 404,
    Failure.PROVIDER_RESTRICTED: 404,
    Failure.APP_RESTRICTED: 403,
    Failure.CAPABILITY_UNSUPPORTED: 404,
    Failure.CONTEXT_LIMIT: 400,
    Failure.BAD_REQUEST: 422,
    Failure.RATE_LIMIT_ACCOUNT: 429,
    Failure.RATE_LIMIT_UPSTREAM: 429,
    Failure.CREDITS_REQUIRED: 402,
    Failure.AUTH: 401,
    Failure.MODERATION: 403,
    Failure.TIMEOUT: 408,
    Failure.PROVIDER_ERROR: 502,
    Failure.MID_STREAM_ERROR: 200,
    Failure.EMPTY_REPLY: 200,
    Failure.REASONING_EXHAUSTED: 200,
    Failure.WRONG_ANSWER: 200,
    Failure.TRANSPORT_ERROR: None,
}


def _catalog_row(model_id: str, family: str, **overrides: Any) -> dict[str, Any]:
    author = model_id.split("/", 1)[0]
    row: dict[str, Any] = {
        "model_id": model_id,
        "canonical_slug": model_id.removesuffix(":free"),
        "name": f"{author.title()}: {model_id.split('/', 1)[-1].removesuffix(':free')} (free)",
        "author": author,
        "family": family,
        "variant": "free" if model_id.endswith(":free") else None,
        "created": 1_750_000_000,
        "description": f"A free model from {author}.",
        "context_length": 131_072,
        "max_completion_tokens": 8192,
        "modality": "text->text",
        "input_modalities": ["text"],
        "output_modalities": ["text"],
        "tokenizer": "Other",
        "instruct_type": None,
        "price_prompt": 0.0,
        "price_completion": 0.0,
        "price_request": 0.0,
        "price_image": 0.0,
        "pricing_json": '{"prompt": "0", "completion": "0"}',
        "is_router": False,
        "is_free": True,
        "free_rule": "suffix",
        "is_moderated": False,
        "supported_parameters": ["max_tokens", "temperature", "response_format"],
        "supports_tools": False,
        "supports_structured_outputs": True,
        "supports_reasoning": False,
        "expiration_date": None,
        "hugging_face_id": None,
    }
    row.update(overrides)
    return row


_FINISH: dict[Failure | None, str] = {
    Failure.WRONG_ANSWER: "stop",
    Failure.EMPTY_REPLY: "stop",
    Failure.REASONING_EXHAUSTED: "length",
}


def _excerpt(failure: Failure | None, reply: str | None) -> str | None:
    """What the probe kept of the reply: the answer, or for an answer that failed, what it held."""
    if failure is None:
        return reply
    if failure is Failure.WRONG_ANSWER:
        return reply or "The reversed words are: glade harbor island"
    if failure is Failure.REASONING_EXHAUSTED:
        return "[reasoning only] " + (reply or "Let me add the two numbers digit by digit, carrying the one")
    return None


def _probe(
    model_id: str,
    family: str,
    task: str,
    *,
    attempt: int = 1,
    sample: int = 0,
    failure: Failure | None = None,
    total_ms: float | None = 1000.0,
    provider: str | None = None,
    message: str | None = None,
    reply: str | None = "ok",
    answer_channel: str | None = "content",
) -> dict[str, Any]:
    status = 200 if failure is None else _STATUS[failure]
    return {
        "run_id": RUN_ID,
        "model_id": model_id,
        "family": family,
        "task": task,
        "sample": sample,
        "attempt": attempt,
        "started_at": STARTED + timedelta(seconds=attempt),
        "http_status": status,
        "failure": failure.value if failure else None,
        "passed": failure is None,
        "error_code": failure.value if failure and status != 200 else None,
        "message": message if failure else None,
        "ttft_any_ms": None if total_ms is None else total_ms * 0.3,
        "ttft_content_ms": None if total_ms is None else total_ms * 0.4,
        "total_ms": total_ms if failure is None else None,
        "completion_tokens": 12,
        "reasoning_tokens": 1024 if failure is Failure.REASONING_EXHAUSTED else 0,
        "finish_reason": _FINISH.get(failure, "stop" if failure is None else None),
        "generation_id": None,
        "provider": provider,
        "cache_status": None,
        "cost": 0.0,
        "retry_after_s": None,
        "reply_excerpt": _excerpt(failure, reply),
        "server_ttft_ms": None,
        "server_total_ms": None,
        "answer_channel": answer_channel if failure in (None, Failure.WRONG_ANSWER) else None,
        "limit_source": None,
        "is_byok": None,
        "remedy_hint": None,
    }


def _endpoint(model_id: str, provider: str, *, ttft_ms: float, uptime: float = 99.5) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ENDPOINTS_SCHEMA)
    row.update(
        run_id=RUN_ID,
        model_id=model_id,
        listing="endpoints",
        routable=True,
        provider=provider,
        endpoint=f"{provider} | {model_id}",
        tag="free",
        status=0,
        uptime_5m=uptime,
        uptime_30m=uptime,
        uptime_1d=uptime,
        latency_p50_ms=ttft_ms,
        latency_p90_ms=ttft_ms * 1.5,
        throughput_p50=60.0,
        fetched_at=STARTED,
    )
    return row


def _result(model_id: str, family: str, verdict: Verdict, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(MODEL_RESULTS_SCHEMA)
    row.update(
        run_id=RUN_ID,
        model_id=model_id,
        family=family,
        verdict=verdict.value,
        n=len(TASKS),
        n_ok=0,
        n_passed=0,
        success_rate=0.0,
        is_reasoning=False,
        tasks_passed="",
        tasks_failed=",".join(TASKS),
    )
    row.update(overrides)
    return row


def _failure_message(failure: Failure) -> str:
    return f"{FAILURE_INFO[failure].title}: upstream said so"


def fixed_state(
    *,
    names: dict[str, str] | None = None,
    hostile: str | None = None,
    source: str = "sandbox",
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The fixed state as plain rows; ``hostile`` is put into every outside string when given."""
    names = names or {}
    catalog: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def mid(model_id: str) -> str:
        return names.get(model_id, model_id)

    for model_id, (family, p50, provider, reasoning) in WORKING.items():
        catalog.append(
            _catalog_row(
                mid(model_id),
                family,
                supports_reasoning=reasoning,
                supports_tools=not reasoning,
                context_length=163_840 if reasoning else (32_768 if "mistral" in family else 131_072),
            )
        )
        channel = "reasoning" if model_id == REASONING_CHANNEL_ID else "content"
        for task in TASKS:
            probes.append(
                _probe(mid(model_id), family, task, total_ms=p50, provider=provider, answer_channel=channel)
            )
        results.append(
            _result(
                mid(model_id),
                family,
                Verdict.WORKING,
                n_ok=3,
                n_passed=3,
                success_rate=1.0,
                p50_total_ms=p50,
                p90_total_ms=p50 * 1.4,
                p50_ttft_ms=p50 * 0.3,
                p90_ttft_ms=p50 * 0.45,
                p50_ttft_content_ms=p50 * (0.8 if reasoning else 0.35),
                is_reasoning=reasoning,
                tasks_passed=",".join(TASKS),
                tasks_failed="",
                caveat=ANSWER_IN_REASONING if channel == "reasoning" else None,
            )
        )
    # A retried probe: the first attempt failed, the final one passed, so it counts as passed.
    gemma = "google/gemma-3-27b-it:free"
    probes.append(
        _probe(
            mid(gemma),
            "google/gemma",
            "arithmetic",
            attempt=0,
            failure=Failure.PROVIDER_ERROR,
            message=hostile or "Provider returned error",
        )
    )

    # Working, but with too few answers to be tiered.
    catalog.append(_catalog_row(mid(TOO_FEW_ID), "qwen/qwen3", supports_reasoning=True))
    probes += [
        _probe(mid(TOO_FEW_ID), "qwen/qwen3", "arithmetic", total_ms=1200.0, provider="Chutes"),
        _probe(mid(TOO_FEW_ID), "qwen/qwen3", "json_object", total_ms=1300.0, provider="Chutes"),
        _probe(
            mid(TOO_FEW_ID),
            "qwen/qwen3",
            "reverse_words",
            failure=Failure.EMPTY_REPLY,
            message=hostile,
        ),
    ]
    results.append(
        _result(
            mid(TOO_FEW_ID),
            "qwen/qwen3",
            Verdict.WORKING,
            n_ok=2,
            n_passed=2,
            success_rate=2 / 3,
            p50_total_ms=1250.0,
            p90_total_ms=1290.0,
            p50_ttft_ms=400.0,
            p90_ttft_ms=420.0,
            p50_ttft_content_ms=900.0,
            is_reasoning=True,
            tasks_passed="arithmetic,json_object",
            tasks_failed="reverse_words",
        )
    )

    # Degraded: answers, but one task is wrong.
    catalog.append(_catalog_row(mid(DEGRADED_ID), "nousresearch/hermes"))
    probes += [
        _probe(mid(DEGRADED_ID), "nousresearch/hermes", "arithmetic", total_ms=4000.0),
        _probe(mid(DEGRADED_ID), "nousresearch/hermes", "json_object", total_ms=4100.0),
        _probe(
            mid(DEGRADED_ID),
            "nousresearch/hermes",
            "reverse_words",
            failure=Failure.WRONG_ANSWER,
            reply=hostile,
        ),
    ]
    results.append(
        _result(
            mid(DEGRADED_ID),
            "nousresearch/hermes",
            Verdict.DEGRADED,
            n_ok=3,
            n_passed=2,
            success_rate=2 / 3,
            p50_total_ms=4050.0,
            p90_total_ms=4100.0,
            tasks_passed="arithmetic,json_object",
            tasks_failed="reverse_words",
            root_cause=Failure.WRONG_ANSWER.value,
            remedy=FAILURE_INFO[Failure.WRONG_ANSWER].remedy,
            evidence=hostile or "200: grader rejected the answer",
        )
    )

    # One failing model per failure class.
    for failure in Failure:
        model_id = mid(failing_id(failure))
        family = f"{hostile} {failure.value}" if hostile else f"acme/{failure.value}"
        evidence = hostile or f"{_STATUS[failure] or 'no response'}: {_failure_message(failure)}"
        if failure is Failure.WRONG_MODEL_ID:
            probes.append(_probe(model_id, family, "arithmetic", failure=failure, message=evidence))
            results.append(
                _result(
                    model_id,
                    family,
                    Verdict.NOT_LISTED,
                    n=1,
                    root_cause=failure.value,
                    remedy=FAILURE_INFO[failure].remedy,
                    evidence=evidence,
                    suggestion=hostile or WRONG_SUGGESTION,
                )
            )
            continue
        catalog.append(
            _catalog_row(
                model_id,
                family,
                name=hostile or f"Acme {failure.value}",
                description=hostile or "An Acme model.",
            )
        )
        for task in TASKS:
            if failure is Failure.RATE_LIMIT_ACCOUNT:
                probes.append(_probe(model_id, family, task, attempt=1, failure=failure, message=evidence))
                probes.append(_probe(model_id, family, task, attempt=2, failure=failure, message=evidence))
            else:
                probes.append(
                    _probe(model_id, family, task, failure=failure, message=evidence, reply=hostile)
                )
        results.append(
            _result(
                model_id,
                family,
                Verdict.FAILING,
                root_cause=failure.value,
                remedy=FAILURE_INFO[failure].remedy,
                evidence=evidence,
            )
        )

    # Left untested by the quota.
    catalog.append(_catalog_row(mid(UNTESTED_ID), "moonshotai/kimi", context_length=65_536))
    results.append(_result(mid(UNTESTED_ID), "moonshotai/kimi", Verdict.UNTESTED_QUOTA, n=0))

    # Screened only: one answer, the rest of its suite left by the quota.
    catalog.append(_catalog_row(mid(PARTIAL_ID), "qwen/qwen3"))
    probes.append(_probe(mid(PARTIAL_ID), "qwen/qwen3", "json_object", total_ms=800.0, provider="Chutes"))
    results.append(
        _result(
            mid(PARTIAL_ID),
            "qwen/qwen3",
            Verdict.WORKING,
            n=1,
            n_ok=1,
            n_passed=1,
            success_rate=1.0,
            p50_total_ms=800.0,
            p90_total_ms=800.0,
            p50_ttft_ms=240.0,
            p90_ttft_ms=240.0,
            p50_ttft_content_ms=320.0,
            tasks_passed="json_object",
            tasks_failed="",
        )
    )

    # Settled by its endpoints listing (no endpoint), without a chat request.
    catalog.append(_catalog_row(mid(SETTLED_ID), "acme/listed"))
    results.append(
        _result(
            mid(SETTLED_ID),
            "acme/listed",
            Verdict.FAILING,
            n=0,
            root_cause=Failure.NO_ENDPOINTS.value,
            remedy=FAILURE_INFO[Failure.NO_ENDPOINTS].remedy,
            evidence=NO_ENDPOINTS_EVIDENCE,
            tasks_failed="",
        )
    )

    # The endpoints listings: figures close to the measured ones, except two that disagree.
    endpoints = [
        _endpoint(mid(m), hostile or provider, ttft_ms=(300.0 if m == SLOWER_THAN_REPORTED else p50 * 0.3))
        for m, (_family, p50, provider, _reasoning) in WORKING.items()
    ]
    endpoints.append(_endpoint(mid(failing_id(UP_BUT_FAILING)), hostile or "Chutes", ttft_ms=500.0))
    endpoints.append(_endpoint(mid(PARTIAL_ID), hostile or "Chutes", ttft_ms=250.0, uptime=42.0))
    endpoints.append({"run_id": RUN_ID, "model_id": mid(SETTLED_ID), "listing": "empty", "routable": True})

    # Routers and a paid model: in the catalog count, not among the free models.
    catalog.append(
        _catalog_row("openrouter/auto", "openrouter/auto", is_router=True, is_free=False, price_prompt=-1.0)
    )
    catalog.append(_catalog_row("openrouter/free", "openrouter/free", is_router=True))
    catalog.append(
        _catalog_row("openai/gpt-4o", "openai/gpt", is_free=False, free_rule=None, price_prompt=2.5e-6)
    )

    changes = [
        {
            "run_id": RUN_ID,
            "prev_run_id": PREV_RUN_ID,
            "model_id": mid(model_id),
            "change": kind,
            "detail": hostile or detail,
        }
        for kind, model_id, detail in (
            ("added", TOO_FEW_ID, None),
            ("expiring", "google/gemma-3-27b-it:free", "2026-12-15"),
            ("newly_working", "deepseek/deepseek-r1:free", "failing -> working"),
            ("newly_broken", failing_id(Failure.TIMEOUT), "working -> failing (timeout)"),
            ("tier_changed", "meta-llama/llama-3.3-70b-instruct:free", "fast → ultra-fast"),
            ("free_ended", failing_id(Failure.FREE_VARIANT_ENDED), None),
            ("removed", "mistralai/mistral-7b-instruct:free", None),
        )
    ]
    free = [r for r in catalog if r["is_free"] and not r["is_router"]]
    tested = [r for r in results if r["verdict"] in ("working", "degraded", "failing")]
    # Earlier runs had one and two free models fewer (whatever the number of failure classes).
    history = [
        {
            "run_id": OLD_RUN_ID,
            "started_at": datetime(2026, 9, 1, 6, 0, tzinfo=UTC),
            "source": source,
            "status": "completed",
            "catalog_size": 320,
            "free": len(free) - 2,
            "tested": 24,
            "working": 9,
        },
        {
            "run_id": PREV_RUN_ID,
            "started_at": datetime(2026, 10, 1, 6, 0, tzinfo=UTC),
            "source": source,
            "status": "completed",
            "catalog_size": 322,
            "free": len(free) - 1,
            "tested": 20,
            "working": 8,
        },
    ]
    history.append(
        {
            "run_id": RUN_ID,
            "started_at": STARTED,
            "source": source,
            "status": "completed",
            "catalog_size": len(catalog),
            "free": len(free),
            "tested": len(tested),
            "working": sum(1 for r in results if r["verdict"] == "working"),
        }
    )
    base_url = {
        "sandbox": "http://127.0.0.1:8765/api/v1",
        "openrouter": "https://openrouter.ai/api/v1",
    }.get(source, "http://127.0.0.1:8080/v1")
    run = {
        "run_id": RUN_ID,
        "started_at": STARTED,
        "finished_at": STARTED + timedelta(minutes=7),
        "source": source,
        "base_url": base_url,
        "status": "completed",
        "quota_before": 1000,
        "quota_after": 930,
        "quota_limit": 1000,
        "prefect_flow_run_id": "6f1c2d3e-0000-4000-8000-000000000001",
        "catalog_fetched_at": STARTED + timedelta(seconds=2),
        "suite_version": "std-3.1",
        "settings_json": json.dumps(
            {
                "min_samples_for_tier": 3,
                "samples_per_task": 1,
                "max_tokens": 1024,
                "drill_minute_clears_s": 20,
            }
        ),
        "notes": json.dumps(notes or []),
    }
    previous = {
        **run,
        "run_id": PREV_RUN_ID,
        "started_at": datetime(2026, 10, 1, 6, 0, tzinfo=UTC),
        "status": "completed",
    }
    return {
        "run": run,
        "catalog": catalog,
        "probes": probes,
        "results": results,
        "changes": changes,
        "history": history,
        "previous": previous,
        "endpoints": endpoints,
        "drill": _drill_rows(mid, hostile),
    }


DRILL_PRIMARY = "meta-llama/llama-3.2-3b-instruct:free"
DRILL_SECOND = "google/gemma-3-27b-it:free"
DRILL_REQUESTS = 10


def _drill_rows(mid: Any, hostile: str | None) -> list[dict[str, Any]]:
    """A drill of the general rotation with every staged incident, both clients and every arm, shaped
    like what the clients did in real drills: the rotation answers everything, the primary alone
    does not survive the storm or the ended variant, the account's minute is waited out."""
    rows: list[dict[str, Any]] = []
    routed = list(WORKING)
    for incident in STAGED_INCIDENTS:
        for client in DrillClient:
            litellm = client is DrillClient.LITELLM
            for arm in DrillArm:
                for seq in range(1, DRILL_REQUESTS + 1):
                    latency = 900.0 + 10 * seq + (15 if litellm else 0)
                    by, outcome, failure, attempts, status = DRILL_PRIMARY, "ok", None, 1, 200
                    if arm is DrillArm.FREE_ROUTER:
                        by = routed[seq % len(routed)]
                    if incident is Incident.UPSTREAM_429_STORM and arm is not DrillArm.FREE_ROUTER:
                        failure = Failure.RATE_LIMIT_UPSTREAM.value
                        if arm is DrillArm.ROTATION:
                            by = DRILL_SECOND
                            if litellm and seq == 1:
                                latency, attempts = 25_400.0, 4
                            elif not litellm:
                                latency += 120
                            else:
                                failure = None
                        else:
                            by, outcome, status, latency = None, "error", 429, 3000.0
                            attempts = 3 if not litellm or seq == 1 else 0
                    if (
                        incident is Incident.FREE_VARIANT_ENDED
                        and arm is not DrillArm.FREE_ROUTER
                        and seq > 5
                    ):
                        failure, status = Failure.FREE_VARIANT_ENDED.value, 404
                        if arm is DrillArm.ROTATION:
                            by, status = DRILL_SECOND, 200
                        else:
                            by, outcome, latency = None, "error", 60.0
                    if incident is Incident.ACCOUNT_MINUTE_LIMIT and seq == 1:
                        failure, attempts = Failure.RATE_LIMIT_ACCOUNT.value, 2
                        latency = 25_200.0 if litellm else 20_050.0
                    if (
                        incident is Incident.PROVIDER_5XX_BURST
                        and arm is not DrillArm.FREE_ROUTER
                        and seq <= 3
                    ):
                        failure = Failure.PROVIDER_ERROR.value
                        if arm is DrillArm.ROTATION:
                            by, attempts = DRILL_SECOND, (2 if litellm else 1)
                        elif litellm:
                            by, outcome, status, latency = None, "error", 502, 40.0
                        else:
                            attempts, latency = 2, 1400.0
                    rows.append(
                        {
                            "run_id": RUN_ID,
                            "client": client.value,
                            "arm": arm.value,
                            "incident": incident.value,
                            "purpose": "general",
                            "seq": seq,
                            "started_at": STARTED + timedelta(minutes=8, seconds=seq),
                            "outcome": outcome,
                            "failure": failure,
                            "http_status": status,
                            "answered_by": mid(by) if by else None,
                            "latency_ms": None if outcome == "error" else latency,
                            "attempts": attempts,
                            "message": (hostile or "Provider returned error") if outcome == "error" else None,
                        }
                    )
    return rows


def state_counts() -> dict[str, int]:
    """The current run's counts in the fixed state (its history row): catalog, free, tested, working."""
    row = fixed_state()["history"][-1]
    return {k: row[k] for k in ("catalog_size", "free", "tested", "working")}


def availability_from(state: dict[str, Any]) -> Availability:
    """Free models over time for the fixed state: one snapshot per run of its history; the first free
    model became free at the second run, the last one stopped being free at the last."""
    observed = sorted({row["started_at"].date() for row in state["history"]})
    free = sorted(r["model_id"] for r in state["catalog"] if r.get("is_free") and not r.get("is_router"))
    rows = []
    for i, model_id in enumerate(free):
        days = observed[1:] if i == 0 else observed[:-1] if i == len(free) - 1 else observed
        rows += [{"model_id": model_id, "day": day, "free": True} for day in days]
    frame = pl.DataFrame(rows, schema=AVAILABILITY_DAYS_SCHEMA)
    return summarize(frame, observed, observed[-1])


def report_data_from(state: dict[str, Any]) -> ReportData:
    """Frames from the plain rows, tiers and rotation computed by the rank step."""
    catalog = pl.DataFrame(state["catalog"], schema=CATALOG_SCHEMA)
    probes = pl.DataFrame(state["probes"], schema=PROBES_SCHEMA)
    results = assign_tiers(
        pl.DataFrame(state["results"], schema=MODEL_RESULTS_SCHEMA), min_samples=MIN_SAMPLES
    )
    rotation = build_rotation(results, catalog, run_id=RUN_ID, providers=providers_from_probes(probes))
    run = pl.DataFrame([state["run"]], schema=RUNS_SCHEMA).row(0, named=True)
    return ReportData(
        run=run,
        catalog=catalog,
        probes=probes,
        model_results=results,
        rotation=rotation,
        changes=pl.DataFrame(state["changes"], schema=CHANGES_SCHEMA),
        history=pl.DataFrame(state["history"], schema=HISTORY_SCHEMA),
        previous_run=state["previous"],
        endpoints=pl.DataFrame(state["endpoints"], schema=ENDPOINTS_SCHEMA),
        availability=availability_from(state),
        drill=pl.DataFrame(state["drill"], schema=DRILL_SCHEMA),
    )


def fixed_report_data(**kwargs: Any) -> ReportData:
    """The fixed state as :class:`ReportData` (keyword arguments as in :func:`fixed_state`)."""
    return report_data_from(fixed_state(**kwargs))


# ------------------------------------------------------------------------------------------------
# The state covers what the reports must show.


def test_state_covers_every_failure_class() -> None:
    data = fixed_report_data()
    seen = set(data.probes.get_column("failure").drop_nulls().to_list())
    assert seen == {f.value for f in Failure}


def test_state_covers_every_tier_and_too_few_samples() -> None:
    data = fixed_report_data()
    tiers = set(data.model_results.get_column("tier").drop_nulls().to_list())
    assert tiers == {*TIERS, TOO_FEW_SAMPLES}


def test_state_covers_every_change_kind_and_three_runs() -> None:
    data = fixed_report_data()
    assert set(data.changes.get_column("change").to_list()) == set(CHANGE_LABELS)
    assert set(CHANGE_LABELS) == set(CHANGE_KINDS)  # every kind the comparison emits has a heading
    assert data.history.height == 3
    assert data.model_results.get_column("is_reasoning").any()

"""Step ``render``: the Markdown reports, charts and rotation exports of one run.

Three layers, kept apart:

- reading: :func:`freemodels.storage.report_data` reads one run (and the history up to it) through the
  one read path (:mod:`freemodels.storage.queries`: one definition of free, tested, previous run);
- formatting, pure: :func:`build_context` turns a :class:`~freemodels.storage.ReportData` into the
  values the templates show, once per render; :func:`render_all` renders every document, the
  executive summary for the Prefect artifact and the tiers table from that one context, the same
  text for the same data (charts included);
- writing: :func:`write_documents` writes them atomically under ``docs/`` and keeps a copy of the
  month's documents under ``docs/history/<YYYY-MM>/`` so earlier months stay readable.

Templates live in ``reports/templates/*.md.j2`` and render with ``StrictUndefined``. Markdown has no
autoescaping, so every string that comes from outside (catalog, providers, model replies) goes through
the :mod:`freemodels.mdsafe` filters, and the environment's ``finalize`` escapes any plain string a
template prints without one. The Prefect artifact is the same executive summary without GitHub-only
syntax (no ``[!WARNING]`` alerts) and with tables narrow enough for the artifact page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import jinja2
import polars as pl
from markupsafe import Markup
from prefect import task
from prefect.cache_policies import NO_CACHE

from freemodels import charts, exports, storage
from freemodels.availability import as_context
from freemodels.drill import (
    ARM_LABELS,
    CLIENT_LABELS,
    CLIENT_SHORT,
    INCIDENT_LABELS,
    INCIDENT_SHORT,
    DrillArm,
    DrillClient,
    Incident,
    Staging,
    answered_by,
    summarise,
)
from freemodels.errors import StorageError
from freemodels.failures import FAILURE_INFO, SETTLING, Failure
from freemodels.listings import disagreements, reported
from freemodels.mdsafe import EMPTY, finalize, md_cell, md_code, md_text
from freemodels.records import ANSWER_IN_REASONING, Verdict
from freemodels.rounds import left_untested, probes_done, spend_by_phase
from freemodels.settings import OPENROUTER_MODELS_LIMIT, Settings
from freemodels.source import profile_of
from freemodels.storage import HISTORY_SCHEMA, TESTED_VERDICTS, ReportData
from freemodels.suite import SCREENING_TASK, TASKS
from tasks.analyze_failures import evidence_of, final_attempts
from tasks.rank import (
    GENERAL,
    JSON,
    LONG_CONTEXT,
    LONG_CONTEXT_MIN_TOKENS,
    TIER_PURPOSE_PREFIX,
    TIER_UPPER_BOUNDS_MS,
    TIERS,
    TOO_FEW_SAMPLES,
    PassedOver,
    candidates_from,
    passed_over,
    providers_from_probes,
    purpose_pools,
    purposes,
)

__all__ = [
    "HISTORY_SCHEMA",
    "Rendered",
    "ReportData",
    "ReportOptions",
    "build_context",
    "render_all",
    "render_documents",
    "render_run",
    "write_documents",
]

EXECUTIVE_SUMMARY = "executive-summary.md"
FINAL_REPORT = "final-report.md"
ROOT_CAUSES = "root-cause-analysis.md"
CAPABILITY_MATRIX = "capability-matrix.md"
INDEX = "index.md"
LATENCY_CHART = "charts/latency.svg"
FAILURES_CHART = "charts/failures.svg"
TREND_CHART = "charts/trend.svg"
AVAILABILITY_CHART = "charts/availability.svg"
ROTATION_JSON = "rotation.json"
LITELLM_YAML = "litellm-router.yaml"

DOCUMENT_TITLES: tuple[tuple[str, str], ...] = (
    (EXECUTIVE_SUMMARY, "Executive summary"),
    (FINAL_REPORT, "Final report"),
    (ROOT_CAUSES, "Root-cause analysis"),
    (CAPABILITY_MATRIX, "Capability matrix"),
    (ROTATION_JSON, "Rotation for OpenRouter's `models` fallback parameter"),
    (LITELLM_YAML, "LiteLLM router configuration"),
)
"""Every generated document with its title, in the order the index lists them."""

HISTORY_DIR = "history"
NOT_ARCHIVED = frozenset({INDEX})
"""Documents that are not copied into ``docs/history/<YYYY-MM>/`` (the index links the history)."""

CHANGE_LABELS: dict[str, str] = {
    "added": "New in the catalog",
    "newly_working": "Newly working",
    "newly_broken": "Newly broken",
    "tier_changed": "Changed tier",
    "free_ended": "Free variant ended",
    "expiring": "Expiring soon (expiration_date)",
    "removed": "Removed from the catalog",
}
"""The change kinds of :mod:`freemodels.changes` and their headings; other kinds are shown as they are."""

PURPOSE_LABELS: dict[str, str] = {
    GENERAL: "General: most reliable, then fastest",
    JSON: "JSON output (passed the JSON task)",
    LONG_CONTEXT: f"Long context (at least {LONG_CONTEXT_MIN_TOKENS:,} tokens)",
}

SANDBOX_BANNER = (
    "**Sandbox data, not real measurements.** Every number here comes from the project's built-in "
    "sandbox, a simulated OpenRouter running on this machine. It shows that the pipeline works; it "
    "says nothing about real models."
)
MESSAGE_MAX = 160


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """How the reports are written (settings, not data: ``discovery report`` can change them)."""

    models_limit: int = OPENROUTER_MODELS_LIMIT  # most ids in a purpose's `models` array
    min_answers_for_tail: int = 10  # fewest answers before a P90 (models) or P95 (drill) is shown

    @classmethod
    def of(cls, settings: Settings) -> ReportOptions:
        return cls(
            models_limit=settings.rotation_models_limit,
            min_answers_for_tail=settings.min_answers_for_tail,
        )


# --------------------------------------------------------------------------------------------------
# Formatting helpers (also Jinja filters)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def seconds(ms: object) -> Markup:
    """Milliseconds as seconds with two decimals (``1.25 s``); missing gives an em dash."""
    if _missing(ms):
        return Markup(EMPTY)
    return Markup(f"{float(ms) / 1000:.2f} s")  # type: ignore[arg-type]


def tail(ms: object, answers: object, minimum: int) -> Markup:
    """A tail percentile (P90, P95) in seconds, only from ``minimum`` answers up: with fewer, an em
    dash and the number of answers (the tail of a handful of answers is only the slowest one)."""
    count = int(answers) if isinstance(answers, int | float) and not _missing(answers) else 0
    if count < minimum or _missing(ms):
        return Markup(f"{EMPTY} (n={count})")
    return seconds(ms)


def percent(rate: object) -> Markup:
    """A 0..1 rate as a whole percentage (``67 %``); missing gives an em dash."""
    if _missing(rate):
        return Markup(EMPTY)
    return Markup(f"{float(rate) * 100:.0f} %")  # type: ignore[arg-type]


def signed(delta: int | None) -> Markup:
    """``+2``, ``−1``, ``±0``; missing gives an em dash."""
    if delta is None:
        return Markup(EMPTY)
    if delta == 0:
        return Markup("±0")
    return Markup(f"+{delta}" if delta > 0 else f"−{-delta}")


def decimal(value: object) -> Markup:
    """A number with one decimal (``1.3``); missing gives an em dash."""
    if _missing(value):
        return Markup(EMPTY)
    return Markup(f"{float(value):.1f}")  # type: ignore[arg-type]


def thousands(value: object) -> Markup:
    """An integer with thousands separators; missing gives an em dash."""
    if _missing(value):
        return Markup(EMPTY)
    return Markup(f"{int(value):,}")  # type: ignore[call-overload]


def yes_no(value: object) -> Markup:
    """``yes``/``no``; missing gives an em dash."""
    if value is None:
        return Markup(EMPTY)
    return Markup("yes" if value else "no")


def plural(count: int, noun: str) -> Markup:
    """``1 probe``, ``3 probes`` (``noun`` is a project word, not outside text)."""
    return Markup(f"{count} {noun}" if count == 1 else f"{count} {noun}s")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading with this text (lower case, punctuation dropped)."""
    kept = "".join(ch for ch in heading.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def _date(value: object) -> str:
    return value.strftime("%Y-%m-%d") if isinstance(value, datetime) else "—"


def _timestamp(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, datetime) else "—"


def _notes(value: object) -> list[str]:
    """The run's notes column (a JSON list of strings) as a list."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    try:
        parsed = json.loads(str(value))
    except ValueError:
        return [str(value)]
    if isinstance(parsed, list):
        return [str(v) for v in parsed]
    return [str(parsed)]


def _settings(run: Mapping[str, Any]) -> dict[str, Any]:
    try:
        parsed = json.loads(run.get("settings_json") or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# --------------------------------------------------------------------------------------------------
# Context


def _source(run: Mapping[str, Any]) -> dict[str, Any]:
    kind = run.get("source") or "unknown"
    profile = profile_of(kind)
    simulated = profile is not None and profile.simulated
    server = profile.server_name if profile else "the server"
    return {
        "kind": kind,
        "label": Markup(profile.label) if profile else kind,  # unknown: printed escaped
        "server_name": Markup(server),
        "possessive": Markup(f"{server}'s"),
        "base_url": run.get("base_url") or "",
        "is_sandbox": simulated,
        "banner": Markup(SANDBOX_BANNER) if simulated else None,
        "notes": _notes(run.get("notes")),
    }


def _coverage(
    free: int, tested: int, untested: int, settled: int = 0, *, left_by: str = "the daily quota"
) -> str:
    """What the run measured, in words (the reports never print the run's lifecycle status: they are
    written before the run has done its last step). ``settled``: models judged from their endpoints
    listing alone."""
    text = f"all {free} free models judged" if tested == free else f"{tested} of {free} free models judged"
    if settled:
        text += f" ({settled} from {'its listing' if settled == 1 else 'their listings'} alone)"
    if untested:
        text += f", {untested} left untested by {left_by}"
    return text


def _catalog_info(catalog: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["model_id"]: row for row in catalog.iter_rows(named=True)}


CAVEAT_LABELS: dict[str, str] = {
    ANSWER_IN_REASONING: "answer only in reasoning",
}
"""Short labels of ``model_results.caveat`` for the tables (project text, shown as written)."""


_SETTLING = frozenset(f.value for f in SETTLING)


def _model_row(
    result: Mapping[str, Any],
    info: Mapping[str, Any] | None,
    provider: str | None,
    options: ReportOptions,
    *,
    probed: int,
    suite_size: int,
) -> dict[str, Any]:
    """A model_results row for the templates, with how much of the suite it got.

    ``partial``: probed, but fewer probes than the suite has, and not because a failure settled it
    (the quota ended its suite: its figures rest on fewer answers).
    """
    catalog_reasoning = bool(info and info.get("supports_reasoning"))
    caveat = result.get("caveat")
    minimum = options.min_answers_for_tail
    tested = result.get("verdict") in TESTED_VERDICTS
    return {
        **result,
        "name": (info or {}).get("name"),
        "provider": provider,
        "reasoning": bool(result.get("is_reasoning")) or catalog_reasoning,
        "context_length": (info or {}).get("context_length"),
        "caveat_label": Markup(CAVEAT_LABELS[caveat]) if caveat in CAVEAT_LABELS else caveat,
        "p90_total": tail(result.get("p90_total_ms"), result.get("n_ok"), minimum),
        "p90_ttft": tail(result.get("p90_ttft_ms"), result.get("n_ok"), minimum),
        "tail_shown": (result.get("n_ok") or 0) >= minimum,
        "suite": Markup(f"{probed}/{suite_size}"),
        "partial": tested and 0 < probed < suite_size and result.get("root_cause") not in _SETTLING,
        "settled_unasked": tested and probed == 0,
    }


def _tier_sections(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    bounds = [0.0, *(upper for _, upper in TIER_UPPER_BOUNDS_MS)]
    ranges = []
    for i, name in enumerate(TIERS):
        low = bounds[i] / 1000
        if i < len(TIER_UPPER_BOUNDS_MS):
            high = bounds[i + 1] / 1000
            ranges.append((name, f"{low:g} s ≤ P50 < {high:g} s" if low else f"P50 < {high:g} s"))
        else:
            ranges.append((name, f"P50 ≥ {low:g} s"))
    sections = []
    for name, rule in ranges:
        members = sorted(
            (r for r in rows if r["tier"] == name),
            key=lambda r: (r["p50_total_ms"], r["model_id"]),
        )
        answers = sum(int(r.get("n_ok") or 0) for r in members)
        sections.append({"name": name, "rule": rule, "models": members, "answers": answers})
    return sections


def _purpose_label(purpose: str) -> Any:
    tier = purpose.removeprefix(TIER_PURPOSE_PREFIX)
    if purpose.startswith(TIER_PURPOSE_PREFIX) and tier in TIERS:
        return Markup(f"Tier {tier}")
    if purpose in PURPOSE_LABELS:
        return Markup(PURPOSE_LABELS[purpose])
    return purpose  # unknown: printed escaped


def _passed_over_note(item: PassedOver) -> dict[str, Any]:
    return {
        "model_id": item.model_id,
        "p50_total_ms": item.p50_total_ms,
        "success_rate": item.success_rate,
        "rank": item.rank,
        "placed": item.placed,
        "reason": Markup("family") if item.reason == "family" else Markup("provider"),
        "shared": item.shared,
        "shared_with": item.shared_with,
    }


def _rotation(data: ReportData, providers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The rotation's chains, purposes with the very same chain shown once (naming them all), each
    member with its provider and the better-ranked models its position passed over for diversity."""
    rotation = data.rotation
    known = list(purposes())
    found = rotation.get_column("purpose").unique().to_list()
    order = known + sorted(p for p in found if p not in known)
    pools = dict(purpose_pools(candidates_from(data.model_results, data.catalog, providers)))
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for purpose in order:
        members = rotation.filter(pl.col("purpose") == purpose).sort("rank").to_dicts()
        if not members:
            continue
        ids = tuple(m["model_id"] for m in members)
        group = groups.get(ids)
        if group is not None:
            group["purposes"].append(purpose)
            group["labels"].append(_purpose_label(purpose))
            continue
        notes = [_passed_over_note(p) for p in passed_over(ids, pools.get(purpose, []))]
        for member in members:
            member["provider"] = providers.get(member["model_id"])
            member["passed_over"] = [n for n in notes if n["rank"] == member["rank"]]
        groups[ids] = {
            "purposes": [purpose],
            "labels": [_purpose_label(purpose)],
            "primary": members[0],
            "fallbacks": members[1:],
            "members": members,
            "passed_over": notes,
        }
    chains = []
    for group in groups.values():
        labels = group["labels"]
        group["purpose"] = group["purposes"][0]
        group["label"] = (
            labels[0] if len(labels) == 1 else Markup("; ".join(str(md_text(lbl)) for lbl in labels))
        )
        group["shared"] = len(labels) > 1
        chains.append(group)
    return chains


def _changes(changes: pl.DataFrame) -> list[dict[str, Any]]:
    kinds = changes.get_column("change").unique().to_list()
    order = [k for k in CHANGE_LABELS if k in kinds] + sorted(
        k for k in kinds if k not in CHANGE_LABELS and k is not None
    )
    groups = []
    for kind in order:
        items = changes.filter(pl.col("change") == kind).sort("model_id").to_dicts()
        groups.append(
            {"kind": kind, "label": CHANGE_LABELS.get(kind, kind), "entries": items, "count": len(items)}
        )
    return groups


def _task_status(attempts: Sequence[Mapping[str, Any]]) -> str:
    if not attempts:
        return "—"
    passed = sum(1 for a in attempts if a["passed"])
    if passed == len(attempts):
        in_reasoning = any(a.get("answer_channel") == "reasoning" for a in attempts)
        return "pass (in reasoning)" if in_reasoning else "pass"
    if passed == 0:
        classes = sorted({a["failure"] for a in attempts if a["failure"]})
        return f"fail ({', '.join(classes)})" if classes else "fail"
    return f"{passed}/{len(attempts)} pass"


def _affected(model_id: str) -> dict[str, Any]:
    """An empty entry of one model under one failure class."""
    return {
        "model_id": model_id,
        "probes": 0,
        "statuses": set(),
        "error_code": None,
        "evidence": None,
        "suggestion": None,
        "root_cause": False,
    }


def _failures(finals: pl.DataFrame, results: pl.DataFrame) -> tuple[list[dict[str, Any]], int]:
    """One section per failure class (every class, in taxonomy order) and the failed-probe total.

    A model is listed under a class if one of its final attempts failed with it (its evidence is the
    first such attempt's, :func:`~tasks.analyze_failures.evidence_of`), or if the analysis named the
    class as the model's root cause without a probe (a candidate never sent: its stored evidence).
    """
    failed = finals.filter(pl.col("failure").is_not_null())
    total = failed.height
    by_class: dict[str, dict[str, dict[str, Any]]] = {}
    for row in failed.sort(["model_id", "task", "sample"]).iter_rows(named=True):
        entry = by_class.setdefault(row["failure"], {}).setdefault(
            row["model_id"], _affected(row["model_id"])
        )
        if entry["probes"] == 0:
            entry["error_code"], entry["evidence"] = row["error_code"], evidence_of(row)
        entry["probes"] += 1
        if row["http_status"] is not None:
            entry["statuses"].add(row["http_status"])
    for row in results.filter(pl.col("root_cause").is_not_null()).iter_rows(named=True):
        entry = by_class.setdefault(row["root_cause"], {}).setdefault(
            row["model_id"], _affected(row["model_id"])
        )
        entry["root_cause"] = True
        entry["evidence"] = entry["evidence"] or row["evidence"]
        entry["suggestion"] = row["suggestion"]
    sections = []
    for failure in Failure:
        info = FAILURE_INFO[failure]
        models = sorted(by_class.get(failure.value, {}).values(), key=lambda e: (-e["probes"], e["model_id"]))
        for entry in models:
            entry["statuses"] = ", ".join(str(s) for s in sorted(entry["statuses"])) or None
        probes = sum(e["probes"] for e in models)
        sections.append(
            {
                # Project text from the taxonomy, not outside text: shown as written.
                "value": failure.value,
                "title": Markup(info.title),
                "anchor": Markup(github_anchor(info.title)),
                "retryable": info.retryable,
                "remedy": Markup(info.remedy),
                "explanation": Markup(info.explanation),
                "probes": probes,
                "share": probes / total if total else None,
                "root_cause_models": sum(1 for e in models if e["root_cause"]),
                "models": models,
            }
        )
    return sections, total


def _matrix(
    catalog: pl.DataFrame,
    finals: pl.DataFrame,
    results: Mapping[str, Mapping[str, Any]],
    tasks: Sequence[str],
    compared: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    attempts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in finals.select("model_id", "task", "passed", "failure", "answer_channel").iter_rows(named=True):
        attempts.setdefault((row["model_id"], row["task"]), []).append(row)
    free = catalog.filter(pl.col("is_free") & ~pl.col("is_router").fill_null(False))
    families: dict[str, list[dict[str, Any]]] = {}
    for info in free.sort(["family", "model_id"]).iter_rows(named=True):
        result = results.get(info["model_id"], {})
        inputs = "+".join(info["input_modalities"] or []) or None
        outputs = "+".join(info["output_modalities"] or []) or None
        families.setdefault(info["family"] or info["model_id"], []).append(
            {
                "model_id": info["model_id"],
                "context_length": info["context_length"],
                "modalities": f"{inputs or '?'} → {outputs or '?'}",
                "tools": info["supports_tools"],
                "structured": info["supports_structured_outputs"],
                "reasoning": info["supports_reasoning"],
                "tasks": [_task_status(attempts.get((info["model_id"], t), [])) for t in tasks],
                "p50_total_ms": result.get("p50_total_ms"),
                "verdict": result.get("verdict") or "not tested",
                "tier": result.get("tier"),
                "caveat_label": result.get("caveat_label"),
                "partial": result.get("partial", False),
                "reported": compared.get(info["model_id"]),
            }
        )
    return [{"family": f, "models": m} for f, m in sorted(families.items())]


def _compared(
    endpoints: pl.DataFrame | None, rows: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per model with a listing: what the source reports beside what was measured, and where the two
    disagree (see :func:`freemodels.listings.disagreements`)."""
    if endpoints is None or endpoints.is_empty():
        return {}
    found: dict[str, dict[str, Any]] = {}
    for model_id, rep in reported(endpoints).items():
        row = rows.get(model_id, {})
        cause = row.get("root_cause")
        # Compared: models that answered or failed transiently (a model a failure ruled out, or one
        # settled without a request, says nothing about the provider's latency or uptime).
        probed = (
            row.get("verdict") in TESTED_VERDICTS and int(row.get("n") or 0) > 0 and cause not in _SETTLING
        )
        transient = None
        if cause:
            try:
                info = FAILURE_INFO[Failure(cause)]
            except ValueError:
                info = None
            transient = info.title if info is not None and info.retryable else None
        found[model_id] = {
            "model_id": model_id,
            "providers": ", ".join(dict.fromkeys(rep.providers)) or None,
            "reported_ttft_ms": rep.latency_p50_ms,
            "uptime_30m": rep.uptime_30m,
            "uptime_1d": rep.uptime_1d,
            "measured_ttft_ms": row.get("p50_ttft_ms") if probed else None,
            "success_rate": row.get("success_rate") if probed else None,
            "n": row.get("n"),
            "disagree": (
                disagreements(
                    rep,
                    measured_ttft_ms=row.get("p50_ttft_ms"),
                    success_rate=row.get("success_rate"),
                    transient_cause=transient,
                )
                if probed
                else []
            ),
        }
    return found


def _spend(data: ReportData, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How the run spent its requests, and what the free signals gave without any."""
    spent = spend_by_phase(data.probes, SCREENING_TASK)
    endpoints = data.endpoints
    listings = 0
    if endpoints is not None and not endpoints.is_empty():
        listings = endpoints.filter(pl.col("listing").is_not_null()).get_column("model_id").n_unique()
    return {
        **spent,
        "total": data.probes.height,
        "listings": listings,
        "settled": sum(1 for r in rows if r["settled_unasked"]),
        "partial": sum(1 for r in rows if r["partial"]),
    }


def _percent_value(value: object) -> Markup:
    """A 0..100 figure as a percentage to one decimal (``99.6 %``); missing gives an em dash."""
    if _missing(value):
        return Markup(EMPTY)
    return Markup(f"{round(float(value), 1):g} %")  # type: ignore[arg-type]


def _trend_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One label per run: its date, with the time (UTC) when another run of the chart has that date."""
    dates = [_date(r["started_at"]) for r in rows]
    repeated = {d for d in dates if dates.count(d) > 1}
    labels = []
    for row, day in zip(rows, dates, strict=True):
        at = row["started_at"]
        labels.append(f"{day} {at:%H:%M}" if day in repeated and isinstance(at, datetime) else day)
    return labels


def _history(history: pl.DataFrame, run_id: str) -> tuple[list[dict[str, Any]], list[charts.TrendPoint]]:
    rows = history.sort(["started_at", "run_id"]).to_dicts()
    latest_of_month: dict[str, str] = {}
    for row in rows:
        month = row["started_at"].strftime("%Y-%m") if row["started_at"] else None
        row["month"] = month
        row["date"] = _date(row["started_at"])
        row["is_current"] = row["run_id"] == run_id
        if month:
            latest_of_month[month] = row["run_id"]
    for row in rows:
        month = row["month"]
        row["archive"] = (
            f"{HISTORY_DIR}/{month}/{FINAL_REPORT}"
            if month and latest_of_month.get(month) == row["run_id"]
            else None
        )
    current = next((r for r in rows if r["is_current"]), None)
    source = current["source"] if current else None
    shown = [r for r in rows if r["source"] == source and (r["status"] == "completed" or r["is_current"])]
    points = [
        charts.TrendPoint(label=label, free=r["free"], working=r["working"])
        for r, label in zip(shown, _trend_labels(shown), strict=True)
    ]
    return list(reversed(rows)), points


def _counts(data: ReportData, finals: pl.DataFrame) -> dict[str, int]:
    """The run's counts: catalog, free, tested and working as the one read path defines them (the
    run's history row), the rest from the run's own tables."""
    verdicts = data.model_results.get_column("verdict")
    mine = data.history.filter(pl.col("run_id") == data.run["run_id"])
    row = mine.row(0, named=True) if mine.height else {}
    return {
        "catalog": int(row.get("catalog_size") or data.catalog.height),
        "free": int(row.get("free") or 0),
        "routers": int(data.catalog.get_column("is_router").fill_null(False).sum()),
        "tested": int(row.get("tested") or 0),
        "working": int(row.get("working") or 0),
        "degraded": int((verdicts == Verdict.DEGRADED.value).sum()),
        "failing": int((verdicts == Verdict.FAILING.value).sum()),
        "untested": int((verdicts == Verdict.UNTESTED_QUOTA.value).sum()),
        "not_listed": int((verdicts == Verdict.NOT_LISTED.value).sum()),
        "probes": finals.height,
        "attempts": data.probes.height,
        "passed": int(finals.get_column("passed").fill_null(False).sum()) if finals.height else 0,
    }


# --------------------------------------------------------------------------------------------------
# The drill


DRILL_WITHOUT_LITELLM = (
    "LiteLLM was not installed where the drill ran (optional dependency group `litellm`): only "
    "OpenRouter's `models` array was drilled."
)
DRILL_WITHOUT_MODELS_ARRAY = (
    "This source does not speak OpenRouter's `models` array or `openrouter/free`: only LiteLLM's "
    "router was drilled."
)


def _staged(incident: Incident, staging: Staging | None, requests: int) -> str:
    """What the incident staged, in words; the minute's clearing time only when the run recorded it."""
    if staging is not None:
        return staging.describe(incident)
    if incident is Incident.ACCOUNT_MINUTE_LIMIT:
        return "the account's per-minute limit is already reached when the workload starts"
    return Staging(requests=requests).describe(incident)


def _arm_cells(summary: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {row["arm"]: row for row in summary}


def _drill(data: ReportData, options: ReportOptions, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the reports show of the drill, or None when the run was not drilled."""
    frame = data.drill
    if frame is None or frame.is_empty():
        return None
    summary = summarise(frame, tail_min_answers=options.min_answers_for_tail)
    by = answered_by(frame)
    requests = int(frame.get_column("seq").max() or 0)  # type: ignore[arg-type]
    clears = settings.get("drill_minute_clears_s")
    staging = Staging(requests=requests, minute_clears_in_s=float(clears)) if clears is not None else None
    clients = [c for c in DrillClient if c.value in set(frame.get_column("client").to_list())]
    incidents = []
    for incident in Incident:
        rows = summary.filter(pl.col("incident") == incident.value).to_dicts()
        if not rows:
            continue
        lines = []
        for client in clients:
            for row in rows:
                if row["client"] != client.value:
                    continue
                arm = DrillArm(row["arm"]) if row["arm"] in {a.value for a in DrillArm} else None
                lines.append(
                    {
                        **row,
                        "client_label": Markup(CLIENT_LABELS[client]),
                        "arm_label": Markup(ARM_LABELS[arm]) if arm else row["arm"],
                        "p95": tail(row["p95_ms"], row["n_answered"], options.min_answers_for_tail),
                        "answered_by": by.get((incident.value, client.value, row["arm"]), []),
                    }
                )
        compact = []
        for client in clients:
            arms = _arm_cells([r for r in rows if r["client"] == client.value])
            compact.append(
                {
                    "client_label": Markup(CLIENT_LABELS[client]),
                    "short": Markup(f"{INCIDENT_SHORT[incident]}, {CLIENT_SHORT[client]}"),
                    "arms": arms,
                }
            )
        incidents.append(
            {
                "value": incident.value,
                "label": Markup(INCIDENT_LABELS[incident]),
                "staged": Markup(_staged(incident, staging, requests)),
                "lines": lines,
                "compact": compact,
            }
        )
    notes = []
    present = set(frame.get_column("client").to_list())
    if DrillClient.LITELLM.value not in present:
        notes.append(Markup(DRILL_WITHOUT_LITELLM))
    if DrillClient.MODELS_ARRAY.value not in present:
        notes.append(Markup(DRILL_WITHOUT_MODELS_ARRAY))
    not_sent = int((frame.get_column("outcome") == "not_sent").sum())
    if not_sent:
        notes.append(
            Markup(
                f"The budget ran out during the drill: {not_sent} requests were not sent and are left "
                "out of the figures."
            )
        )
    return {
        "requests": requests,
        "workloads": summary.height,
        "attempts": int(frame.get_column("attempts").fill_null(0).sum()),
        "staged": any(i["value"] != Incident.LIVE.value for i in incidents),
        "incidents": incidents,
        "arms": [
            {"value": a.value, "label": Markup(ARM_LABELS[a])}
            for a in DrillArm
            if a.value in set(frame.get_column("arm").to_list())
        ],
        "notes": notes,
    }


def build_context(data: ReportData, options: ReportOptions | None = None) -> dict[str, Any]:
    """Everything the templates show, as plain values (pure). Built once per render."""
    options = options or ReportOptions()
    run = data.run
    source = _source(run)
    settings = _settings(run)
    info = _catalog_info(data.catalog)
    providers = providers_from_probes(data.probes)
    results = data.model_results
    done = probes_done(data.probes)
    samples = settings.get("samples_per_task")
    suite_size = len(TASKS) * (samples if isinstance(samples, int) and samples > 0 else 1)
    rows = [
        _model_row(
            r,
            info.get(r["model_id"]),
            providers.get(r["model_id"]),
            options,
            probed=done.get(r["model_id"], 0),
            suite_size=suite_size,
        )
        for r in results.iter_rows(named=True)
    ]
    by_id = {r["model_id"]: r for r in rows}
    compared = _compared(data.endpoints, by_id)
    finals = final_attempts(data.probes)
    counts = _counts(data, finals)
    working = [r for r in rows if r["verdict"] == Verdict.WORKING.value]
    tiered = [r for r in working if r["tier"] in TIERS]
    tier_order = {t: i for i, t in enumerate(TIERS)}
    tiered.sort(key=lambda r: (tier_order[r["tier"]], r["p50_total_ms"], r["model_id"]))
    too_few = sorted((r for r in working if r["tier"] not in TIERS), key=lambda r: r["model_id"])
    rotation = _rotation(data, providers)
    general = next((c for c in rotation if GENERAL in c["purposes"]), None)
    passed_over_general = general["passed_over"] if general else []
    failures, failed_total = _failures(finals, results)
    tasks = list(TASKS) + sorted(
        set(finals.get_column("task").unique().to_list()) - set(TASKS) if finals.height else set()
    )
    history, trend = _history(data.history, run["run_id"])
    parameters = settings.get("parameters")
    budget = parameters.get("budget") if isinstance(parameters, dict) else None
    left = left_untested(
        _notes(run.get("notes")), budget if isinstance(budget, int) else None, run.get("quota_after")
    )

    previous = None
    if data.previous_run is not None:
        prev_id = data.previous_run["run_id"]
        prev_counts = next((h for h in history if h["run_id"] == prev_id), None)
        previous = {
            "run_id": prev_id,
            "date": _date(data.previous_run.get("started_at")),
            "free": prev_counts["free"] if prev_counts else None,
            "working": prev_counts["working"] if prev_counts else None,
            "free_delta": counts["free"] - prev_counts["free"] if prev_counts else None,
            "working_delta": counts["working"] - prev_counts["working"] if prev_counts else None,
        }

    wrong_ids = [  # a candidate without a free variant is not a wrong id: its class section shows it
        r
        for r in rows
        if r["root_cause"] == Failure.WRONG_MODEL_ID.value
        or (r["verdict"] == Verdict.NOT_LISTED.value and r["root_cause"] != Failure.FREE_VARIANT_ENDED.value)
    ]
    wrong_ids.sort(key=lambda r: r["model_id"])
    in_reasoning = sorted(
        (r for r in rows if r.get("caveat") == ANSWER_IN_REASONING and r["verdict"] in TESTED_VERDICTS),
        key=lambda r: r["model_id"],
    )
    return {
        "run": {
            "run_id": run["run_id"],
            "date": _date(run.get("started_at")),
            "started": _timestamp(run.get("started_at")),
            "finished": _timestamp(run.get("finished_at")),
            "catalog_fetched": _timestamp(run.get("catalog_fetched_at")),
            "coverage": _coverage(
                counts["free"],
                counts["tested"],
                counts["untested"],
                sum(1 for r in rows if r["settled_unasked"]),
                left_by=left.by,
            ),
            "left": {"because": Markup(left.because), "resume_when": Markup(left.resume_when)},
            "suite_version": run.get("suite_version") or "—",
            "quota_before": run.get("quota_before"),
            "quota_after": run.get("quota_after"),
            "quota_limit": run.get("quota_limit"),
            "prefect_flow_run_id": run.get("prefect_flow_run_id"),
        },
        "settings": {
            "min_samples": settings.get("min_samples_for_tier"),
            "samples_per_task": settings.get("samples_per_task"),
            "max_tokens": settings.get("max_tokens"),
            "tail_min": options.min_answers_for_tail,
        },
        "source": source,
        "counts": counts,
        "previous": previous,
        "fastest": general["primary"] if general else None,
        "tiers": _tier_sections(tiered),
        "tiered": tiered,
        "too_few": too_few,
        "degraded": sorted(
            (r for r in rows if r["verdict"] == Verdict.DEGRADED.value),
            key=lambda r: r["model_id"],
        ),
        "failing": sorted(
            (r for r in rows if r["verdict"] == Verdict.FAILING.value),
            key=lambda r: r["model_id"],
        ),
        "untested": sorted(
            (r for r in rows if r["verdict"] == Verdict.UNTESTED_QUOTA.value),
            key=lambda r: r["model_id"],
        ),
        "rotation": rotation,
        "general_chain": general,
        "passed_over_general": passed_over_general,
        "changes": _changes(data.changes),
        "failures": failures,
        "failures_seen": [f for f in failures if f["models"]],
        "failed_total": failed_total,
        "wrong_ids": wrong_ids,
        "in_reasoning": in_reasoning,
        "tasks": tasks,
        "matrix": _matrix(data.catalog, finals, by_id, tasks, compared),
        "compared": [
            compared[m]
            for m in sorted(compared)
            if compared[m]["measured_ttft_ms"] is not None or compared[m]["success_rate"] is not None
        ],
        "spend": _spend(data, rows),
        "suite_size": suite_size,
        "history": history,
        "trend": trend,
        "drill": _drill(data, options, settings),
        "documents": [{"path": p, "title": t} for p, t in DOCUMENT_TITLES],
        "charts": {
            "latency": LATENCY_CHART,
            "failures": FAILURES_CHART,
            "trend": TREND_CHART,
            "availability": AVAILABILITY_CHART,
        },
        "availability": as_context(data.availability),
        "availability_points": [
            charts.DayPoint(p.day, p.free) for p in (data.availability.per_day if data.availability else ())
        ],
        "links": {
            "summary": EXECUTIVE_SUMMARY,
            "final": FINAL_REPORT,
            "rca": ROOT_CAUSES,
            "matrix": CAPABILITY_MATRIX,
            "index": INDEX,
            "rotation_json": ROTATION_JSON,
            "litellm": LITELLM_YAML,
        },
        "models_limit": options.models_limit,
        "tier_names": list(TIERS),
        "too_few_label": TOO_FEW_SAMPLES,
        "long_context_min": LONG_CONTEXT_MIN_TOKENS,
        "artifact": False,
    }


# --------------------------------------------------------------------------------------------------
# Rendering


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja environment of the report templates (strict, Markdown-safe)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        uptime=_percent_value,
        md_text=md_text,
        md_cell=md_cell,
        md_code=md_code,
        seconds=seconds,
        percent=percent,
        plural=plural,
        signed=signed,
        thousands=thousands,
        decimal=decimal,
        yes_no=yes_no,
    )
    return env


def _render(name: str, context: Mapping[str, Any]) -> str:
    text = environment().get_template(name).render(context)
    return text.rstrip("\n") + "\n"


def _chart_note(context: Mapping[str, Any]) -> str | None:
    return "Sandbox data (simulated), not real measurements" if context["source"]["is_sandbox"] else None


def render_charts(context: Mapping[str, Any]) -> dict[str, str]:
    """The SVG charts of a context."""
    note = _chart_note(context)
    bars = [
        charts.LatencyBar(
            label=r["model_id"],
            tier=r["tier"],
            p50_ms=float(r["p50_total_ms"]),
            p90_ms=r["p90_total_ms"] if r["tail_shown"] else None,
        )
        for r in context["tiered"]
    ]
    outcomes = [(f["title"], f["probes"]) for f in context["failures"]]
    return {
        LATENCY_CHART: charts.latency_svg(
            bars,
            tiers=context["tier_names"],
            thresholds_ms=[upper for _, upper in TIER_UPPER_BOUNDS_MS],
            note=note,
        ),
        FAILURES_CHART: charts.failures_svg(outcomes, passed=context["counts"]["passed"], note=note),
        TREND_CHART: charts.trend_svg(context["trend"], note=note),
        AVAILABILITY_CHART: charts.availability_svg(context["availability_points"], note=note),
    }


def _exports(data: ReportData, context: Mapping[str, Any], options: ReportOptions) -> dict[str, str]:
    source = context["source"]
    rotation_document = exports.rotation_json(
        data.rotation,
        run_id=data.run["run_id"],
        source=source["kind"],
        generated_at=data.run.get("finished_at") or data.run.get("started_at"),
        order=purposes(),
        models_limit=options.models_limit,
    )
    return {
        ROTATION_JSON: json.dumps(rotation_document, indent=2, ensure_ascii=False) + "\n",
        LITELLM_YAML: exports.litellm_router_yaml(
            data.rotation,
            run_id=data.run["run_id"],
            source=source["kind"],
            base_url=source["base_url"] or None,
            order=purposes(),
        ),
    }


def summary_markdown(context: Mapping[str, Any]) -> str:
    """The executive summary as Markdown for a Prefect artifact: no relative links or images, no
    GitHub-only alerts, narrow tables."""
    return _render("executive-summary.md.j2", {**context, "artifact": True})


def tiers_table(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per working model (tiered first, fastest first) for a Prefect table artifact: the
    columns a decision needs, few enough to fit the artifact page."""
    minimum = context["settings"]["tail_min"]
    rows = []
    for r in [*context["tiered"], *context["too_few"]]:
        rows.append(
            {
                "model": r["model_id"],
                "provider": r["provider"] or "—",
                "tier": r["tier"],
                "p50_total": seconds(r["p50_total_ms"]),
                "p90_total": tail(r["p90_total_ms"], r["n_ok"], minimum),
                "p50_ttft": seconds(r["p50_ttft_ms"]),
                "success": percent(r["success_rate"]),
                "n": r["n"],
            }
        )
    return rows


@dataclass(frozen=True, slots=True)
class Rendered:
    """Every document of a run (relative path under ``docs/`` -> text), the executive summary for the
    Prefect artifact and the tiers table, all from one context."""

    documents: dict[str, str]
    summary_markdown: str
    tiers: list[dict[str, Any]] = field(default_factory=list)


def render_all(data: ReportData, options: ReportOptions | None = None) -> Rendered:
    """Render everything of one run from one context (pure)."""
    options = options or ReportOptions()
    context = build_context(data, options)
    documents = {
        EXECUTIVE_SUMMARY: _render("executive-summary.md.j2", context),
        FINAL_REPORT: _render("final-report.md.j2", context),
        ROOT_CAUSES: _render("root-cause-analysis.md.j2", context),
        CAPABILITY_MATRIX: _render("capability-matrix.md.j2", context),
        INDEX: _render("index.md.j2", context),
    }
    documents.update(render_charts(context))
    documents.update(_exports(data, context, options))
    return Rendered(
        documents=documents, summary_markdown=summary_markdown(context), tiers=tiers_table(context)
    )


def render_documents(data: ReportData, options: ReportOptions | None = None) -> dict[str, str]:
    """Every document of the run: relative path under ``docs/`` -> content (pure)."""
    return render_all(data, options).documents


# --------------------------------------------------------------------------------------------------
# Writing


def write_documents(docs_dir: Path, documents: Mapping[str, str], *, run_date: str) -> list[Path]:
    """Write ``documents`` under ``docs_dir`` (each file atomically) and archive the month's copy.

    ``run_date`` is the run's date (``YYYY-MM-DD`` or ``YYYY-MM``); every document except the index is
    also written to ``docs_dir/history/<YYYY-MM>/`` so that earlier months stay readable after later
    runs. Returns the written paths, in order.
    """
    month = run_date[:7]
    if len(month) != 7 or month[4] != "-" or not (month[:4] + month[5:]).isdigit():
        raise ValueError(f"run_date must start with YYYY-MM, not {run_date!r}")
    root = docs_dir.resolve()
    written: list[Path] = []
    for relative, text in documents.items():
        for base in (root, root / HISTORY_DIR / month):
            if base != root and relative in NOT_ARCHIVED:
                continue
            target = (base / relative).resolve()
            if not target.is_relative_to(root):
                raise ValueError(f"document path escapes the docs folder: {relative!r}")
            storage.write_text_atomic(target, text)
            written.append(target)
    return written


def _run_date(data: ReportData) -> str:
    started = data.run.get("started_at")
    if not isinstance(started, datetime):
        raise StorageError(f"run {data.run['run_id']!r} has no start time")
    return started.date().isoformat()


def render_and_write(
    con: duckdb.DuckDBPyConnection, run_id: str, docs_dir: Path, *, options: ReportOptions | None = None
) -> list[Path]:
    """Read run ``run_id``, render every document and write them under ``docs_dir``."""
    data = storage.report_data(con, run_id)
    return write_documents(docs_dir, render_documents(data, options), run_date=_run_date(data))


@dataclass(frozen=True, slots=True)
class RenderOutcome:
    """What the render step wrote, plus the texts the flow publishes as Prefect artifacts."""

    paths: list[Path]
    summary_markdown: str
    tiers: list[dict[str, Any]]


def render_run(
    db_path: Path, docs_dir: Path, run_id: str, *, options: ReportOptions | None = None
) -> RenderOutcome:
    """Render run ``run_id`` from the database at ``db_path`` into ``docs_dir``."""
    con = storage.connect(db_path, read_only=True)
    try:
        data = storage.report_data(con, run_id)
    finally:
        con.close()
    rendered = render_all(data, options)
    paths = write_documents(docs_dir, rendered.documents, run_date=_run_date(data))
    return RenderOutcome(paths=paths, summary_markdown=rendered.summary_markdown, tiers=rendered.tiers)


@task(name="render", cache_policy=NO_CACHE)
def render_task(
    db_path: Path, docs_dir: Path, run_id: str, *, options: ReportOptions | None = None
) -> RenderOutcome:
    return render_run(db_path, docs_dir, run_id, options=options)

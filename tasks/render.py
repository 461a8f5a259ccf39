"""Step ``render``: the Markdown reports, charts and rotation exports of one run.

Three layers, kept apart:

- :func:`load_report_data` reads one run (and the per-run counts of every earlier run) from DuckDB into
  a frozen :class:`ReportData`;
- :func:`build_context` and :func:`render_documents` are pure: ``ReportData`` in, ``{relative path:
  text}`` out, the same text for the same data (charts included);
- :func:`write_documents` writes them atomically under ``docs/`` and keeps a copy of the month's
  documents under ``docs/history/<YYYY-MM>/`` so earlier months stay readable.

Templates live in ``reports/templates/*.md.j2`` and render with ``StrictUndefined``. Markdown has no
autoescaping, so every string that comes from outside (catalog, providers, model replies) goes through
the :mod:`freemodels.mdsafe` filters, and the environment's ``finalize`` escapes any plain string a
template prints without one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from freemodels.availability import Availability, as_context, summarize
from freemodels.errors import RunNotFoundError, StorageError
from freemodels.failures import FAILURE_INFO, SETTLING, Failure
from freemodels.listings import disagreements, reported
from freemodels.mdsafe import EMPTY, finalize, md_cell, md_code, md_text
from freemodels.records import (
    ANSWER_IN_REASONING,
    CATALOG_SCHEMA,
    CHANGES_SCHEMA,
    ENDPOINTS_SCHEMA,
    MODEL_RESULTS_SCHEMA,
    PROBES_SCHEMA,
    ROTATION_SCHEMA,
    RUNS_SCHEMA,
    Verdict,
)
from freemodels.rounds import probes_done, spend_by_phase
from freemodels.settings import OPENROUTER_MODELS_LIMIT
from freemodels.source import profile_of
from freemodels.suite import SCREENING_TASK, TASKS
from tasks.analyze_failures import final_attempts
from tasks.rank import (
    GENERAL,
    JSON,
    LONG_CONTEXT,
    LONG_CONTEXT_MIN_TOKENS,
    TIER_PURPOSE_PREFIX,
    TIER_UPPER_BOUNDS_MS,
    TIERS,
    TOO_FEW_SAMPLES,
    purposes,
)

HISTORY_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(),
    "started_at": pl.Datetime("us", "UTC"),
    "source": pl.String(),
    "status": pl.String(),
    "n_catalog": pl.Int64(),
    "n_free": pl.Int64(),
    "n_tested": pl.Int64(),
    "n_working": pl.Int64(),
}
"""One row per run: the counts the index and the trend chart need."""

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

TESTED_VERDICTS = (Verdict.WORKING.value, Verdict.DEGRADED.value, Verdict.FAILING.value)
SANDBOX_BANNER = (
    "**Sandbox data, not real measurements.** Every number here comes from the project's built-in "
    "sandbox, a simulated OpenRouter running on this machine. It shows that the pipeline works; it "
    "says nothing about real models."
)
MESSAGE_MAX = 160


@dataclass(frozen=True, slots=True)
class ReportData:
    """Everything the reports of one run are made from."""

    run: dict[str, Any]  # one row of RUNS_SCHEMA
    catalog: pl.DataFrame  # CATALOG_SCHEMA
    probes: pl.DataFrame  # PROBES_SCHEMA, every attempt
    model_results: pl.DataFrame  # MODEL_RESULTS_SCHEMA, tiers filled
    rotation: pl.DataFrame  # ROTATION_SCHEMA
    changes: pl.DataFrame  # CHANGES_SCHEMA
    history: pl.DataFrame  # HISTORY_SCHEMA, oldest first, up to and including this run
    previous_run: dict[str, Any] | None = None  # the run the changes compare against
    endpoints: pl.DataFrame | None = None  # ENDPOINTS_SCHEMA: the free signals read before probing
    availability: Availability | None = None  # free models over time, from every snapshot up to the run


# --------------------------------------------------------------------------------------------------
# Loading


def _conform(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with exactly ``schema``'s columns and types (datetimes normalised to UTC)."""
    columns = []
    for name, dtype in schema.items():
        col = pl.col(name)
        actual = frame.schema.get(name)
        if isinstance(dtype, pl.Datetime) and isinstance(actual, pl.Datetime):
            col = col.dt.convert_time_zone("UTC") if actual.time_zone else col.dt.replace_time_zone("UTC")
        columns.append(col.cast(dtype).alias(name))
    return frame.select(columns)


def _query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[object],
    schema: Mapping[str, pl.DataType],
) -> pl.DataFrame:
    try:
        frame = con.sql(sql, params=list(params)).pl()
    except duckdb.Error as exc:
        raise StorageError(f"cannot read the reports' data from DuckDB: {exc}") from exc
    return _conform(frame, schema)


def _columns(schema: Mapping[str, pl.DataType]) -> str:
    return ", ".join(f'"{name}"' for name in schema)


_HISTORY_SQL = """
WITH cat AS (
    SELECT run_id,
           count(*) AS n_catalog,
           count(*) FILTER (WHERE is_free AND NOT coalesce(is_router, false)) AS n_free
    FROM catalog GROUP BY run_id
), res AS (
    SELECT run_id,
           count(*) FILTER (WHERE verdict IN ('working', 'degraded', 'failing')) AS n_tested,
           count(*) FILTER (WHERE verdict = 'working') AS n_working
    FROM model_results GROUP BY run_id
)
SELECT r.run_id, r.started_at, r.source, r.status,
       coalesce(cat.n_catalog, 0) AS n_catalog, coalesce(cat.n_free, 0) AS n_free,
       coalesce(res.n_tested, 0) AS n_tested, coalesce(res.n_working, 0) AS n_working
FROM runs r
LEFT JOIN cat ON cat.run_id = r.run_id
LEFT JOIN res ON res.run_id = r.run_id
WHERE r.started_at <= (SELECT started_at FROM runs WHERE run_id = ?)
  AND (r.status = 'completed' OR r.run_id = ?)
ORDER BY r.started_at, r.run_id
"""


def load_report_data(con: duckdb.DuckDBPyConnection, run_id: str) -> ReportData:
    """Read run ``run_id`` and the per-run counts of every run up to it from the DuckDB tables.

    Raises :class:`~freemodels.errors.RunNotFoundError` if the run is not stored and
    :class:`~freemodels.errors.StorageError` if the tables cannot be read.
    """
    runs = _query(con, f"SELECT {_columns(RUNS_SCHEMA)} FROM runs WHERE run_id = ?", [run_id], RUNS_SCHEMA)
    if runs.is_empty():
        raise RunNotFoundError(f"no stored run with id {run_id!r}")

    def table(name: str, schema: Mapping[str, pl.DataType], order: str) -> pl.DataFrame:
        sql = f"SELECT {_columns(schema)} FROM {name} WHERE run_id = ? ORDER BY {order}"
        return _query(con, sql, [run_id], schema)

    catalog = table("catalog", CATALOG_SCHEMA, "model_id")
    probes = table("probes", PROBES_SCHEMA, "model_id, task, sample, attempt")
    model_results = table("model_results", MODEL_RESULTS_SCHEMA, "model_id")
    rotation = table("rotation", ROTATION_SCHEMA, "purpose, rank")
    changes = table("changes", CHANGES_SCHEMA, "change, model_id")
    endpoints = table("endpoints", ENDPOINTS_SCHEMA, "model_id, provider NULLS FIRST, endpoint")
    history = _query(con, _HISTORY_SQL, [run_id, run_id], HISTORY_SCHEMA)

    run = runs.row(0, named=True)
    until = run.get("catalog_fetched_at") or run["started_at"]
    days, observed = storage.availability_days(con, source=run["source"], until=until)
    previous: pl.DataFrame
    prev_ids = changes.get_column("prev_run_id").drop_nulls().unique().to_list()
    if prev_ids:
        previous = _query(
            con,
            f"SELECT {_columns(RUNS_SCHEMA)} FROM runs WHERE run_id = ?",
            [sorted(prev_ids)[0]],
            RUNS_SCHEMA,
        )
    else:
        previous = _query(
            con,
            f"SELECT {_columns(RUNS_SCHEMA)} FROM runs WHERE source = ? AND started_at < ? "
            "AND status = 'completed' ORDER BY started_at DESC LIMIT 1",
            [run["source"], run["started_at"]],
            RUNS_SCHEMA,
        )
    return ReportData(
        run=run,
        catalog=catalog,
        probes=probes,
        model_results=model_results,
        rotation=rotation,
        changes=changes,
        history=history,
        previous_run=previous.row(0, named=True) if not previous.is_empty() else None,
        endpoints=endpoints,
        availability=summarize(days, observed, until.date()),
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
    return {
        "kind": kind,
        "label": Markup(profile.label) if profile else kind,  # unknown: printed escaped
        "server_name": Markup(profile.server_name) if profile else Markup("the server"),
        "base_url": run.get("base_url") or "",
        "is_sandbox": simulated,
        "banner": Markup(SANDBOX_BANNER) if simulated else None,
        "notes": _notes(run.get("notes")),
    }


def _coverage(free: int, tested: int, untested: int, settled: int = 0) -> str:
    """What the run measured, in words (the reports never print the run's lifecycle status: they are
    written before the run has done its last step). ``settled``: models judged from their endpoints
    listing alone."""
    text = f"all {free} free models judged" if tested == free else f"{tested} of {free} free models judged"
    if settled:
        text += f" ({settled} from {'its listing' if settled == 1 else 'their listings'} alone)"
    if untested:
        text += f", {untested} left untested by the daily quota"
    return text


def _catalog_info(catalog: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {row["model_id"]: row for row in catalog.iter_rows(named=True)}


CAVEAT_LABELS: dict[str, str] = {
    ANSWER_IN_REASONING: "answer only in reasoning",
}
"""Short labels of ``model_results.caveat`` for the tables (project text, shown as written)."""


_SETTLING = frozenset(f.value for f in SETTLING)


def _model_row(
    result: Mapping[str, Any], info: Mapping[str, Any] | None, *, probed: int, suite_size: int
) -> dict[str, Any]:
    """A model_results row for the templates, with how much of the suite it got.

    ``partial``: probed, but fewer probes than the suite has, and not because a failure settled it
    (the quota ended its suite: its figures rest on fewer answers).
    """
    catalog_reasoning = bool(info and info.get("supports_reasoning"))
    caveat = result.get("caveat")
    tested = result.get("verdict") in TESTED_VERDICTS
    return {
        **result,
        "name": (info or {}).get("name"),
        "reasoning": bool(result.get("is_reasoning")) or catalog_reasoning,
        "context_length": (info or {}).get("context_length"),
        "caveat_label": Markup(CAVEAT_LABELS[caveat]) if caveat in CAVEAT_LABELS else caveat,
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


def _rotation(rotation: pl.DataFrame) -> list[dict[str, Any]]:
    known = list(purposes())
    found = rotation.get_column("purpose").unique().to_list()
    order = known + sorted(p for p in found if p not in known)
    chains = []
    for purpose in order:
        members = rotation.filter(pl.col("purpose") == purpose).sort("rank").to_dicts()
        if not members:
            continue
        tier = purpose.removeprefix(TIER_PURPOSE_PREFIX)
        label: str
        if purpose.startswith(TIER_PURPOSE_PREFIX) and tier in TIERS:
            label = Markup(f"Tier {tier}")
        elif purpose in PURPOSE_LABELS:
            label = Markup(PURPOSE_LABELS[purpose])
        else:
            label = purpose  # unknown: printed escaped
        chains.append(
            {
                "purpose": purpose,
                "label": label,
                "primary": members[0],
                "fallbacks": members[1:],
                "members": members,
            }
        )
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
        "message": None,
        "evidence": None,
        "suggestion": None,
        "root_cause": False,
    }


def _failures(finals: pl.DataFrame, results: pl.DataFrame) -> tuple[list[dict[str, Any]], int]:
    """One section per failure class (every class, in taxonomy order) and the failed-probe total.

    A model is listed under a class if one of its final attempts failed with it, or if the analysis
    named the class as the model's root cause (then its evidence and suggestion are shown).
    """
    failed = finals.filter(pl.col("failure").is_not_null())
    total = failed.height
    by_class: dict[str, dict[str, dict[str, Any]]] = {}
    for row in failed.sort(["model_id", "task", "sample"]).iter_rows(named=True):
        entry = by_class.setdefault(row["failure"], {}).setdefault(
            row["model_id"], _affected(row["model_id"])
        )
        if entry["probes"] == 0:
            entry["error_code"], entry["message"] = row["error_code"], row["message"]
        entry["probes"] += 1
        if row["http_status"] is not None:
            entry["statuses"].add(row["http_status"])
    for row in results.filter(pl.col("root_cause").is_not_null()).iter_rows(named=True):
        entry = by_class.setdefault(row["root_cause"], {}).setdefault(
            row["model_id"], _affected(row["model_id"])
        )
        entry["root_cause"] = True
        entry["evidence"] = row["evidence"]
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
    points = [
        charts.TrendPoint(label=r["date"], free=r["n_free"], working=r["n_working"])
        for r in rows
        if r["source"] == source and (r["status"] == "completed" or r["is_current"])
    ]
    return list(reversed(rows)), points


def build_context(data: ReportData, *, models_limit: int = OPENROUTER_MODELS_LIMIT) -> dict[str, Any]:
    """Everything the templates show, as plain values (pure).

    ``models_limit`` is the most ids ``rotation.json`` puts in a purpose's ``models`` array.
    """
    run = data.run
    source = _source(run)
    settings = _settings(run)
    info = _catalog_info(data.catalog)
    results = data.model_results
    done = probes_done(data.probes)
    samples = settings.get("samples_per_task")
    suite_size = len(TASKS) * (samples if isinstance(samples, int) and samples > 0 else 1)
    rows = [
        _model_row(r, info.get(r["model_id"]), probed=done.get(r["model_id"], 0), suite_size=suite_size)
        for r in results.iter_rows(named=True)
    ]
    by_id = {r["model_id"]: r for r in rows}
    compared = _compared(data.endpoints, by_id)
    verdicts = results.get_column("verdict")
    finals = final_attempts(data.probes)
    catalog = data.catalog
    free_mask = catalog.get_column("is_free").fill_null(False) & ~catalog.get_column("is_router").fill_null(
        False
    )
    counts = {
        "catalog": catalog.height,
        "free": int(free_mask.sum()),
        "routers": int(catalog.get_column("is_router").fill_null(False).sum()),
        "tested": int(verdicts.is_in(TESTED_VERDICTS).sum()),
        "working": int((verdicts == Verdict.WORKING.value).sum()),
        "degraded": int((verdicts == Verdict.DEGRADED.value).sum()),
        "failing": int((verdicts == Verdict.FAILING.value).sum()),
        "untested": int((verdicts == Verdict.UNTESTED_QUOTA.value).sum()),
        "not_listed": int((verdicts == Verdict.NOT_LISTED.value).sum()),
        "probes": finals.height,
        "attempts": data.probes.height,
        "passed": int(finals.get_column("passed").fill_null(False).sum()) if finals.height else 0,
    }
    working = [r for r in rows if r["verdict"] == Verdict.WORKING.value]
    tiered = [r for r in working if r["tier"] in TIERS]
    tier_order = {t: i for i, t in enumerate(TIERS)}
    tiered.sort(key=lambda r: (tier_order[r["tier"]], r["p50_total_ms"], r["model_id"]))
    too_few = sorted((r for r in working if r["tier"] not in TIERS), key=lambda r: r["model_id"])
    rotation = _rotation(data.rotation)
    general = next((c for c in rotation if c["purpose"] == GENERAL), None)
    failures, failed_total = _failures(finals, results)
    tasks = list(TASKS) + sorted(
        set(finals.get_column("task").unique().to_list()) - set(TASKS) if finals.height else set()
    )
    history, trend = _history(data.history, run["run_id"])

    previous = None
    if data.previous_run is not None:
        prev_id = data.previous_run["run_id"]
        prev_counts = next((h for h in history if h["run_id"] == prev_id), None)
        previous = {
            "run_id": prev_id,
            "date": _date(data.previous_run.get("started_at")),
            "free": prev_counts["n_free"] if prev_counts else None,
            "working": prev_counts["n_working"] if prev_counts else None,
            "free_delta": counts["free"] - prev_counts["n_free"] if prev_counts else None,
            "working_delta": counts["working"] - prev_counts["n_working"] if prev_counts else None,
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
            ),
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
        "models_limit": models_limit,
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
            p90_ms=r["p90_total_ms"],
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


def render_documents(data: ReportData, *, models_limit: int = OPENROUTER_MODELS_LIMIT) -> dict[str, str]:
    """Every document of the run: relative path under ``docs/`` -> content (pure).

    ``models_limit`` caps each purpose's ``models`` array in ``rotation.json`` (see
    :func:`freemodels.exports.rotation_json`).
    """
    context = build_context(data, models_limit=models_limit)
    documents = {
        EXECUTIVE_SUMMARY: _render("executive-summary.md.j2", context),
        FINAL_REPORT: _render("final-report.md.j2", context),
        ROOT_CAUSES: _render("root-cause-analysis.md.j2", context),
        CAPABILITY_MATRIX: _render("capability-matrix.md.j2", context),
        INDEX: _render("index.md.j2", context),
    }
    documents.update(render_charts(context))
    source = context["source"]
    documents[ROTATION_JSON] = (
        json.dumps(
            exports.rotation_json(
                data.rotation,
                run_id=data.run["run_id"],
                source=source["kind"],
                generated_at=data.run.get("finished_at") or data.run.get("started_at"),
                order=purposes(),
                models_limit=models_limit,
            ),
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    documents[LITELLM_YAML] = exports.litellm_router_yaml(
        data.rotation,
        run_id=data.run["run_id"],
        source=source["kind"],
        base_url=source["base_url"] or None,
        order=purposes(),
    )
    return documents


def summary_markdown(data: ReportData, *, models_limit: int = OPENROUTER_MODELS_LIMIT) -> str:
    """The executive summary as Markdown for a Prefect artifact (no relative links or images)."""
    context = build_context(data, models_limit=models_limit)
    context["artifact"] = True
    return _render("executive-summary.md.j2", context)


def tiers_table(data: ReportData) -> list[dict[str, Any]]:
    """One row per working model (tiered first, fastest first) for a Prefect table artifact."""
    context = build_context(data)
    rows = []
    for r in [*context["tiered"], *context["too_few"]]:
        rows.append(
            {
                "model": r["model_id"],
                "tier": r["tier"],
                "p50_total": seconds(r["p50_total_ms"]),
                "p90_total": seconds(r["p90_total_ms"]),
                "p50_ttft": seconds(r["p50_ttft_ms"]),
                "p90_ttft": seconds(r["p90_ttft_ms"]),
                "success": percent(r["success_rate"]),
                "n": r["n"],
                "reasoning": yes_no(r["reasoning"]),
            }
        )
    return rows


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


def render_and_write(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    docs_dir: Path,
    *,
    models_limit: int = OPENROUTER_MODELS_LIMIT,
) -> list[Path]:
    """Load run ``run_id``, render every document and write them under ``docs_dir``."""
    data = load_report_data(con, run_id)
    started = data.run.get("started_at")
    if not isinstance(started, datetime):
        raise StorageError(f"run {run_id!r} has no start time")
    documents = render_documents(data, models_limit=models_limit)
    return write_documents(docs_dir, documents, run_date=started.date().isoformat())


@dataclass(frozen=True, slots=True)
class RenderOutcome:
    """What the render step wrote, plus the texts the flow publishes as Prefect artifacts."""

    paths: list[Path]
    summary_markdown: str
    tiers: list[dict[str, Any]]


def render_run(
    db_path: Path, docs_dir: Path, run_id: str, *, models_limit: int = OPENROUTER_MODELS_LIMIT
) -> RenderOutcome:
    """Render run ``run_id`` from the database at ``db_path`` into ``docs_dir``.

    ``models_limit`` caps each purpose's ``models`` array in ``rotation.json``.
    """
    con = storage.connect(db_path, read_only=True)
    try:
        data = load_report_data(con, run_id)
    finally:
        con.close()
    started = data.run.get("started_at")
    if not isinstance(started, datetime):
        raise StorageError(f"run {run_id!r} has no start time")
    documents = render_documents(data, models_limit=models_limit)
    paths = write_documents(docs_dir, documents, run_date=started.date().isoformat())
    return RenderOutcome(
        paths=paths,
        summary_markdown=summary_markdown(data, models_limit=models_limit),
        tiers=tiers_table(data),
    )


@task(name="render", cache_policy=NO_CACHE)
def render_task(
    db_path: Path, docs_dir: Path, run_id: str, *, models_limit: int = OPENROUTER_MODELS_LIMIT
) -> RenderOutcome:
    return render_run(db_path, docs_dir, run_id, models_limit=models_limit)

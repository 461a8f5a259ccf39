"""Step ``analyze-failures``: one verdict per model, with the root cause and remedy of its failures.

Rules:

* Only the **final attempt** of each probe (model, task, sample) counts; earlier attempts were retried.
* ``n`` = probes with a final attempt; ``n_ok`` = those that got an answer (content, graded or not);
  ``n_passed`` = those whose answer passed the grader; ``success_rate`` = ``n_passed / n``.
* Latency percentiles (P50/P90 of total and TTFT-any, P50 of TTFT-content) use the answered probes
  (``n_ok``): a wrong answer still measures the model's speed.
* Verdict: ``working`` when every probe passed; ``degraded`` when some passed; ``failing`` when none
  did; ``untested_quota`` for models the plan left out; ``not_listed`` for candidate ids the catalog
  does not list. A model the free signals settled without a chat request (an endpoints listing
  without endpoints, a model the key may not route: :func:`freemodels.listings.settlements`) is
  ``failing`` with ``n = 0``, that class as its root cause and the listing as its evidence; probes
  sent to it anyway (``--probe-all``) decide instead.
* Caveat: ``answer_in_reasoning`` when an answered probe of the model had its answer only in the
  reasoning channel (content empty, finish reason ``stop``). Such answers are graded on the reasoning
  text and count like any other (the model can be ``working``), but a client that reads ``content``
  gets nothing from them.
* Root cause: the most frequent failure class among the final attempts (ties: the order of
  :class:`~freemodels.failures.Failure`); the remedy comes from the taxonomy; the evidence
  (:func:`evidence_of`) is the HTTP status and message of one probe of that class, and for a wrong
  answer, an empty reply or reasoning that used up ``max_tokens`` the task it failed and what the
  reply held. For an ended free variant the suggestion is the
  paid slug its message names; for a candidate the catalog does not list, the closest catalog ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl
from prefect import task

from freemodels.candidates import CandidateOutcome, classify_unlisted
from freemodels.classify import suggested_model_in
from freemodels.failures import FAILURE_INFO, Failure
from freemodels.listings import Settlement, settlements
from freemodels.mdsafe import clip
from freemodels.records import ANSWER_IN_REASONING, MODEL_RESULTS_SCHEMA, Verdict

PROBE_KEY = ["model_id", "task", "sample"]
_EVIDENCE_COLUMNS = (
    "task",
    "http_status",
    "message",
    "error_code",
    "reply_excerpt",
    "finish_reason",
    "reasoning_tokens",
)
_FAILURE_ORDER = {f.value: i for i, f in enumerate(Failure)}


def final_attempts(probes: pl.DataFrame) -> pl.DataFrame:
    """The last attempt of each (model, task, sample): the one that counts. Sorted by that key."""
    if probes.is_empty():
        return probes
    return probes.sort([*PROBE_KEY, "attempt"]).unique(subset=PROBE_KEY, keep="last", maintain_order=True)


ANSWER_FAILURES = frozenset({Failure.WRONG_ANSWER, Failure.EMPTY_REPLY, Failure.REASONING_EXHAUSTED})
"""Failures of an answer that came back (HTTP 200): the evidence is the task and the reply."""
EXCERPT_CHARS = 120
REASONING_ONLY = "[reasoning only] "  # how the probe marks an excerpt taken from the reasoning channel


def evidence_of(row: Mapping[str, Any]) -> str:
    """What one failed attempt (a row of the probes table) shows, in one line of plain text.

    Errors: the HTTP status, the error code and the server's message. A wrong answer, an empty reply
    or reasoning that used up ``max_tokens``: the task, the status, and what the reply held (an
    excerpt, cut at a word boundary, as the probe stored it: redacted).
    """
    status = row.get("http_status")
    head = f"HTTP {status}" if status is not None else "no HTTP status"
    failure = row.get("failure")
    if failure in ANSWER_FAILURES:
        return f"task {row.get('task')} · {head}: {_answer_evidence(Failure(failure), row)}"
    code, message = row.get("error_code"), row.get("message")
    text = f"{head} · {code}" if code else head
    return f"{text}: {clip(str(message), 300)}" if message else text


def _answer_evidence(failure: Failure, row: Mapping[str, Any]) -> str:
    excerpt = str(row.get("reply_excerpt") or "").strip()
    reasoning = excerpt.startswith(REASONING_ONLY)
    shown = clip(excerpt.removeprefix(REASONING_ONLY).strip(), EXCERPT_CHARS)
    finish = row.get("finish_reason")
    if failure is Failure.WRONG_ANSWER:
        where = "replied in its reasoning" if reasoning else "replied"
        return f"{where} “{shown}”" if shown else "replied with text the grader rejected"
    if failure is Failure.REASONING_EXHAUSTED:
        tokens = row.get("reasoning_tokens")
        spent = f", {tokens} reasoning tokens" if tokens else ""
        began = f"; the reasoning began “{shown}”" if shown else ""
        reason = f"finish_reason {finish or '—'}{spent}"
        return f"the reasoning used up max_tokens before any answer ({reason}){began}"
    if shown:
        return f"no answer in content (finish_reason {finish or '—'}); reasoning only: “{shown}”"
    return f"no text at all (finish_reason {finish or '—'})"


def _suggestion(failure: str, message: str | None) -> str | None:
    """The model a failure points to instead: the paid slug an ended free variant names."""
    if failure != Failure.FREE_VARIANT_ENDED.value or not message:
        return None
    return suggested_model_in(message)


def analyze(
    probes: pl.DataFrame,
    free: pl.DataFrame,
    *,
    run_id: str,
    untested: Iterable[str] = (),
    candidates: Sequence[CandidateOutcome] = (),
    settled: Mapping[str, Settlement] | None = None,
) -> pl.DataFrame:
    """Per-model verdicts (rows of :data:`~freemodels.records.MODEL_RESULTS_SCHEMA`; tier unset)."""
    finals = final_attempts(probes)
    families = dict(free.select("model_id", "family").iter_rows())
    reasoning_listed = dict(free.select("model_id", "supports_reasoning").iter_rows())

    rows: list[dict[str, object]] = []
    if not finals.is_empty():
        answered = pl.col("total_ms").is_not_null() & (
            pl.col("failure").is_null() | pl.col("failure").is_in([Failure.WRONG_ANSWER.value])
        )
        stats = (
            finals.group_by("model_id")
            .agg(
                pl.len().alias("n"),
                answered.sum().alias("n_ok"),
                pl.col("passed").fill_null(False).sum().alias("n_passed"),
                pl.col("total_ms").filter(answered).quantile(0.5, "linear").alias("p50_total_ms"),
                pl.col("total_ms").filter(answered).quantile(0.9, "linear").alias("p90_total_ms"),
                pl.col("ttft_any_ms").filter(answered).quantile(0.5, "linear").alias("p50_ttft_ms"),
                pl.col("ttft_any_ms").filter(answered).quantile(0.9, "linear").alias("p90_ttft_ms"),
                pl.col("ttft_content_ms")
                .filter(answered)
                .quantile(0.5, "linear")
                .alias("p50_ttft_content_ms"),
                (pl.col("reasoning_tokens").fill_null(0) > 0).any().alias("used_reasoning"),
                (answered & (pl.col("answer_channel") == "reasoning"))
                .fill_null(False)
                .any()
                .alias("in_reasoning"),
                pl.col("task").filter(pl.col("passed")).unique().sort().str.join(",").alias("tasks_passed"),
                pl.col("task").filter(~pl.col("passed")).unique().sort().str.join(",").alias("tasks_failed"),
            )
            .sort("model_id")
        )
        failures = finals.filter(pl.col("failure").is_not_null())
        causes: dict[str, tuple[str, str, str | None]] = {}
        if not failures.is_empty():
            counted = (
                failures.sort(PROBE_KEY)
                .group_by("model_id", "failure", maintain_order=True)
                .agg(
                    pl.len().alias("count"),
                    *(pl.col(c).first() for c in _EVIDENCE_COLUMNS),
                )
                .with_columns(
                    pl.col("failure").replace_strict(_FAILURE_ORDER, return_dtype=pl.Int64).alias("order")
                )
                .sort(["model_id", "count", "order"], descending=[False, True, False])
                .unique(subset="model_id", keep="first")
            )
            for row in counted.iter_rows(named=True):
                failure, message = row["failure"], row["message"]
                causes[row["model_id"]] = (failure, evidence_of(row), _suggestion(failure, message))

        for rec in stats.iter_rows(named=True):
            model_id = rec["model_id"]
            n, n_passed = rec["n"], rec["n_passed"]
            if n_passed == n:
                verdict = Verdict.WORKING
            elif n_passed > 0:
                verdict = Verdict.DEGRADED
            else:
                verdict = Verdict.FAILING
            cause = causes.get(model_id)
            root = cause[0] if cause else None
            rows.append(
                {
                    "run_id": run_id,
                    "model_id": model_id,
                    "family": families.get(model_id, _family_from_probes(finals, model_id)),
                    "verdict": verdict.value,
                    "n": n,
                    "n_ok": rec["n_ok"],
                    "n_passed": n_passed,
                    "success_rate": n_passed / n if n else 0.0,
                    "p50_total_ms": rec["p50_total_ms"],
                    "p90_total_ms": rec["p90_total_ms"],
                    "p50_ttft_ms": rec["p50_ttft_ms"],
                    "p90_ttft_ms": rec["p90_ttft_ms"],
                    "p50_ttft_content_ms": rec["p50_ttft_content_ms"],
                    "tier": None,
                    "is_reasoning": bool(reasoning_listed.get(model_id)) or rec["used_reasoning"],
                    "tasks_passed": rec["tasks_passed"] or None,
                    "tasks_failed": rec["tasks_failed"] or None,
                    "root_cause": root,
                    "remedy": FAILURE_INFO[Failure(root)].remedy if root else None,
                    "evidence": cause[1] if cause else None,
                    "suggestion": cause[2] if cause else None,
                    "caveat": ANSWER_IN_REASONING if rec["in_reasoning"] else None,
                }
            )

    probed = {r["model_id"] for r in rows}
    for model_id, settlement in sorted((settled or {}).items()):
        if model_id in probed or model_id not in families:
            continue
        rows.append(
            _empty_row(run_id, model_id, families[model_id], Verdict.FAILING)
            | {
                "success_rate": 0.0,
                "is_reasoning": bool(reasoning_listed.get(model_id)),
                "root_cause": settlement.failure.value,
                "remedy": FAILURE_INFO[settlement.failure].remedy,
                "evidence": settlement.evidence,
            }
        )
        probed.add(model_id)
    for model_id in sorted(set(untested) - probed):
        rows.append(
            _empty_row(run_id, model_id, families.get(model_id, ""), Verdict.UNTESTED_QUOTA)
            | {"is_reasoning": bool(reasoning_listed.get(model_id))}
        )
    for cand in candidates:
        if cand.model_id in probed:
            continue
        info = FAILURE_INFO[cand.failure]
        rows.append(
            _empty_row(run_id, cand.model_id, "", Verdict.NOT_LISTED)
            | {
                "root_cause": cand.failure.value,
                "remedy": info.remedy,
                "evidence": _candidate_evidence(cand),
                "suggestion": ", ".join(cand.suggestions) or None,
            }
        )
    if not rows:
        return pl.DataFrame(schema=MODEL_RESULTS_SCHEMA)
    return pl.DataFrame(rows, schema=MODEL_RESULTS_SCHEMA)


def _candidate_evidence(cand: CandidateOutcome) -> str:
    if cand.failure is Failure.FREE_VARIANT_ENDED and cand.suggestions:
        return f"not listed as ':free'; the catalog lists only the paid slug {cand.suggestions[0]} (not sent)"
    return "not listed in the catalog (not sent)"


def _family_from_probes(finals: pl.DataFrame, model_id: str) -> str:
    fam = finals.filter(pl.col("model_id") == model_id).get_column("family")
    return fam[0] if fam.len() else ""


def _empty_row(run_id: str, model_id: str, family: str, verdict: Verdict) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(MODEL_RESULTS_SCHEMA)
    row.update(
        run_id=run_id,
        model_id=model_id,
        family=family,
        verdict=verdict.value,
        n=0,
        n_ok=0,
        n_passed=0,
        success_rate=None,
        is_reasoning=False,
    )
    return row


def analyze_run(
    probes: pl.DataFrame,
    free: pl.DataFrame,
    catalog_ids: Sequence[str],
    run_id: str,
    candidates: Sequence[str],
    endpoints: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The step: verdicts for every free model and every candidate id.

    Probing has ended when this runs, so a free model without any probe result was either settled by
    the free signals in ``endpoints`` (the run's endpoints listings) or left out by the daily quota
    (``untested_quota``). Candidate ids the catalog does not list are classified without sending them.
    """
    untested = free.get_column("model_id").to_list()
    unlisted = classify_unlisted(candidates, catalog_ids)
    settled = settlements(endpoints) if endpoints is not None else {}
    return analyze(probes, free, run_id=run_id, untested=untested, candidates=unlisted, settled=settled)


@task(name="analyze-failures")
def analyze_failures_task(
    probes: pl.DataFrame,
    free: pl.DataFrame,
    catalog_ids: Sequence[str],
    run_id: str,
    candidates: Sequence[str],
    endpoints: pl.DataFrame | None = None,
) -> pl.DataFrame:
    return analyze_run(probes, free, catalog_ids, run_id, candidates, endpoints)

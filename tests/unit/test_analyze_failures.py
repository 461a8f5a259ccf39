"""Per-model verdicts, percentiles and root causes from the probe attempts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import polars as pl

from freemodels.failures import FAILURE_INFO, Failure
from freemodels.records import ANSWER_IN_REASONING, MODEL_RESULTS_SCHEMA, ProbeResult, probes_frame
from tasks.analyze_failures import CandidateOutcome, analyze, final_attempts

T0 = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)


def probe(
    model: str,
    task: str,
    *,
    attempt: int = 1,
    failure: Failure | None = None,
    total: float | None = 1000.0,
    ttft: float | None = 200.0,
    status: int | None = 200,
    message: str | None = None,
    sample: int = 0,
    reasoning_tokens: int | None = None,
    reply_excerpt: str | None = None,
) -> ProbeResult:
    passed = failure is None
    return ProbeResult(
        run_id="r1",
        model_id=model,
        family=model.split("-")[0],
        task=task,
        sample=sample,
        attempt=attempt,
        started_at=T0,
        http_status=status,
        failure=failure,
        passed=passed,
        message=message,
        ttft_any_ms=ttft,
        ttft_content_ms=ttft,
        total_ms=total,
        reasoning_tokens=reasoning_tokens,
        reply_excerpt=reply_excerpt,
    )


def free_frame(ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"model_id": ids, "family": [i.split("-")[0] for i in ids], "supports_reasoning": [False] * len(ids)}
    )


def test_verdicts_and_percentiles() -> None:
    rows = [
        probe("a-ok", "arithmetic", total=1000),
        probe("a-ok", "json_object", total=2000),
        probe("a-ok", "reverse_words", total=3000, ttft=400),
        probe("b-half", "arithmetic"),
        probe("b-half", "json_object", failure=Failure.WRONG_ANSWER),
        probe("b-half", "reverse_words", failure=Failure.WRONG_ANSWER),
        probe(
            "c-dead",
            "arithmetic",
            failure=Failure.NO_ENDPOINTS,
            status=404,
            total=None,
            ttft=None,
            message="No endpoints found for c-dead.",
        ),
    ]
    out = analyze(
        probes_frame(rows),
        free_frame(["a-ok", "b-half", "c-dead", "d-left"]),
        run_id="r1",
        untested=["d-left"],
    )
    assert out.schema == pl.Schema(MODEL_RESULTS_SCHEMA)
    by = {r["model_id"]: r for r in out.iter_rows(named=True)}
    assert by["a-ok"]["verdict"] == "working"
    assert by["a-ok"]["n"] == 3 and by["a-ok"]["n_passed"] == 3 and by["a-ok"]["success_rate"] == 1.0
    assert by["a-ok"]["p50_total_ms"] == 2000.0
    assert abs(by["a-ok"]["p90_total_ms"] - 2800.0) < 1e-9
    assert by["a-ok"]["tasks_passed"] == "arithmetic,json_object,reverse_words"
    assert by["b-half"]["verdict"] == "degraded"
    assert by["b-half"]["root_cause"] == "wrong_answer"
    assert by["b-half"]["n_ok"] == 3  # wrong answers still measure speed
    assert by["c-dead"]["verdict"] == "failing"
    assert by["c-dead"]["root_cause"] == "no_endpoints"
    assert by["c-dead"]["remedy"] == FAILURE_INFO[Failure.NO_ENDPOINTS].remedy
    assert "404" in by["c-dead"]["evidence"] and "No endpoints found" in by["c-dead"]["evidence"]
    assert by["c-dead"]["p50_total_ms"] is None
    assert by["d-left"]["verdict"] == "untested_quota" and by["d-left"]["n"] == 0


def test_only_the_final_attempt_counts() -> None:
    rows = [
        probe("a-x", "arithmetic", attempt=1, failure=Failure.RATE_LIMIT_UPSTREAM, status=429, total=None),
        probe("a-x", "arithmetic", attempt=2, total=900),
    ]
    frame = probes_frame(rows)
    assert final_attempts(frame).height == 1
    out = analyze(frame, free_frame(["a-x"]), run_id="r1")
    assert out.row(0, named=True)["verdict"] == "working"
    assert out.row(0, named=True)["root_cause"] is None


def test_root_cause_is_the_most_frequent_class() -> None:
    rows = [
        probe("m-1", "arithmetic", failure=Failure.TIMEOUT, total=None),
        probe("m-1", "json_object", failure=Failure.PROVIDER_ERROR, status=502, total=None),
        probe("m-1", "reverse_words", failure=Failure.PROVIDER_ERROR, status=502, total=None),
    ]
    out = analyze(probes_frame(rows), free_frame(["m-1"]), run_id="r1")
    assert out.row(0, named=True)["root_cause"] == "provider_error"


def test_candidates_not_listed() -> None:
    out = analyze(
        probes_frame([]),
        free_frame([]),
        run_id="r1",
        candidates=[
            CandidateOutcome(
                "llama-3.3-8b", Failure.WRONG_MODEL_ID, ("meta-llama/llama-3.3-8b-instruct:free",)
            )
        ],
    )
    row = out.row(0, named=True)
    assert row["verdict"] == "not_listed"
    assert row["root_cause"] == "wrong_model_id"
    assert row["suggestion"] == "meta-llama/llama-3.3-8b-instruct:free"


def test_reasoning_flag_from_usage() -> None:
    rows = [probe("r-1", "arithmetic", reasoning_tokens=120)]
    out = analyze(probes_frame(rows), free_frame(["r-1"]), run_id="r1")
    assert out.row(0, named=True)["is_reasoning"] is True


def test_answers_in_the_reasoning_channel_work_with_a_caveat() -> None:
    def reasoning_answer(task: str) -> ProbeResult:
        return replace(
            probe("r-think", task, total=900, ttft=100), ttft_content_ms=None, answer_channel="reasoning"
        )

    rows = [reasoning_answer("arithmetic"), reasoning_answer("json_object"), probe("c-plain", "arithmetic")]
    out = analyze(probes_frame(rows), free_frame(["r-think", "c-plain"]), run_id="r1")
    by = {r["model_id"]: r for r in out.iter_rows(named=True)}
    assert by["r-think"]["verdict"] == "working" and by["r-think"]["n_ok"] == 2
    assert by["r-think"]["caveat"] == ANSWER_IN_REASONING
    assert by["r-think"]["p50_total_ms"] == 900 and by["r-think"]["root_cause"] is None
    assert by["c-plain"]["caveat"] is None


def test_the_paid_slug_of_an_ended_free_variant_is_the_suggestion() -> None:
    message = (
        "This model is unavailable for free. The paid version is available now - use this slug instead: "
        "openai/gpt-oss-20b"
    )
    rows = [
        probe(
            "o-gpt", "arithmetic", failure=Failure.FREE_VARIANT_ENDED, status=404, message=message, total=None
        ),
        probe(
            "n-gone",
            "arithmetic",
            failure=Failure.NO_ENDPOINTS,
            status=404,
            message="No endpoints found for x.",
            total=None,
        ),
    ]
    out = analyze(probes_frame(rows), free_frame(["o-gpt", "n-gone"]), run_id="r1")
    by = {r["model_id"]: r for r in out.iter_rows(named=True)}
    assert by["o-gpt"]["root_cause"] == Failure.FREE_VARIANT_ENDED.value
    assert by["o-gpt"]["suggestion"] == "openai/gpt-oss-20b"
    assert by["o-gpt"]["remedy"] == FAILURE_INFO[Failure.FREE_VARIANT_ENDED].remedy
    assert by["n-gone"]["suggestion"] is None


def test_a_candidate_without_a_free_variant_names_the_paid_slug() -> None:
    outcome = CandidateOutcome("minimax/minimax-m2:free", Failure.FREE_VARIANT_ENDED, ("minimax/minimax-m2",))
    row = analyze(probes_frame([]), free_frame([]), run_id="r1", candidates=[outcome]).row(0, named=True)
    assert (row["verdict"], row["root_cause"], row["suggestion"]) == (
        "not_listed",
        "free_variant_ended",
        "minimax/minimax-m2",
    )
    assert "paid slug minimax/minimax-m2" in row["evidence"]


def test_models_settled_by_the_free_signals_fail_with_the_listing_as_evidence() -> None:
    from freemodels.listings import NO_ENDPOINTS_EVIDENCE, NOT_ROUTABLE_EVIDENCE, Settlement

    ids = ["a-ok", "b-gone", "c-private", "d-probed", "e-left"]
    settled = {
        "b-gone": Settlement(Failure.NO_ENDPOINTS, NO_ENDPOINTS_EVIDENCE),
        "c-private": Settlement(Failure.PRIVACY_EXCLUDED, NOT_ROUTABLE_EVIDENCE),
        "d-probed": Settlement(Failure.NO_ENDPOINTS, NO_ENDPOINTS_EVIDENCE),  # probed anyway: probes win
        "x-unlisted": Settlement(Failure.NO_ENDPOINTS, NO_ENDPOINTS_EVIDENCE),  # not a free model here
    }
    rows = [probe("a-ok", "arithmetic"), probe("d-probed", "arithmetic")]
    out = analyze(probes_frame(rows), free_frame(ids), run_id="r1", untested=ids, settled=settled)
    by = {r["model_id"]: r for r in out.iter_rows(named=True)}
    assert set(by) == set(ids)
    assert (by["b-gone"]["verdict"], by["b-gone"]["n"], by["b-gone"]["root_cause"]) == (
        "failing",
        0,
        "no_endpoints",
    )
    assert by["b-gone"]["evidence"] == NO_ENDPOINTS_EVIDENCE
    assert by["b-gone"]["remedy"] == FAILURE_INFO[Failure.NO_ENDPOINTS].remedy
    assert by["c-private"]["root_cause"] == "privacy_excluded" and by["c-private"]["family"] == "c"
    assert by["d-probed"]["verdict"] == "working" and by["d-probed"]["root_cause"] is None
    assert by["e-left"]["verdict"] == "untested_quota"


def test_evidence_of_an_answer_names_the_task_and_shows_the_reply() -> None:
    from tasks.analyze_failures import evidence_of

    base = {"http_status": 200, "error_code": None, "message": None, "reasoning_tokens": None}
    wrong = evidence_of(
        base
        | {
            "failure": "wrong_answer",
            "task": "reverse_words",
            "reply_excerpt": "elppa ananab",
            "finish_reason": "stop",
        }
    )
    assert wrong == "task reverse_words · HTTP 200: replied “elppa ananab”"
    long_reply = " ".join(["word"] * 60)
    clipped = evidence_of(
        base | {"failure": "wrong_answer", "task": "arithmetic", "reply_excerpt": long_reply}
    )
    assert clipped.endswith("word…”") and "wor…" not in clipped  # never cut inside a word
    empty = evidence_of(
        base
        | {"failure": "empty_reply", "task": "json_object", "reply_excerpt": None, "finish_reason": "stop"}
    )
    assert empty == "task json_object · HTTP 200: no text at all (finish_reason stop)"
    exhausted = evidence_of(
        base
        | {
            "failure": "reasoning_exhausted",
            "task": "arithmetic",
            "reply_excerpt": "[reasoning only] Let me think about 17 plus",
            "finish_reason": "length",
            "reasoning_tokens": 1024,
        }
    )
    assert exhausted == (
        "task arithmetic · HTTP 200: the reasoning used up max_tokens before any answer "
        "(finish_reason length, 1024 reasoning tokens); the reasoning began “Let me think about 17 plus”"
    )
    error = evidence_of(
        {
            "failure": "no_endpoints",
            "http_status": 404,
            "error_code": "no_endpoints",
            "message": "No endpoints found for x.",
        }
    )
    assert error == "HTTP 404 · no_endpoints: No endpoints found for x."


def test_the_root_cause_evidence_of_a_wrong_answer_is_the_reply() -> None:
    probes = probes_frame(
        [
            probe("w-1", "arithmetic"),
            probe("w-1", "json_object", failure=Failure.WRONG_ANSWER, reply_excerpt='{"city": "Oslo"}'),
            probe("w-1", "reverse_words", failure=Failure.WRONG_ANSWER, reply_excerpt="nope"),
        ]
    )
    results = analyze(probes, free_frame(["w-1"]), run_id="r")
    evidence = results.row(0, named=True)["evidence"]
    assert evidence == 'task json_object · HTTP 200: replied “{"city": "Oslo"}”'

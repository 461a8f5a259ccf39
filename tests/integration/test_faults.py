"""Transport faults and hostile input staged in the sandbox, through the whole pipeline.

One discovery runs against a sandbox where each model suffers one fault; two models stay healthy. Every
faulted model must end in its expected failure class (with the retries its class allows), the healthy
models' results must be intact, the run must complete and be stored with nothing lost. A second run
serves a catalog and replies full of Markdown, HTML, template syntax, code and control characters:
the reports keep their structure and nothing the models said is executed.
"""

from __future__ import annotations

import itertools
import json
import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from markdown_it import MarkdownIt

from freemodels.failures import Failure
from tests.integration.sandbox_runs import FREE, final_attempts, only, run_plain, table, write_scenario

pytestmark = pytest.mark.integration

HEALTHY = (FREE[0], FREE[1])
# model -> (its fault table, expected class of every final attempt, error_code pattern)
FAULTS: dict[str, tuple[dict[str, object], Failure, str]] = {
    FREE[2]: ({"fault": "connection_reset"}, Failure.TRANSPORT_ERROR, r"RemoteProtocolError|ReadError"),
    FREE[3]: (
        {"fault": "connection_reset", "fault_after_tokens": 2},
        Failure.TRANSPORT_ERROR,
        r"RemoteProtocolError|ReadError",
    ),
    FREE[4]: ({"fault": "never_answer"}, Failure.TIMEOUT, r"ReadTimeout"),
    FREE[5]: ({"fault": "stall_after_tokens"}, Failure.TIMEOUT, r"ReadTimeout"),
    FREE[6]: ({"fault": "truncated_json"}, Failure.TRANSPORT_ERROR, r"InvalidStreamError"),
    FREE[7]: (
        {"fault": "huge_body", "huge_body_bytes": 3_000_000},
        Failure.TRANSPORT_ERROR,
        r"ResponseTooLargeError",
    ),
    FREE[8]: ({"fault": "invalid_utf8"}, Failure.TRANSPORT_ERROR, r"InvalidStreamError"),
    # 504: TIMEOUT. Live bodies carry no error_type, so no error code is stored.
    FREE[9]: ({"fault": "storm_5xx"}, Failure.PROVIDER_ERROR, r""),
    FREE[10]: ({"fault": "storm_429"}, Failure.RATE_LIMIT_UPSTREAM, r".*"),
}
MAX_ATTEMPTS = 3
BACKOFF_BASE_S = 0.2
MAX_RESPONSE_BYTES = 200_000
TTFT_MS = 60


@pytest.fixture(scope="module")
def faulted_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One discovery over the faulted sandbox (module-scoped: every assertion below reads it)."""
    tmp = tmp_path_factory.mktemp("faults")
    scenario = write_scenario(
        tmp / "faults.json",
        {
            "limits": {"requests_per_minute": 6000},  # pacing must not be what this run waits for
            "catalog": only([*HEALTHY, *FAULTS]),
            "defaults": {"behavior": "ok", "ttft_ms": TTFT_MS, "total_ms": 150, "keepalive_ms": 0},
            "models": {model: spec for model, (spec, _, _) in FAULTS.items()},
        },
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "DISCOVERY_READ_TIMEOUT_S": "0.8",
            "DISCOVERY_PROBE_DEADLINE_S": "5",
            "DISCOVERY_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "DISCOVERY_BACKOFF_BASE_S": str(BACKOFF_BASE_S),
            "DISCOVERY_BACKOFF_MAX_S": "1",
            "DISCOVERY_MAX_RESPONSE_BYTES": str(MAX_RESPONSE_BYTES),
            "DISCOVERY_MAX_CONCURRENCY": "12",
        }.items():
            mp.setenv(name, value)
        summary = run_plain(tmp / "data", tmp / "docs", source="sandbox", scenario=str(scenario))
    db = Path(summary.database)
    return {
        "summary": summary,
        "probes": table(db, "probes", summary.run_id),
        "results": table(db, "model_results", summary.run_id),
        "runs": table(db, "runs"),
        "folder": Path(summary.run_dir),
    }


def _attempts(probes: pl.DataFrame, model: str) -> pl.DataFrame:
    return probes.filter(pl.col("model_id") == model).sort(["task", "sample", "attempt"])


def test_the_run_completes_and_stores_every_probe(faulted_run: dict[str, object]) -> None:
    summary = faulted_run["summary"]
    probes: pl.DataFrame = faulted_run["probes"]  # type: ignore[assignment]
    assert summary.status == "completed"  # type: ignore[attr-defined]
    assert summary.untested_models == 0  # type: ignore[attr-defined]
    runs: pl.DataFrame = faulted_run["runs"]  # type: ignore[assignment]
    assert runs.filter(pl.col("run_id") == summary.run_id).get_column("status").to_list() == ["completed"]  # type: ignore[attr-defined]
    finals = final_attempts(probes)
    assert finals.height == len([*HEALTHY, *FAULTS]) * 3  # one final attempt per model and task
    # Nothing lost between the checkpoints written while probing and the database.
    parts = pl.read_parquet(faulted_run["folder"] / "probes.parquet")  # type: ignore[operator]
    assert parts.height == probes.height


def test_healthy_models_are_untouched_by_the_faults_of_others(faulted_run: dict[str, object]) -> None:
    probes: pl.DataFrame = faulted_run["probes"]  # type: ignore[assignment]
    results: pl.DataFrame = faulted_run["results"]  # type: ignore[assignment]
    for model in HEALTHY:
        mine = _attempts(probes, model)
        assert mine.height == 3 and mine.get_column("passed").all(), mine.select("task", "failure", "message")
        assert mine.get_column("attempt").to_list() == [1, 1, 1]
        # Measured as staged, not inflated by the stalled and oversized answers next to them.
        assert mine.get_column("ttft_content_ms").max() < TTFT_MS + 400
        verdict = results.filter(pl.col("model_id") == model).row(0, named=True)
        assert verdict["verdict"] == "working" and verdict["success_rate"] == 1.0


@pytest.mark.parametrize("model", list(FAULTS), ids=[str(spec["fault"]) for spec, _, _ in FAULTS.values()])
def test_each_fault_ends_in_its_failure_class(faulted_run: dict[str, object], model: str) -> None:
    spec, expected, code = FAULTS[model]
    probes: pl.DataFrame = faulted_run["probes"]  # type: ignore[assignment]
    results: pl.DataFrame = faulted_run["results"]  # type: ignore[assignment]
    mine = _attempts(probes, model)
    assert not mine.get_column("passed").any()
    # Every failure class of these faults allows a retry: each probe was tried MAX_ATTEMPTS times.
    per_probe = mine.group_by("task").agg(pl.col("attempt").sort())
    assert sorted(per_probe.get_column("attempt").to_list()) == [list(range(1, MAX_ATTEMPTS + 1))] * 3
    for row in mine.iter_rows(named=True):
        failure = Failure(row["failure"])
        if spec["fault"] == "storm_5xx":
            assert row["http_status"] in (500, 502, 503, 504)
            assert failure is (Failure.TIMEOUT if row["http_status"] == 504 else Failure.PROVIDER_ERROR)
        else:
            assert failure is expected, row
        assert re.fullmatch(code, row["error_code"] or ""), row["error_code"]
    verdict = results.filter(pl.col("model_id") == model).row(0, named=True)
    assert verdict["verdict"] == "failing"
    if spec["fault"] != "storm_5xx":
        assert verdict["root_cause"] == expected.value


def test_partial_streams_keep_what_arrived(faulted_run: dict[str, object]) -> None:
    probes: pl.DataFrame = faulted_run["probes"]  # type: ignore[assignment]
    reset_late = _attempts(probes, FREE[3])  # reset after 2 content deltas
    stalled = _attempts(probes, FREE[5])  # 3 deltas, then silence
    for frame in (reset_late, stalled):
        assert frame.get_column("ttft_content_ms").is_not_null().all()
        assert frame.get_column("reply_excerpt").is_not_null().all()
    assert _attempts(probes, FREE[2]).get_column("http_status").is_null().all()  # reset before a byte


def test_oversized_bodies_are_cut_at_the_cap(faulted_run: dict[str, object]) -> None:
    huge = _attempts(faulted_run["probes"], FREE[7])  # type: ignore[arg-type]
    for message in huge.get_column("message").to_list():
        assert f"exceeds {MAX_RESPONSE_BYTES} bytes" in message
    # The excerpt of what was read is capped too: nothing near the 3 MB the server sent is kept.
    assert all(len(m) <= 500 for m in huge.get_column("message").to_list())


def test_storms_without_hints_back_off_exponentially(faulted_run: dict[str, object]) -> None:
    """No Retry-After or reset hint: the waits come from the backoff (equal jitter: at least half a
    step of BACKOFF_BASE_S * 2^(n-1)), and a provider's 429 never pauses or stops the account."""
    probes: pl.DataFrame = faulted_run["probes"]  # type: ignore[assignment]
    for model in (FREE[9], FREE[10]):
        mine = _attempts(probes, model)
        assert mine.get_column("retry_after_s").is_null().all()
        for _, group in mine.group_by("task"):
            starts = group.sort("attempt").get_column("started_at").to_list()
            for n, (earlier, later) in enumerate(itertools.pairwise(starts), start=1):
                least = timedelta(seconds=BACKOFF_BASE_S * 2 ** (n - 1) / 2 + TTFT_MS / 1000)
                assert later - earlier >= least, (model, n, later - earlier)
    assert Failure.RATE_LIMIT_ACCOUNT.value not in probes.get_column("failure").to_list()


# --- hostile catalog strings and replies -------------------------------------------------------------

ID_MARKUP = "evil/x|y`z`<b>bold</b>[l](https://e.example)$m$#h*i*:free"  # answers correctly
ID_CONTROL = "evil/ctrl\x01\x07\x1b[31mred\u202eesrever:free"  # answers correctly
ID_TEMPLATE = "evil/{{ 7*7 }}{% raw %}__import__('os'):free"  # replies with code
ID_HTML = "evil/<img src=x onerror=alert(1)>:free"  # replies with a template injection and HTML
GFM = MarkdownIt("commonmark").enable("table")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A discovery whose catalog ids, provider name and model replies are hostile."""
    tmp = tmp_path_factory.mktemp("hostile")
    marker = tmp / "executed"
    replies = {
        # each would create the marker file if anything executed it, as code or as a template
        ID_TEMPLATE: f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')",
        ID_HTML: (
            f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}"
            '<script>fetch("https://e.example")</script>\n# H\n| a | b |\n![x](https://e.example/x.png)'
        ),
    }
    scenario = write_scenario(
        tmp / "hostile.json",
        {
            "limits": {"requests_per_minute": 6000},
            "catalog": {**only([FREE[0]]), "add_free": [ID_MARKUP, ID_CONTROL, ID_TEMPLATE, ID_HTML]},
            "defaults": {"behavior": "ok", "ttft_ms": 30, "total_ms": 60},
            "models": {
                ID_TEMPLATE: {"answer": replies[ID_TEMPLATE]},
                ID_HTML: {"answer": replies[ID_HTML], "provider": "<img src=x onerror=alert(2)>|`p`"},
            },
        },
    )
    summary = run_plain(tmp / "data", tmp / "docs", source="sandbox", scenario=str(scenario))
    return {"summary": summary, "marker": marker, "docs": tmp / "docs"}


def test_model_output_is_graded_as_text_and_never_executed(hostile_run: dict[str, object]) -> None:
    summary = hostile_run["summary"]
    assert summary.status == "completed" and summary.tested_models == 5  # type: ignore[attr-defined]
    assert not hostile_run["marker"].exists(), "a model reply was executed"  # type: ignore[attr-defined]
    probes = table(Path(summary.database), "probes", summary.run_id)  # type: ignore[attr-defined]
    assert {ID_MARKUP, ID_CONTROL, ID_TEMPLATE, ID_HTML} <= set(probes.get_column("model_id").to_list())
    for model, passed in ((ID_MARKUP, True), (ID_CONTROL, True), (ID_TEMPLATE, False), (ID_HTML, False)):
        mine = probes.filter(pl.col("model_id") == model)
        assert mine.get_column("passed").to_list() == [passed] * 3, model
        if not passed:
            assert set(mine.get_column("failure").to_list()) == {Failure.WRONG_ANSWER.value}


def test_hostile_catalog_strings_and_replies_cannot_break_the_reports(hostile_run: dict[str, object]) -> None:
    docs: Path = hostile_run["docs"]  # type: ignore[assignment]
    markdown = sorted(docs.glob("*.md"))
    assert markdown
    for path in markdown:
        text = path.read_text(encoding="utf-8")
        html = GFM.render(text)
        assert "<script" not in html and "<img src=x" not in html and "<b>" not in html, path
        outside_code = re.sub(r"<code>.*?</code>", "", html, flags=re.S)
        assert "https://e.example" not in outside_code and 'href="https://e' not in html, path
        assert not re.search(r"^<h\d>H</h\d>$", html, flags=re.M), path  # no injected heading
    # Template syntax from the catalog is shown as it is, never evaluated.
    assert any("{{ 7" in p.read_text(encoding="utf-8") for p in markdown)
    # The exports keep the exact ids: they are what a router sends to OpenRouter.
    rotation = json.dumps(json.loads((docs / "rotation.json").read_text(encoding="utf-8")))
    assert json.dumps(ID_MARKUP)[1:-1] in rotation and json.dumps(ID_CONTROL)[1:-1] in rotation
    router = yaml.safe_load((docs / "litellm-router.yaml").read_text(encoding="utf-8"))
    assert ID_MARKUP in json.dumps(router, ensure_ascii=False)


def test_control_characters_in_catalog_strings_are_neutralised(hostile_run: dict[str, object]) -> None:
    docs: Path = hostile_run["docs"]  # type: ignore[assignment]
    for path in sorted(docs.glob("*.md")):
        assert not CONTROL.search(path.read_text(encoding="utf-8")), path
    for path in sorted(docs.glob("charts/*.svg")):
        ET.fromstring(path.read_text(encoding="utf-8"))  # well-formed XML

"""The reports: snapshots of every document, the failure sections, safe rendering, writing and loading.

Snapshots live in ``tests/unit/snapshots/render/``. After an intended change, regenerate them with
``UPDATE_SNAPSHOTS=1 uv run pytest tests/unit/test_render.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import stat
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from markdown_it import MarkdownIt

from freemodels import storage
from freemodels.errors import RunNotFoundError, StorageError
from freemodels.failures import FAILURE_INFO, Failure
from freemodels.records import (
    AVAILABILITY_SCHEMA,
    CATALOG_SCHEMA,
    CHANGES_SCHEMA,
    MODEL_RESULTS_SCHEMA,
    PROBES_SCHEMA,
    RUNS_SCHEMA,
    Verdict,
)
from freemodels.storage import HISTORY_SCHEMA, ReportData
from tasks.rank import assign_tiers, build_rotation
from tasks.render import (
    AVAILABILITY_CHART,
    CAPABILITY_MATRIX,
    EXECUTIVE_SUMMARY,
    FINAL_REPORT,
    INDEX,
    LATENCY_CHART,
    LITELLM_YAML,
    ROOT_CAUSES,
    ROTATION_JSON,
    TREND_CHART,
    ReportOptions,
    render_all,
    render_and_write,
    render_documents,
    write_documents,
)
from tests.unit.test_render_state import (
    OLD_RUN_ID,
    PARTIAL_ID,
    PREV_RUN_ID,
    RUN_ID,
    STARTED,
    WORKING,
    fixed_report_data,
    fixed_state,
    report_data_from,
    state_counts,
)

COUNTS = state_counts()

SNAPSHOTS = Path(__file__).parent / "snapshots" / "render"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"
MARKDOWN = (EXECUTIVE_SUMMARY, FINAL_REPORT, ROOT_CAUSES, CAPABILITY_MATRIX, INDEX)
GFM = MarkdownIt("commonmark").enable("table")
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
HOSTILE = (
    "x|y `tick` <script>alert(1)</script> [click](https://evil.example/p) "
    "![i](http://evil.example/i.png) *b* _i_ $m$ www.evil.example me@evil.example\n"
    "# H\n- li\n| c | d |\n<img src=x onerror=alert(1)>"
)


@pytest.fixture(scope="module")
def documents() -> dict[str, str]:
    return render_documents(fixed_report_data())


# --- snapshots ---------------------------------------------------------------------------------


def test_every_document_is_rendered(documents: dict[str, str]) -> None:
    assert set(documents) == {
        EXECUTIVE_SUMMARY,
        FINAL_REPORT,
        ROOT_CAUSES,
        CAPABILITY_MATRIX,
        INDEX,
        LATENCY_CHART,
        "charts/failures.svg",
        TREND_CHART,
        AVAILABILITY_CHART,
        ROTATION_JSON,
        LITELLM_YAML,
    }
    stored = {p.relative_to(SNAPSHOTS).as_posix() for p in SNAPSHOTS.rglob("*") if p.is_file()}
    if not UPDATE:
        assert stored == set(documents), "snapshots and documents differ; see the module docstring"


@pytest.mark.parametrize(
    "name",
    [
        EXECUTIVE_SUMMARY,
        FINAL_REPORT,
        ROOT_CAUSES,
        CAPABILITY_MATRIX,
        INDEX,
        LATENCY_CHART,
        "charts/failures.svg",
        TREND_CHART,
        AVAILABILITY_CHART,
        ROTATION_JSON,
        LITELLM_YAML,
    ],
)
def test_document_matches_snapshot(documents: dict[str, str], name: str) -> None:
    snapshot = SNAPSHOTS / name
    if UPDATE:
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(documents[name], encoding="utf-8", newline="\n")
    assert snapshot.is_file(), f"no snapshot {snapshot}; run with UPDATE_SNAPSHOTS=1"
    assert documents[name] == snapshot.read_text(encoding="utf-8"), (
        f"{name} differs from its snapshot; if intended, run with UPDATE_SNAPSHOTS=1"
    )


def test_rendering_is_deterministic(documents: dict[str, str]) -> None:
    assert render_documents(fixed_report_data()) == documents


# --- content -----------------------------------------------------------------------------------


def _sections(markdown: str, level: str = "### ") -> dict[str, str]:
    parts = re.split(rf"^{re.escape(level)}", markdown, flags=re.MULTILINE)[1:]
    return {p.split("\n", 1)[0].strip(): p for p in parts}


def test_every_failure_class_has_its_section_and_remedy(documents: dict[str, str]) -> None:
    sections = _sections(documents[ROOT_CAUSES])
    for failure in Failure:
        info = FAILURE_INFO[failure]
        assert info.title in sections, f"no section for {failure}"
        body = sections[info.title]
        assert f"`{failure.value}`" in body
        assert f"**Remedy:** {info.remedy}" in body
        assert f"**What it means:** {info.explanation}" in body
        assert "_Not seen in this run._" not in body, "the fixed state shows every class"


def test_failure_sections_exist_even_when_nothing_failed() -> None:
    state = fixed_state()
    state["probes"] = [p for p in state["probes"] if p["failure"] is None]
    for row in state["results"]:
        row["root_cause"] = None
    rca = render_documents(report_data_from(state))[ROOT_CAUSES]
    sections = _sections(rca)
    for failure in Failure:
        assert FAILURE_INFO[failure].remedy in sections[FAILURE_INFO[failure].title]
        assert "_Not seen in this run._" in sections[FAILURE_INFO[failure].title]


def test_wrong_ids_show_the_suggested_id(documents: dict[str, str]) -> None:
    assert (
        "| `meta-llama/llama-3.3-70b:free` | `meta-llama/llama-3.3-70b-instruct:free` |"
        in documents[ROOT_CAUSES]
    )


def test_final_report_tiers_every_working_model_with_statistics(
    documents: dict[str, str],
) -> None:
    report = documents[FINAL_REPORT]
    sections = _sections(report)
    assert "`meta-llama/llama-3.2-3b-instruct:free`" in sections["ultra-fast (P50 < 2 s)"]
    assert "`google/gemma-3-27b-it:free`" in sections["fast (2 s ≤ P50 < 5 s)"]
    assert "`deepseek/deepseek-r1:free`" in sections["slow (P50 ≥ 15 s)"]
    too_few = sections["Too few samples"]
    assert "`qwen/qwen3-8b:free`" in too_few and "67 % (2/3)" in too_few
    # P50/P90 of total and TTFT, success with passed/n, answers, and the reasoning flag.
    row = next(line for line in report.splitlines() if "`deepseek/deepseek-r1:free` | Chutes | slow" in line)
    assert row.split(" | ")[3:] == [
        "21.00 s",
        "— (n=3)",  # three answers: a P90 needs ten
        "6.30 s",
        "— (n=3)",
        "16.80 s",
        "100 % (3/3)",
        "3",
        "3/3",
        "reasoning (answer only in reasoning) |",
    ]
    shown = render_documents(fixed_report_data(), ReportOptions(min_answers_for_tail=3))[FINAL_REPORT]
    row = next(line for line in shown.splitlines() if "`deepseek/deepseek-r1:free` | Chutes | slow" in line)
    assert row.split(" | ")[4] == "29.40 s" and row.split(" | ")[6] == "9.45 s"


def test_headline_numbers_and_change(documents: dict[str, str]) -> None:
    summary = documents[EXECUTIVE_SUMMARY]
    assert f"| Free models | {COUNTS['free']} |" in summary
    assert "| Working | 7 (+ 1 degraded) |" in summary
    assert "`meta-llama/llama-3.2-3b-instruct:free`: P50 0.90 s" in summary
    assert "| Change since the previous run (2026-10-01) | free +1, working −1 |" in summary
    for link in ("final-report.md", "root-cause-analysis.md", "capability-matrix.md"):
        assert f"]({link})" in summary


def test_changes_appear_in_summary_and_index(documents: dict[str, str]) -> None:
    for name in (EXECUTIVE_SUMMARY, INDEX):
        text = documents[name]
        assert "- **Free variant ended** (1): `acme/free-variant-ended-7b:free`" in text
        assert "- **Changed tier** (1): `meta-llama/llama-3.3-70b-instruct:free`" in text


def test_index_links_every_document_and_the_history(documents: dict[str, str]) -> None:
    index = documents[INDEX]
    for name in (EXECUTIVE_SUMMARY, FINAL_REPORT, ROOT_CAUSES, CAPABILITY_MATRIX, ROTATION_JSON):
        assert f"]({name})" in index
    for month in ("2026-09", "2026-10", "2026-11"):
        assert f"[{month}](history/{month}/final-report.md)" in index
    assert "(this run)" in index


def test_capability_matrix_lists_every_free_model_by_family(documents: dict[str, str]) -> None:
    matrix = documents[CAPABILITY_MATRIX]
    data = fixed_report_data()
    free = data.catalog.filter(pl.col("is_free") & ~pl.col("is_router"))
    for model_id in free.get_column("model_id"):
        assert f"| `{model_id}` |" in matrix
    assert "openrouter/free" not in matrix and "openai/gpt-4o" not in matrix
    families = _sections(matrix, "## ")
    assert "`google/gemma-3-27b-it:free`" in families["google/gemma"]
    row = next(line for line in matrix.splitlines() if "`qwen/qwen3-8b:free`" in line)
    assert "| pass | pass | fail (empty_reply) |" in row


def test_charts_draw_one_mark_per_item(documents: dict[str, str]) -> None:
    def ids(svg: str, prefix: str) -> list[str]:
        return [el.get("id", "") for el in ET.fromstring(svg).iter() if el.get("id", "").startswith(prefix)]

    assert len(ids(documents[LATENCY_CHART], "latency-p50-")) == len(WORKING)
    # "passed" plus one bar per failure class seen in the fixed state (all of them).
    assert len(ids(documents["charts/failures.svg"], "outcome-")) == 1 + len(Failure)
    assert ids(documents[TREND_CHART], "trend-") == ["trend-free", "trend-working"]


def test_sandbox_data_is_labelled_everywhere(documents: dict[str, str]) -> None:
    for name in MARKDOWN:
        assert "**Sandbox data, not real measurements.**" in documents[name], name
    for name in (LATENCY_CHART, "charts/failures.svg", TREND_CHART):
        assert "Sandbox data (simulated)" in documents[name], name
    assert "warning" in json.loads(documents[ROTATION_JSON])
    assert "# WARNING: Sandbox data" in documents[LITELLM_YAML]


def test_openrouter_source_has_no_sandbox_banner() -> None:
    docs = render_documents(fixed_report_data(source="openrouter"))
    for name in MARKDOWN:
        assert "Sandbox" not in docs[name]
        assert "Data source: OpenRouter at `https://openrouter.ai/api/v1`" in docs[name]
    assert "Sandbox" not in docs[TREND_CHART]


def test_base_url_source_shows_its_notes() -> None:
    note = "The server lacked OpenRouter's extras: no pricing, no usage."
    docs = render_documents(fixed_report_data(source="base_url", notes=[note]))
    for name in MARKDOWN:
        assert "an OpenAI-compatible server (not OpenRouter) at `http://127.0.0.1:8080/v1`" in (docs[name])
        assert f"> [!NOTE]\n> {note}" in docs[name]
    config = yaml.safe_load(docs[LITELLM_YAML])
    assert config["model_list"][0]["litellm_params"]["api_base"] == "http://127.0.0.1:8080/v1"


def test_models_left_untested_are_explained_and_no_lifecycle_status_is_printed() -> None:
    state = fixed_state()
    untested = [r for r in state["results"] if r["verdict"] == "untested_quota"]
    assert len(untested) == 1
    docs = render_documents(report_data_from(state))
    summary = docs[EXECUTIVE_SUMMARY]
    assert "Left untested because the daily request quota ran out: 1 free model," in summary
    assert f"`discovery run --resume {RUN_ID}` tests them" in summary
    assert "1 left untested by the daily quota" in summary
    # The documents are written before the run's last steps: no "status" they could contradict.
    for name in MARKDOWN:
        assert "status **" not in docs[name]
    free, tested = COUNTS["free"], COUNTS["tested"]
    coverage = (
        f"| Coverage | {tested} of {free} free models judged (1 from its listing alone), "
        "1 left untested by the daily quota |"
    )
    assert coverage in docs[FINAL_REPORT]


def test_the_reason_models_were_left_untested_is_the_one_that_happened() -> None:
    """The header and the coverage name what stopped the probing: the run's own budget while the
    daily quota still had requests, or the account's limit ending the rounds, not the daily quota."""
    from freemodels.rounds import ACCOUNT_LIMIT_STALLED

    state = fixed_state()
    settings = json.loads(state["run"]["settings_json"] or "{}")
    settings["parameters"] = {**settings.get("parameters", {}), "budget": 40}
    state["run"]["settings_json"] = json.dumps(settings)
    state["run"]["quota_after"] = 930
    summary = render_documents(report_data_from(state))[EXECUTIVE_SUMMARY]
    assert "Left untested because the run's budget of 40 requests was spent: 1 free model," in summary
    assert "1 left untested by the run's budget" in summary and "daily request quota" not in summary
    assert "tests them with a budget that allows more (`--budget N`, or none)." in summary

    state["run"]["notes"] = json.dumps([ACCOUNT_LIMIT_STALLED])
    summary = render_documents(report_data_from(state))[EXECUTIVE_SUMMARY]
    assert "Left untested because the account's own request limit refused their probes" in summary
    assert "1 left untested by the account's own limit" in summary and "daily request quota" not in summary


def test_a_run_that_tested_everything_says_so() -> None:
    state = fixed_state()
    for row in state["results"]:
        if row["verdict"] == "untested_quota":
            row["verdict"] = "failing"
    state["history"][-1]["tested"] += 1  # what the read path counts for the run
    docs = render_documents(report_data_from(state))
    assert f"all {COUNTS['free']} free models judged" in docs[EXECUTIVE_SUMMARY]
    assert "left untested" not in docs[EXECUTIVE_SUMMARY]


def test_no_previous_run_and_no_working_model() -> None:
    state = fixed_state()
    state["results"] = [r for r in state["results"] if r["verdict"] != "working"]
    data = report_data_from(state)
    data = ReportData(**{**_fields(data), "previous_run": None, "changes": data.changes.clear()})
    docs = render_documents(data)
    summary = docs[EXECUTIVE_SUMMARY]
    assert "| Fastest primary (general) | no working model |" in summary
    assert "no earlier run of this source to compare with" in summary
    assert "_No working model, so no rotation._" in summary
    assert json.loads(docs[ROTATION_JSON])["purposes"] == {}
    assert "No working model was tiered" in docs[LATENCY_CHART]


def _fields(data: ReportData) -> dict[str, object]:
    return {name: getattr(data, name) for name in ReportData.__slots__}


# --- safe rendering ----------------------------------------------------------------------------


def _structure(markdown: str) -> Counter[str]:
    """Counts of every block and inline construct except plain text and code spans."""
    ignored = {"text", "code_inline", "inline", "softbreak", "paragraph_open", "paragraph_close"}
    counts: Counter[str] = Counter()
    for token in GFM.parse(markdown):
        if token.type not in ignored:
            counts[token.type] += 1
        for child in token.children or []:
            if child.type not in ignored:
                counts[child.type] += 1
    return counts


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def _table_rows(markdown: str) -> list[list[str]]:
    tables: list[list[str]] = []
    current: list[str] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables


@pytest.fixture(scope="module")
def hostile_pair() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    benign_state = fixed_state(notes=["A plain note."])
    ids = [r["model_id"] for r in benign_state["results"]] + [c["model_id"] for c in benign_state["changes"]]
    names = {model_id: f"evil{i}/{HOSTILE}:free" for i, model_id in enumerate(dict.fromkeys(ids))}
    hostile = render_documents(report_data_from(fixed_state(names=names, hostile=HOSTILE, notes=[HOSTILE])))
    benign = render_documents(report_data_from(benign_state))
    return benign, hostile, names


def test_hostile_strings_do_not_change_the_document_structure(hostile_pair) -> None:
    benign, hostile, _ = hostile_pair
    for name in MARKDOWN:
        assert _structure(hostile[name]) == _structure(benign[name]), name


def test_hostile_strings_leave_no_markup_or_link(hostile_pair) -> None:
    benign, hostile, _ = hostile_pair
    for name in MARKDOWN:
        # Code spans show their content verbatim (no tags, no links), so only the rest is checked raw.
        text = CODE_SPAN.sub("", hostile[name])
        lowered = text.lower()
        assert "<script" not in lowered and "<img" not in lowered, name
        for url in ("https://evil", "http://evil", "www.evil", "me@evil"):
            assert url not in text, (name, url)
        assert not re.search(r"(?<!\\)\]\(http", text), name
        rendered = GFM.render(hostile[name])
        assert "evil.example" not in "".join(re.findall(r'(?:href|src)="[^"]*"', rendered)), name
        assert "<script" not in rendered, name
        assert len(re.findall(r"<img ", rendered)) == GFM.render(benign[name]).count("<img "), name


def test_hostile_strings_keep_every_table_row_intact(hostile_pair) -> None:
    _, hostile, _ = hostile_pair
    for name in MARKDOWN:
        for table in _table_rows(hostile[name]):
            widths = {_unescaped_pipes(row) for row in table}
            assert len(widths) == 1, (name, table[0], widths)


def test_hostile_strings_survive_the_exports_and_charts(hostile_pair) -> None:
    _, hostile, names = hostile_pair
    rotation = json.loads(hostile[ROTATION_JSON])
    assert rotation["purposes"]["general"]["model"] in names.values()
    config = yaml.safe_load(hostile[LITELLM_YAML])
    assert {e["model_name"] for e in config["model_list"]} >= set(rotation["purposes"]["general"]["models"])
    for chart in (LATENCY_CHART, "charts/failures.svg", TREND_CHART):
        root = ET.fromstring(hostile[chart])
        assert not [el for el in root.iter() if el.tag.lower().endswith("script")], chart
        assert "<script" not in hostile[chart]


# --- artifacts ---------------------------------------------------------------------------------


def test_summary_markdown_has_no_relative_links() -> None:
    text = render_all(fixed_report_data()).summary_markdown
    assert f"| Free models | {COUNTS['free']} |" in text
    assert "- `rotation.json`: merge" in text and "- `litellm-router.yaml`: load it" in text
    assert ".md)" not in text and ".svg)" not in text and ".json)" not in text


def test_rotation_exports_cap_models_and_say_how_to_use_them(documents: dict[str, str]) -> None:
    rotation = json.loads(documents[ROTATION_JSON])
    assert max(len(c) for c in rotation["chains"].values()) > 3  # the fixed state has chains to cut
    for purpose, fields in rotation["purposes"].items():
        assert fields["models"] == rotation["chains"][purpose][:3]
    litellm = yaml.safe_load(documents[LITELLM_YAML])
    fallbacks = {k: v for entry in litellm["router_settings"]["fallbacks"] for k, v in entry.items()}
    assert fallbacks == {p: c[1:] for p, c in rotation["chains"].items() if len(c) > 1}
    section = documents[EXECUTIVE_SUMMARY].split("## Rotation", 1)[1].split("\n## ", 1)[0]
    assert "[rotation.json](rotation.json): merge `purposes" in section and "at most 3 ids" in section
    assert "[litellm-router.yaml](litellm-router.yaml): load it with" in section


def test_the_models_limit_reaches_every_render() -> None:
    data = fixed_report_data()
    rendered = render_all(data, ReportOptions(models_limit=2))
    documents = rendered.documents
    rotation = json.loads(documents[ROTATION_JSON])
    assert rotation["models_limit"] == 2
    assert all(len(f["models"]) <= 2 for f in rotation["purposes"].values())
    assert "at most 2 ids" in documents[EXECUTIVE_SUMMARY]
    assert "at most 2 ids" in rendered.summary_markdown


def test_report_command_renders_with_the_models_limit_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.runner import render_reports

    data = fixed_report_data()
    (tmp_path / "data").mkdir()
    with storage.connect(tmp_path / "data" / "discovery.duckdb") as con:  # the migrated schema
        _store(con, data, extra_runs=[], into_existing=True)
    monkeypatch.setenv("DISCOVERY_ROTATION_MODELS_LIMIT", "1")
    render_reports(run_id=RUN_ID, data_dir=str(tmp_path / "data"), docs_dir=str(tmp_path / "docs"))
    rotation = json.loads((tmp_path / "docs" / ROTATION_JSON).read_text(encoding="utf-8"))
    assert {p: f["models"] for p, f in rotation["purposes"].items()} == {
        p: c[:1] for p, c in rotation["chains"].items()
    }


def test_tiers_table_rows() -> None:
    rows = render_all(fixed_report_data()).tiers
    assert [r["model"] for r in rows] == [*WORKING, PARTIAL_ID, "qwen/qwen3-8b:free"]
    assert rows[0] == {
        "model": "meta-llama/llama-3.2-3b-instruct:free",
        "provider": "Together",
        "tier": "ultra-fast",
        "p50_total": "0.90 s",
        "p90_total": "— (n=3)",  # three answers: no P90 below ten
        "p50_ttft": "0.27 s",
        "success": "100 %",
        "n": 3,
    }
    assert rows[-1]["tier"] == "too few samples"
    shown = render_all(fixed_report_data(), ReportOptions(min_answers_for_tail=3)).tiers
    assert shown[0]["p90_total"] == "1.26 s"


# --- writing -----------------------------------------------------------------------------------


def test_write_documents_writes_and_archives_the_month(tmp_path: Path) -> None:
    docs = {INDEX: "index\n", FINAL_REPORT: "report\n", LATENCY_CHART: "<svg/>\n"}
    written = write_documents(tmp_path / "docs", docs, run_date="2026-11-01")
    root = (tmp_path / "docs").resolve()
    assert sorted(p.relative_to(root).as_posix() for p in written) == sorted(
        [
            INDEX,
            FINAL_REPORT,
            LATENCY_CHART,
            f"history/2026-11/{FINAL_REPORT}",
            f"history/2026-11/{LATENCY_CHART}",
        ]
    )
    assert (root / "history/2026-11/final-report.md").read_text() == "report\n"
    assert not (root / "history/2026-11/index.md").exists()
    # A later month keeps the earlier month's copy.
    write_documents(root, {**docs, FINAL_REPORT: "december\n"}, run_date="2026-12")
    assert (root / FINAL_REPORT).read_text() == "december\n"
    assert (root / "history/2026-11/final-report.md").read_text() == "report\n"
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_write_documents_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="escapes"):
        write_documents(tmp_path, {"../outside.md": "x"}, run_date="2026-11-01")
    with pytest.raises(ValueError, match="YYYY-MM"):
        write_documents(tmp_path, {INDEX: "x"}, run_date="November")
    assert not (tmp_path.parent / "outside.md").exists()


# --- loading -----------------------------------------------------------------------------------


def _store(
    con: duckdb.DuckDBPyConnection, data: ReportData, *, extra_runs: list[dict], into_existing: bool = False
) -> None:
    """Create the tables (as the storage step does: every table carries run_id) and fill them
    (``into_existing``: fill the tables a migrated database already has)."""
    frames = {
        "runs": pl.DataFrame([data.run, data.previous_run, *extra_runs], schema=RUNS_SCHEMA),
        "catalog": data.catalog.select(pl.lit(RUN_ID).alias("run_id"), pl.all()),
        "probes": data.probes,
        "model_results": data.model_results,
        "rotation": data.rotation,
        "changes": data.changes,
        "endpoints": data.endpoints,
        "drill": data.drill,
    }
    # The previous run has the same catalog and results (so history counts can be checked).
    frames["catalog"] = pl.concat(
        [frames["catalog"], frames["catalog"].with_columns(pl.lit(PREV_RUN_ID).alias("run_id"))]
    )
    frames["model_results"] = pl.concat(
        [data.model_results, data.model_results.with_columns(pl.lit(PREV_RUN_ID).alias("run_id"))]
    )
    # Both runs' catalogs are their availability snapshots, as storing a run writes them.
    frames["availability"] = pl.concat(
        [
            data.catalog.select(
                pl.lit(run["run_id"]).alias("snapshot_id"),
                pl.lit("run").alias("kind"),
                pl.lit(run["source"]).alias("source"),
                pl.lit(run["started_at"]).alias("at"),
                "model_id",
                pl.lit(True).alias("listed"),
                (pl.col("is_free").fill_null(False) & ~pl.col("is_router").fill_null(False)).alias("free"),
                pl.lit(None, pl.Int64()).alias("endpoints"),
                pl.lit(None, pl.String()).alias("listing"),
                "expiration_date",
            )
            for run in (data.run, data.previous_run)
            if run is not None
        ]
    ).cast(pl.Schema(AVAILABILITY_SCHEMA))
    for table, frame in frames.items():
        con.register("frame", frame.to_arrow())
        if into_existing:
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM frame")
        else:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM frame")
        con.unregister("frame")


def test_report_data_reads_one_run_and_the_history(tmp_path: Path) -> None:
    data = fixed_report_data()
    later = {**data.run, "run_id": "later", "started_at": STARTED + timedelta(days=30)}
    other = {
        **data.run,
        "run_id": "other",
        "source": "openrouter",
        "started_at": STARTED - timedelta(minutes=1),
    }
    old = {**data.run, "run_id": OLD_RUN_ID, "started_at": datetime(2026, 9, 1, tzinfo=UTC)}
    with storage.connect(tmp_path / "d.duckdb") as con:  # the migrated schema
        _store(con, data, extra_runs=[later, other, old], into_existing=True)
        loaded = storage.report_data(con, RUN_ID)
        assert loaded.run["run_id"] == RUN_ID
        assert loaded.run["started_at"] == STARTED
        assert loaded.catalog.equals(data.catalog.sort("model_id"))
        assert loaded.probes.schema == pl.Schema(PROBES_SCHEMA)
        assert loaded.probes.height == data.probes.height
        assert loaded.model_results.equals(data.model_results.sort("model_id"))
        assert loaded.rotation.sort(["purpose", "rank"]).equals(data.rotation.sort(["purpose", "rank"]))
        assert loaded.changes.schema == pl.Schema(CHANGES_SCHEMA)
        assert loaded.endpoints is not None and data.endpoints is not None
        assert loaded.endpoints.height == data.endpoints.height > 0
        assert loaded.drill is not None and loaded.drill.height == data.drill.height  # type: ignore[union-attr]
        assert loaded.previous_run is not None and loaded.previous_run["run_id"] == PREV_RUN_ID
        history = loaded.history
        assert history.schema == pl.Schema(HISTORY_SCHEMA)
        # Runs up to this one (another source's too), never a later one.
        assert history.get_column("run_id").to_list() == [OLD_RUN_ID, PREV_RUN_ID, "other", RUN_ID]
        current = history.filter(pl.col("run_id") == RUN_ID).row(0, named=True)
        assert current == {**current, **COUNTS} and COUNTS["working"] == 7
        assert history.filter(pl.col("run_id") == OLD_RUN_ID)["catalog_size"].item() == 0
        # Free models over time: the two runs' snapshots, up to this run.
        assert loaded.availability is not None
        assert [d.isoformat() for d in loaded.availability.observed] == sorted(
            {data.previous_run["started_at"].date().isoformat(), STARTED.date().isoformat()}  # type: ignore[index]
        )
        assert sum(1 for m in loaded.availability.models if m.free_now) == COUNTS["free"]
        # The documents render from what was loaded; what does not depend on the history is the same.
        from_db, from_frames = render_documents(loaded), render_documents(data)
        assert f"| Free models | {COUNTS['free']} |" in from_db[EXECUTIVE_SUMMARY]
        for name in (ROOT_CAUSES, CAPABILITY_MATRIX, ROTATION_JSON, LITELLM_YAML):
            assert from_db[name] == from_frames[name], name

        written = render_and_write(con, RUN_ID, tmp_path / "docs")
        names = {p.relative_to((tmp_path / "docs").resolve()).as_posix() for p in written}
        assert {INDEX, FINAL_REPORT, f"history/2026-11/{FINAL_REPORT}"} <= names

        # Without stored changes the previous run is the latest earlier completed one of the same source.
        con.execute("DELETE FROM changes")
        assert storage.report_data(con, RUN_ID).previous_run["run_id"] == PREV_RUN_ID  # type: ignore[index]
        with pytest.raises(RunNotFoundError):
            storage.report_data(con, "missing")


def test_report_data_reports_missing_tables(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as con, pytest.raises(StorageError):
        storage.report_data(con, RUN_ID)


def test_free_tested_and_previous_have_one_definition(tmp_path: Path) -> None:
    """The counts the reports show come from the read path's history query, whose definitions of
    free (not a router) and tested (working, degraded, failing) are the only ones."""
    data = fixed_report_data()
    with storage.connect(tmp_path / "d.duckdb") as con:
        _store(con, data, extra_runs=[], into_existing=True)
        row = storage.history(con).filter(pl.col("run_id") == RUN_ID).row(0, named=True)
    free = data.catalog.filter(pl.col("is_free") & ~pl.col("is_router"))
    assert row["free"] == free.height
    tested = data.model_results.filter(pl.col("verdict").is_in(storage.TESTED_VERDICTS))
    assert row["tested"] == tested.height
    # A router marked free in a catalog is not a free model, here or in the reports.
    assert data.catalog.filter(pl.col("is_router") & pl.col("is_free")).height >= 1


def test_the_context_is_built_once_per_render(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.render as render

    calls: list[str] = []
    real = render.build_context

    def counting(*args: object, **kwargs: object) -> dict[str, object]:
        calls.append("built")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(render, "build_context", counting)
    rendered = render.render_all(fixed_report_data())
    assert calls == ["built"]
    assert rendered.summary_markdown and rendered.tiers and len(rendered.documents) == 11


# --- scale -------------------------------------------------------------------------------------


def _rows(rows: list[dict[str, object]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A frame with ``schema`` from partial rows (missing columns are null)."""
    return pl.DataFrame([{**dict.fromkeys(schema), **row} for row in rows], schema=schema)


def test_renders_120_monthly_runs_of_100_models() -> None:
    """Every document and the trend chart from 120 runs x 100 free models (no timing assertion)."""
    ids = [f"vendor{i % 25}/model-{i}:free" for i in range(100)]
    catalog = _rows(
        [
            {
                "model_id": model_id,
                "family": model_id.split("/")[0],
                "is_free": True,
                "is_router": False,
                "context_length": 131_072,
                "input_modalities": ["text"],
                "output_modalities": ["text"],
            }
            for model_id in ids
        ],
        CATALOG_SCHEMA,
    )
    failures = list(Failure)
    results = _rows(
        [
            {
                "run_id": "run-119",
                "model_id": model_id,
                "family": model_id.split("/")[0],
                "verdict": Verdict.WORKING.value if i % 2 else Verdict.FAILING.value,
                "n": 3,
                "n_ok": 3 if i % 2 else 0,
                "n_passed": 3 if i % 2 else 0,
                "success_rate": 1.0 if i % 2 else 0.0,
                "p50_total_ms": 400.0 * (i + 1) if i % 2 else None,
                "p90_total_ms": 500.0 * (i + 1) if i % 2 else None,
                "root_cause": None if i % 2 else failures[i % len(failures)].value,
                "tasks_passed": "arithmetic,json_object,reverse_words" if i % 2 else "",
            }
            for i, model_id in enumerate(ids)
        ],
        MODEL_RESULTS_SCHEMA,
    )
    results = assign_tiers(results, min_samples=3)
    months = [datetime(2016 + m // 12, m % 12 + 1, 1, 6, tzinfo=UTC) for m in range(120)]
    history = _rows(
        [
            {
                "run_id": f"run-{m:03d}",
                "started_at": at,
                "source": "sandbox",
                "status": "completed",
                "catalog_size": 300 + m,
                "free": 80 + m % 20,
                "tested": 80,
                "working": 40 + m % 10,
            }
            for m, at in enumerate(months)
        ],
        HISTORY_SCHEMA,
    )
    run = {**fixed_report_data().run, "run_id": "run-119", "started_at": months[-1]}
    big = ReportData(
        run=run,
        catalog=catalog,
        probes=pl.DataFrame(schema=PROBES_SCHEMA),
        model_results=results,
        rotation=build_rotation(results, catalog, run_id="run-119"),
        changes=pl.DataFrame(schema=CHANGES_SCHEMA),
        history=history,
        previous_run=None,
    )
    docs = render_documents(big)
    svg = ET.fromstring(docs[TREND_CHART])
    line = svg.find(".//svg:g[@id='trend-working']/svg:path", {"svg": "http://www.w3.org/2000/svg"})
    assert line is not None
    assert len(re.findall(r"[ML] ", line.get("d", ""))) == 120
    assert docs[INDEX].count("| `run-") == 120
    assert docs[CAPABILITY_MATRIX].count(":free` |") == 100
    assert docs[FINAL_REPORT].count(" | ultra-fast | ") + docs[FINAL_REPORT].count(" | fast | ") > 0


def test_reports_are_written_with_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        written = write_documents(
            tmp_path / "docs", {"a.md": "x\n", "charts/b.svg": "<svg/>"}, run_date="2026-11-01"
        )
    finally:
        os.umask(old)
    assert written and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in written)


def test_answers_in_the_reasoning_channel_are_working_with_a_caveat(documents: dict[str, str]) -> None:
    matrix = documents[CAPABILITY_MATRIX]
    row = next(line for line in matrix.splitlines() if line.startswith("| `deepseek/deepseek-r1:free`"))
    assert row.count("pass (in reasoning)") == 3
    assert "working (slow), answer only in reasoning" in row
    report = _sections(documents[FINAL_REPORT], "## ")["Answers only in the reasoning channel"]
    assert "`deepseek/deepseek-r1:free` | working | slow" in report
    assert "empty reply" not in row.lower()


def test_a_candidate_without_a_free_variant_is_not_listed_as_a_wrong_id() -> None:
    state = fixed_state()
    row = dict.fromkeys(MODEL_RESULTS_SCHEMA) | {
        "run_id": RUN_ID,
        "model_id": "minimax/minimax-m2:free",
        "family": "",
        "verdict": "not_listed",
        "n": 0,
        "n_ok": 0,
        "n_passed": 0,
        "is_reasoning": False,
        "root_cause": "free_variant_ended",
        "remedy": FAILURE_INFO[Failure.FREE_VARIANT_ENDED].remedy,
        "evidence": "not listed as ':free'; the catalog lists only the paid slug minimax/minimax-m2",
        "suggestion": "minimax/minimax-m2",
    }
    state["results"].append(row)
    rca = render_documents(report_data_from(state))[ROOT_CAUSES]
    wrong = rca.split("## Wrong model ids", 1)[1].split("## Failure classes", 1)[0]
    assert "minimax-m2" not in wrong
    ended = _sections(rca)[FAILURE_INFO[Failure.FREE_VARIANT_ENDED].title]
    assert "`minimax/minimax-m2:free`" in ended and "paid slug minimax/minimax-m2" in ended


# --- what a decision-maker reads -----------------------------------------------------------------


def test_tiers_and_rotation_tables_show_the_provider(documents: dict[str, str]) -> None:
    report = documents[FINAL_REPORT]
    assert "| `meta-llama/llama-3.2-3b-instruct:free` | Together | ultra-fast | 0.90 s |" in report
    rotation = _sections(report, "## ")["Rotation"]
    assert "| 2 | `google/gemma-3-27b-it:free` | google/gemma | Google AI Studio | fast |" in rotation
    summary = documents[EXECUTIVE_SUMMARY]
    assert "| `meta-llama/llama-3.2-3b-instruct:free` | Together | 0.90 s | 100 % |" in summary


def test_a_faster_model_passed_over_for_diversity_is_explained(documents: dict[str, str]) -> None:
    rotation = _sections(documents[FINAL_REPORT], "## ")["Rotation"]
    assert (
        "`meta-llama/llama-3.3-70b-instruct:free` (P50 1.50 s): same family as "
        "`meta-llama/llama-3.2-3b-instruct:free`"
    ) in rotation
    assert (
        "is not at rank 2: its family `meta-llama/llama` is already in the chain"
        in documents[EXECUTIVE_SUMMARY]
    )


def test_purposes_with_the_same_chain_are_shown_once_naming_them_all(documents: dict[str, str]) -> None:
    data = fixed_report_data()
    chains = {
        p: data.rotation.filter(pl.col("purpose") == p).sort("rank").get_column("model_id").to_list()
        for p in ("general", "json")
    }
    assert chains["general"] == chains["json"]  # the fixed state has two purposes with one chain
    headings = _sections(documents[FINAL_REPORT])
    assert "General: most reliable, then fastest; JSON output (passed the JSON task)" in headings
    assert "JSON output (passed the JSON task)" not in headings
    summary_rows = [line for line in documents[EXECUTIVE_SUMMARY].splitlines() if "JSON output" in line]
    assert len(summary_rows) == 1  # one table row for both purposes


def test_evidence_names_the_task_shows_the_reply_and_is_headed_for_the_source() -> None:
    docs = render_documents(fixed_report_data())
    rca = docs[ROOT_CAUSES]
    assert "Evidence (the sandbox's message, or the task and the reply)" in rca
    assert "task arithmetic · HTTP 200: replied “The reversed words are: glade harbor island”" in rca
    assert "(finish_reason length, 1024 reasoning tokens)" in rca
    for source, heading in (("openrouter", "OpenRouter's message"), ("base_url", "the server's message")):
        assert (
            f"Evidence ({heading}, or the task and the reply)"
            in render_documents(fixed_report_data(source=source))[ROOT_CAUSES]
        )


def test_evidence_is_never_cut_inside_a_word(documents: dict[str, str]) -> None:
    for name in (ROOT_CAUSES, FINAL_REPORT):
        for line in documents[name].splitlines():
            for cell in line.split(" | "):
                if cell.endswith("…"):
                    assert cell[-2] != " " and (len(cell) < 3 or not cell[-2].isalnum() or " " in cell), cell
    text = documents[ROOT_CAUSES]
    cut = next(line for line in text.splitlines() if "reasoning-exhausted" in line and "…" in line)
    assert "carrying…" in cut  # the excerpt ends with a whole word


def test_fewest_answers_for_a_tier_is_explained_where_it_appears(documents: dict[str, str]) -> None:
    report = documents[FINAL_REPORT]
    row = next(line for line in report.splitlines() if line.startswith("| Fewest answers for a tier |"))
    assert 'listed under "too few samples" instead of a speed tier' in row
    assert (
        "fewer answered probes than a tier needs (fewest answers for a tier: 3)"
        in _sections(report)["Too few samples"]
    )


def test_the_trend_chart_tells_runs_of_one_day_apart() -> None:
    state = fixed_state()
    later = {
        **state["history"][-1],
        "run_id": "2026-11-01T18-30-00Z-sandbox",
        "started_at": STARTED.replace(hour=18, minute=30),
    }
    state["history"].insert(
        -1, {**state["history"][-2], "run_id": "same-day", "started_at": STARTED.replace(hour=1)}
    )
    state["history"].append(later)
    state["run"] = {**state["run"], "run_id": later["run_id"], "started_at": later["started_at"]}
    svg = render_documents(report_data_from(state))[TREND_CHART]
    labels = [el.text for el in ET.fromstring(svg).iter() if el.text and el.text.startswith("2026-")]
    assert "2026-11-01 01:00" in labels and "2026-11-01 06:00" in labels and "2026-11-01 18:30" in labels
    assert "2026-10-01" in labels  # a run alone on its day keeps the date alone


def test_the_raw_markdown_reads_cleanly() -> None:
    note = "Configure your privacy at https://openrouter.ai/settings/privacy & retry: failing -> working"
    docs = render_documents(fixed_report_data(notes=[note]))
    for name in MARKDOWN:
        assert "https\\:" not in docs[name] and "\\:" not in docs[name], name
        assert "&gt;" not in docs[name] and "-&gt;" not in docs[name], name
    assert "`https://openrouter.ai/settings/privacy` & retry: failing -> working" in docs[EXECUTIVE_SUMMARY]
    assert "(failing -> working)" in docs[EXECUTIVE_SUMMARY]


def test_the_artifact_has_no_github_only_syntax_and_narrow_tables() -> None:
    rendered = render_all(fixed_report_data(notes=["A note."]))
    summary = rendered.summary_markdown
    assert "[!WARNING]" not in summary and "[!NOTE]" not in summary
    assert "> **Warning:** **Sandbox data, not real measurements.**" in summary
    assert "> **Note:** A note." in summary
    widest = max(_unescaped_pipes(line) - 1 for line in summary.splitlines() if line.startswith("|"))
    assert widest <= 5, "a table too wide for the artifact page"
    assert "- **General: most reliable, then fastest; JSON output (passed the JSON task)**: " in summary
    assert len(rendered.tiers[0]) <= 8
    # The documents keep GitHub's alerts.
    assert "> [!WARNING]" in rendered.documents[EXECUTIVE_SUMMARY]


def test_the_drill_figures_are_the_drill_tables_summary() -> None:
    from freemodels.drill import summarise

    data = fixed_report_data()
    docs = render_documents(data)
    summary = summarise(data.drill, tail_min_answers=10)  # type: ignore[arg-type]
    storm = summary.filter((pl.col("incident") == "upstream_429_storm") & (pl.col("client") == "litellm"))
    rotation = storm.filter(pl.col("arm") == "rotation").row(0, named=True)
    p50, p95 = rotation["p50_ms"] / 1000, rotation["p95_ms"] / 1000
    cell = f"{rotation['success_rate'] * 100:.0f} %, {p50:.2f} s, P95 {p95:.2f} s"
    lines = docs[EXECUTIVE_SUMMARY].splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("| The primary's upstream 429 storm |"))
    assert lines[start + 1].startswith("|  | LiteLLM router | " + cell + " |")
    detail = _sections(docs[FINAL_REPORT])["The primary's upstream 429 storm"]
    line = next(x for x in detail.splitlines() if x.startswith("| LiteLLM router | rotation |"))
    assert (
        f"| {rotation['attempts_per_request']:.1f} |" in line and "`google/gemma-3-27b-it:free` (10)" in line
    )


def test_a_run_without_a_drill_says_how_to_drill_it() -> None:
    data = fixed_report_data()
    docs = render_documents(ReportData(**{**_fields(data), "drill": None}))
    assert "_Not drilled in this run. `discovery drill`" in docs[EXECUTIVE_SUMMARY]
    assert "## The rotation in use" in docs[FINAL_REPORT]

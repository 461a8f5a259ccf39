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
from tasks.rank import assign_tiers, build_rotation
from tasks.render import (
    AVAILABILITY_CHART,
    CAPABILITY_MATRIX,
    EXECUTIVE_SUMMARY,
    FINAL_REPORT,
    HISTORY_SCHEMA,
    INDEX,
    LATENCY_CHART,
    LITELLM_YAML,
    ROOT_CAUSES,
    ROTATION_JSON,
    TREND_CHART,
    ReportData,
    load_report_data,
    render_and_write,
    render_documents,
    summary_markdown,
    tiers_table,
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
    row = next(line for line in report.splitlines() if "`deepseek/deepseek-r1:free` | slow" in line)
    assert row.split(" | ")[2:] == [
        "21.00 s",
        "29.40 s",
        "6.30 s",
        "9.45 s",
        "16.80 s",
        "100 % (3/3)",
        "3",
        "3/3",
        "reasoning (answer only in reasoning) |",
    ]


def test_headline_numbers_and_change(documents: dict[str, str]) -> None:
    summary = documents[EXECUTIVE_SUMMARY]
    assert f"| Free models | {COUNTS['n_free']} |" in summary
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
    free, tested = COUNTS["n_free"], COUNTS["n_tested"]
    coverage = (
        f"| Coverage | {tested} of {free} free models judged (1 from its listing alone), "
        "1 left untested by the daily quota |"
    )
    assert coverage in docs[FINAL_REPORT]


def test_a_run_that_tested_everything_says_so() -> None:
    state = fixed_state()
    for row in state["results"]:
        if row["verdict"] == "untested_quota":
            row["verdict"] = "failing"
    docs = render_documents(report_data_from(state))
    assert f"all {COUNTS['n_free']} free models judged" in docs[EXECUTIVE_SUMMARY]
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
    text = summary_markdown(fixed_report_data())
    assert f"| Free models | {COUNTS['n_free']} |" in text
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
    documents = render_documents(data, models_limit=2)
    rotation = json.loads(documents[ROTATION_JSON])
    assert rotation["models_limit"] == 2
    assert all(len(f["models"]) <= 2 for f in rotation["purposes"].values())
    assert "at most 2 ids" in documents[EXECUTIVE_SUMMARY]
    assert "at most 2 ids" in summary_markdown(data, models_limit=2)


def test_report_command_renders_with_the_models_limit_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.runner import render_reports
    from freemodels import storage

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
    rows = tiers_table(fixed_report_data())
    assert [r["model"] for r in rows] == [*WORKING, PARTIAL_ID, "qwen/qwen3-8b:free"]
    assert rows[0] == {
        "model": "meta-llama/llama-3.2-3b-instruct:free",
        "tier": "ultra-fast",
        "p50_total": "0.90 s",
        "p90_total": "1.26 s",
        "p50_ttft": "0.27 s",
        "p90_ttft": "0.41 s",
        "success": "100 %",
        "n": 3,
        "reasoning": "no",
    }
    assert rows[-1]["tier"] == "too few samples"


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


def test_load_report_data_reads_one_run_and_the_history(tmp_path: Path) -> None:
    data = fixed_report_data()
    later = {**data.run, "run_id": "later", "started_at": STARTED + timedelta(days=30)}
    other = {**data.run, "run_id": "other", "source": "openrouter", "started_at": STARTED}
    old = {**data.run, "run_id": OLD_RUN_ID, "started_at": datetime(2026, 9, 1, tzinfo=UTC)}
    with duckdb.connect(str(tmp_path / "d.duckdb")) as con:
        _store(con, data, extra_runs=[later, other, old])
        loaded = load_report_data(con, RUN_ID)
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
        assert loaded.previous_run is not None and loaded.previous_run["run_id"] == PREV_RUN_ID
        history = loaded.history
        assert history.schema == pl.Schema(HISTORY_SCHEMA)
        assert history.get_column("run_id").to_list() == [OLD_RUN_ID, PREV_RUN_ID, RUN_ID, "other"]
        current = history.filter(pl.col("run_id") == RUN_ID).row(0, named=True)
        assert current == {**current, **COUNTS} and COUNTS["n_working"] == 7
        assert history.filter(pl.col("run_id") == OLD_RUN_ID)["n_catalog"].item() == 0
        # Free models over time: the two runs' snapshots, up to this run.
        assert loaded.availability is not None
        assert [d.isoformat() for d in loaded.availability.observed] == sorted(
            {data.previous_run["started_at"].date().isoformat(), STARTED.date().isoformat()}  # type: ignore[index]
        )
        assert sum(1 for m in loaded.availability.models if m.free_now) == COUNTS["n_free"]
        # The documents render from what was loaded.
        assert f"| Free models | {COUNTS['n_free']} |" in render_documents(loaded)[EXECUTIVE_SUMMARY]

        written = render_and_write(con, RUN_ID, tmp_path / "docs")
        names = {p.relative_to((tmp_path / "docs").resolve()).as_posix() for p in written}
        assert {INDEX, FINAL_REPORT, f"history/2026-11/{FINAL_REPORT}"} <= names

        # Without stored changes the previous run is the latest earlier one of the same source.
        con.execute("DELETE FROM changes")
        assert load_report_data(con, RUN_ID).previous_run["run_id"] == PREV_RUN_ID  # type: ignore[index]
        with pytest.raises(RunNotFoundError):
            load_report_data(con, "missing")


def test_load_report_data_reports_missing_tables(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as con, pytest.raises(StorageError):
        load_report_data(con, RUN_ID)


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
                "n_catalog": 300 + m,
                "n_free": 80 + m % 20,
                "n_tested": 80,
                "n_working": 40 + m % 10,
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

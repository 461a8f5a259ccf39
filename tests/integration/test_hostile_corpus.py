"""The hostile corpus, end to end: nothing a server, a catalog or a caller sends can leak a key, crash a
run or read a file.

Real Prefect flow runs (the command line, recording into the session's Prefect server):

* against the hostile server of :mod:`tests.hostile` through ``--base-url`` with a canary key from
  ``--api-key-env`` (a key with ``+``, ``/`` and ``=``, so its URL-encoded form differs): first with a
  budget that leaves models untested, then ``--resume``, which reads back every checkpoint the hostile
  text went into;
* against the sandbox with a canary ``OPENROUTER_API_KEY``, a catalog of hostile ids (format fields,
  controls, non-characters) and replies, provider names and errors that echo the canary.

Then ``discovery report`` and ``discovery runs`` read everything back. Every run must complete, and no
run of 8 characters of either canary may appear in DuckDB, Parquet, ``run.json``, ``docs/`` and its
history, stdout or stderr, a log record, or anything the Prefect server holds (flow and task run names,
parameters, states, logs, artifacts, events, its database file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from freemodels import storage
from freemodels.failures import Failure
from freemodels.sandbox.scenario import Scenario
from freemodels.secrets import valid_text
from tests.hostile import (
    BAD_BYTES,
    BAD_CHUNK,
    CONTROL_ID,
    DIRTY_REPLY,
    ECHO_401,
    ECHO_500,
    FORMAT_IDS,
    JSON_ERROR,
    MID_STREAM,
    NONCHARACTER_ID,
    WORKING,
    Canary,
    HostileServer,
    duckdb_text,
    flow_runs_since,
    leaks,
    prefect_text,
    scan_files,
)
from tests.integration.sandbox_runs import FREE, only, run_folders, table, write_scenario

pytestmark = pytest.mark.integration

CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
ESCAPES = ("\x1b", "\x00", "\u202e")


@dataclass
class Corpus:
    canaries: list[Canary]
    data: Path
    docs: Path
    hostile_docs: Path
    exits: dict[str, int]
    output: str
    log_lines: list[str]
    flow_run_ids: list[str]
    started: float
    server_requests: list[tuple[str, str]]


@contextlib.contextmanager
def captured_fds() -> Iterator[Path]:
    """Everything written to ``sys.stdout``, ``sys.stderr`` and file descriptors 1 and 2 in the block,
    into one file (as UTF-8: text that is not valid Unicode fails the write)."""
    sys.stdout.flush()
    sys.stderr.flush()
    handle = tempfile.NamedTemporaryFile(prefix="corpus-", suffix=".out", delete=False)  # noqa: SIM115
    saved = [os.dup(1), os.dup(2)]
    text = Path(handle.name).open("a", encoding="utf-8", errors="strict", buffering=1)  # noqa: SIM115
    try:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            yield Path(handle.name)
    finally:
        text.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        handle.close()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[Corpus]:
    from flows.cli import main

    tmp = tmp_path_factory.mktemp("corpus")
    data, docs = tmp / "data", tmp / "docs"
    key = Canary.make("sk-or-v1-")
    base_key = Canary.make("fmd-", specials=True)
    hostile_sandbox_ids = [*FORMAT_IDS, CONTROL_ID, NONCHARACTER_ID]
    replies = {  # echoing the canary: graded as wrong answers, stored redacted
        FREE[1]: f"my key is {key.value[:30]}",
        FREE[2]: " ".join(key.forms()),
    }
    scenario = write_scenario(
        tmp / "hostile-sandbox.json",
        {
            "limits": {"api_key": key.value, "requests_per_minute": 6000},
            "catalog": {**only(FREE[:4]), "add_free": hostile_sandbox_ids},
            "defaults": {"behavior": "ok", "ttft_ms": 20, "total_ms": 40},
            "models": {
                FREE[1]: {"answer": replies[FREE[1]], "provider": f"Bearer {key.value}"},
                FREE[2]: {"answer": replies[FREE[2]], "provider": key.value[-12:]},
                FREE[3]: {"behavior": "mid_stream_error", "provider": key.value.upper()},
            },
        },
    )
    overrides = {
        "HOSTILE_KEY": base_key.value,
        "DISCOVERY_MAX_ATTEMPTS": "2",
        "DISCOVERY_BACKOFF_BASE_S": "0.05",
        "DISCOVERY_BACKOFF_MAX_S": "0.1",
        "DISCOVERY_READ_TIMEOUT_S": "3",
        "DISCOVERY_MAX_CONCURRENCY": "4",
        "DISCOVERY_DATA_DIR": str(data),
        "DISCOVERY_DOCS_DIR": str(docs),
    }
    saved = {name: os.environ.get(name) for name in [*overrides, "OPENROUTER_API_KEY"]}
    collect = Collect()
    loggers = [logging.getLogger(), logging.getLogger("prefect")]
    for logger in loggers:
        logger.addHandler(collect)
    exits: dict[str, int] = {}
    started = time.time()
    os.environ.update(overrides)
    try:
        with HostileServer(base_key) as server, captured_fds() as out:
            base = ["--base-url", server.base_url, "--api-key-env", "HOSTILE_KEY", "--rpm", "6000"]
            exits["base url, budget"] = main(["run", *base, "--budget", "16"])
            exits["base url, resume"] = main(["run", "--resume"])
            (hostile_run,) = run_folders(data)
            os.environ["OPENROUTER_API_KEY"] = key.value
            exits["sandbox"] = main(["run", "--source", "sandbox", "--scenario", str(scenario)])
            # The reports of the hostile server's run, rendered again from the database.
            report = ["report", "--run-id", hostile_run.name, "--docs-dir", str(tmp / "hostile-docs")]
            exits["report"] = main(report)
            exits["runs"] = main(["runs"])
            requests = list(server.requests)
        output = out.read_text(encoding="utf-8", errors="replace")
        out.unlink()
    finally:
        for logger in loggers:
            logger.removeHandler(collect)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    ids = [i for f in run_folders(data) if (i := storage.read_run_info(f).prefect_flow_run_id)]
    assert len(ids) == 2  # the hostile run (its resume's flow run) and the sandbox run
    ids += asyncio.run(flow_runs_since(started))  # every flow run, the one the resume continued too
    yield Corpus(
        canaries=[key, base_key],
        data=data,
        docs=docs,
        hostile_docs=tmp / "hostile-docs",
        exits=exits,
        output=output,
        log_lines=collect.lines,
        flow_run_ids=sorted(set(ids)),
        started=started,
        server_requests=requests,
    )


def _runs(corpus: Corpus) -> pl.DataFrame:
    return table(corpus.data / "discovery.duckdb", "runs").sort("started_at")


# --- every run completes ----------------------------------------------------------------------------


def test_every_run_completes(corpus: Corpus) -> None:
    assert corpus.exits == {
        "base url, budget": 0,
        "base url, resume": 0,
        "sandbox": 0,
        "report": 0,
        "runs": 0,
    }, corpus.output[-3000:]
    runs = _runs(corpus)
    assert runs.get_column("status").to_list() == ["completed", "completed"]
    assert len(corpus.flow_run_ids) == 3 and "resuming run" in corpus.output


def test_ids_full_of_format_fields_run_to_completion_in_prefect(corpus: Corpus) -> None:
    results = table(corpus.data / "discovery.duckdb", "model_results")
    working = set(results.filter(pl.col("verdict") == "working").get_column("model_id").to_list())
    for model_id in FORMAT_IDS:  # through the hostile server and through the sandbox
        assert len(results.filter(pl.col("model_id") == model_id)) == 2, model_id
        assert model_id in working, model_id
    # The task runs are named after the families, the braces shown, never formatted.
    text = asyncio.run(prefect_text(corpus.flow_run_ids, corpus.started))["task runs"]
    names = {json.loads(line)["name"] for line in text.splitlines()}
    # Task runs are named by round (project text, given as callables): no catalog text is formatted.
    assert {"round-1-screening"} <= names and not any("evil/" in n for n in names), sorted(names)


def test_the_resumed_run_read_back_every_hostile_checkpoint(corpus: Corpus) -> None:
    run_id = _runs(corpus).get_column("run_id")[0]
    probes = table(corpus.data / "discovery.duckdb", "probes", run_id)
    posts = [model for method, model in corpus.server_requests if method == "POST"]
    assert probes.height == len(posts)  # every request answered once, across the two processes
    results = table(corpus.data / "discovery.duckdb", "model_results", run_id)
    by_model = dict(zip(results.get_column("model_id"), results.get_column("verdict"), strict=True))
    for model_id in WORKING:
        assert by_model[valid_text(model_id)] == "working", model_id


def test_each_hostile_answer_ends_in_its_failure_class(corpus: Corpus) -> None:
    run_id = _runs(corpus).get_column("run_id")[0]
    probes = table(corpus.data / "discovery.duckdb", "probes", run_id)

    def classes(model: str) -> set[str]:
        return set(probes.filter(pl.col("model_id") == model).get_column("failure").to_list())

    assert classes(ECHO_401) == {Failure.AUTH.value}
    assert classes(ECHO_500) == {Failure.PROVIDER_ERROR.value}
    assert classes(BAD_BYTES) == {Failure.PROVIDER_ERROR.value}
    assert classes(BAD_CHUNK) == {Failure.TRANSPORT_ERROR.value}
    assert classes(MID_STREAM) == {Failure.MID_STREAM_ERROR.value}
    assert classes(DIRTY_REPLY) == {Failure.WRONG_ANSWER.value}
    assert len(classes(JSON_ERROR)) == 1
    messages = " ".join(probes.get_column("message").drop_nulls().to_list())
    assert "[REDACTED]" in messages and "illegal chunk header" in messages
    dirty = probes.filter(pl.col("model_id") == DIRTY_REPLY).get_column("reply_excerpt").to_list()
    assert all(r.startswith("key: [REDACTED]") and "\ufffd" in r for r in dirty), dirty


def test_one_bad_catalog_entry_is_skipped_and_counted(corpus: Corpus) -> None:
    note = re.compile(r": 2 entries skipped: no id \(data\[3\], data\[7\]\)")
    notes = json.loads(_runs(corpus).get_column("notes")[0])
    assert any(note.search(n) for n in notes), notes
    summary = (corpus.hostile_docs / "executive-summary.md").read_text(encoding="utf-8")
    # The address is a code span; brackets are escaped so they never make a link.
    assert re.search(r"> `http://127\.0\.0\.1:\d+/v1`: 2 entries skipped: no id \(data\\\[3\\\]", summary)


# --- the canary appears nowhere -----------------------------------------------------------------------


def test_the_canary_appears_nowhere(corpus: Corpus) -> None:
    import prefect.settings

    canaries = corpus.canaries
    found = leaks(corpus.output, canaries, "stdout/stderr")
    found += leaks("\n".join(corpus.log_lines), canaries, "log records")
    found += scan_files(corpus.data, canaries)
    found += scan_files(corpus.docs, canaries)
    found += scan_files(corpus.hostile_docs, canaries)
    texts = asyncio.run(prefect_text(corpus.flow_run_ids, corpus.started))
    for kind, text in texts.items():
        found += leaks(text, canaries, f"Prefect API ({kind})")
    db_url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or ""
    prefect_db = Path(db_url.split(":///", 1)[1]) if ":///" in db_url else None
    if prefect_db is not None and prefect_db.parent.is_dir():
        found += scan_files(prefect_db.parent, canaries)
    home = Path(prefect.settings.PREFECT_HOME.value())
    if home.is_dir():
        found += scan_files(home, canaries, since=corpus.started)
    assert found == []
    # The scans read real content: the runs' logs, artifacts, events and stored replies are there.
    assert texts["logs"].count("\n") > 20 and texts["artifacts"] and "prefect.flow-run" in texts["events"]
    stored = duckdb_text(corpus.data / "discovery.duckdb")
    assert stored.count("[REDACTED]") > 20
    for canary in canaries:
        assert canary.hits(canary.value) and canary.hits(" ".join(canary.forms()[1:]))  # the needles work


# --- valid text everywhere, escaped on consoles and in logs ---------------------------------------------


def test_documents_and_charts_are_valid_text(corpus: Corpus) -> None:
    markdown = sorted([*corpus.docs.rglob("*.md"), *corpus.hostile_docs.rglob("*.md")])
    charts = sorted([*corpus.docs.rglob("*.svg"), *corpus.hostile_docs.rglob("*.svg")])
    assert markdown and charts
    for path in markdown:
        assert not CONTROL.search(path.read_text(encoding="utf-8")), path
    for path in charts:
        ET.fromstring(path.read_bytes())
    latency = (corpus.hostile_docs / "charts" / "latency.svg").read_text(encoding="utf-8")
    assert "nonchar-" in latency  # the model with U+FFFE and U+FFFF in its id is drawn
    for path in sorted(corpus.data.rglob("*.parquet")):
        pl.read_parquet(path)
    duckdb_text(corpus.data / "discovery.duckdb").encode("utf-8")


def test_console_and_log_lines_escape_control_characters(corpus: Corpus) -> None:
    for escape in ESCAPES:
        assert escape not in corpus.output, repr(escape)
        assert not [line for line in corpus.log_lines if escape in line], repr(escape)
    logs = asyncio.run(prefect_text(corpus.flow_run_ids, corpus.started))["logs"]
    assert "\\u001b" not in logs and "\\u0000" not in logs  # no raw ESC or NUL in the API's log messages
    # A ruled-out model is named in its round's log line: its id is shown escaped.
    assert "hostile/echo-401-\\\\x1b[31mred" in logs


# --- a password in --base-url ---------------------------------------------------------------------------


def test_a_password_in_the_base_url_is_never_printed_or_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.discovery import RunParameters, run_without_prefect
    from freemodels.sandbox.server import SandboxServer

    password = Canary.make("pw-")
    with SandboxServer(Scenario.from_mapping({"catalog": only(FREE[:1])})) as server:
        url = server.base_url.replace("http://", f"http://someone:{password.value}@")
        params = RunParameters(base_url=url, data_dir=str(tmp_path / "data"), docs_dir=str(tmp_path / "docs"))
        summary = asyncio.run(run_without_prefect(params))
        print(summary.describe())
    assert summary.status == "completed" and summary.probes_sent > 0  # the URL as given was used
    assert summary.base_url == server.base_url.replace("http://", "http://[REDACTED]@")
    out, err = capsys.readouterr()
    found = leaks(out + err, [password], "stdout/stderr")
    found += scan_files(tmp_path / "data", [password]) + scan_files(tmp_path / "docs", [password])
    assert found == []
    stored = json.loads(storage.read_run_info(run_folders(tmp_path / "data")[0]).settings_json or "{}")
    assert stored["parameters"]["base_url"] == summary.base_url


# --- a defect ------------------------------------------------------------------------------------------


def test_a_defect_is_one_redacted_line_in_the_flow_runs_state(
    monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    from flows import discovery as flow_module
    from freemodels.secrets import register_secret

    key = Canary.make("key-")
    register_secret(key.value)  # as the settings do when they read it

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError(f"server said {key.value[-20:]}\x1b[2J")

    monkeypatch.setattr(flow_module, "prepare", broken)
    state = asyncio.run(flow_module.discovery(source="sandbox", return_state=True))  # type: ignore[call-overload]
    assert state.is_failed()
    assert state.message == "internal error: ValueError: server said [REDACTED]\\x1b[2J"
    with pytest.raises(ValueError):  # the command line still gets the exception (--debug shows it)
        state.result()

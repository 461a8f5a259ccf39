"""The tool against a real llama.cpp server (llama-cpp-python serving Gemma 3 270M on loopback).

Gemma 3 270M is a base model: given a chat prompt it writes a continuation (usually the prompt itself
again, or unrelated prose), never the answer. So every probe must come back as a *wrong answer*, not as
an error, while its timings are real: they are checked against the figures llama.cpp prints to its own
log for the same generation.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from freemodels.client import build_http_client
from freemodels.failures import Failure
from freemodels.probe import probe_attempt
from freemodels.records import ProbeResult, ProbeSpec
from freemodels.settings import Settings
from freemodels.suite import TASKS, build_suite
from tests.conftest import REPO_ROOT
from tests.llama.peer import LlamaServer, ServerTiming, parse_perf_log, port_refuses

pytestmark = [pytest.mark.llama, pytest.mark.timeout(900)]

# Long enough for real TTFT and total timings, short enough that the base model stops rambling
# after about 2-3 s per probe on one CPU thread (the default of 1024 tokens takes ~40 s per probe).
MAX_TOKENS = 64
RUN_TIMEOUT_S = 600
SLACK_MS = 2000.0  # HTTP, tokenization and scheduling between the server's clock and ours


def _probe_sequentially(server: LlamaServer, seed: int) -> list[tuple[ProbeResult, ServerTiming]]:
    """Probe every task once, one after the other, pairing each result with llama.cpp's own figures."""
    settings = Settings(source=server.base_url, max_tokens=MAX_TOKENS, probe_deadline_s=300.0)
    tasks = {t.name: t for t in build_suite(seed)}
    pairs: list[tuple[ProbeResult, ServerTiming]] = []

    async def go() -> None:
        async with build_http_client(settings, base_url=server.base_url, api_key=None) as client:
            for name in TASKS:
                outcome = await probe_attempt(
                    client,
                    run_id="r-llama",
                    spec=ProbeSpec(model_id=server.model_id, family="gemma-3", task=name),
                    task=tasks[name],
                    settings=settings,
                    attempt=1,
                    cost_guard=False,
                )
                timing = _wait_for_timing(server, len(pairs))
                pairs.append((outcome.result, timing))

    asyncio.run(go())
    return pairs


def _wait_for_timing(server: LlamaServer, index: int, timeout_s: float = 30.0) -> ServerTiming:
    """llama.cpp's figures for its ``index``-th generation (it logs them as the generation ends)."""
    deadline = time.monotonic() + timeout_s
    while True:
        timings = parse_perf_log(server.log_text())
        if len(timings) > index:
            return timings[index]
        if time.monotonic() > deadline:
            pytest.fail(f"llama.cpp logged no timings for generation {index + 1}:\n{server.log_tail()}")
        time.sleep(0.1)


def test_probes_of_a_real_server_are_timed_and_graded_as_wrong_answers(llama_server: LlamaServer) -> None:
    pairs = _probe_sequentially(llama_server, seed=20261128)

    assert [r.task for r, _ in pairs] == list(TASKS)
    for result, server in pairs:
        said = f"{result.task}: {result.reply_excerpt!r}"
        assert result.http_status == 200, said
        assert result.reply_excerpt, said
        assert result.failure is Failure.WRONG_ANSWER, said
        assert result.passed is False
        assert result.finish_reason in {"length", "stop"}, said
        assert result.ttft_any_ms is not None and result.total_ms is not None
        assert 0 < result.ttft_any_ms < result.total_ms, said
        # This server sends neither usage in a stream nor a `timings` object.
        assert result.completion_tokens is None
        assert result.server_ttft_ms is None and result.server_total_ms is None
        # Our clock against llama.cpp's own: the first token cannot arrive before the prompt was
        # evaluated, nor the last one before all but the final decoding step were done.
        assert server.eval_runs > 0
        decoded_ms = server.eval_ms * (server.eval_runs - 1) / server.eval_runs
        assert result.ttft_any_ms >= server.prompt_eval_ms, (result, server)
        assert result.total_ms >= server.prompt_eval_ms + decoded_ms, (result, server)
        assert result.total_ms <= server.total_ms + SLACK_MS, (result, server)
    assert llama_server.chat_requests() == len(pairs)


def _run_discovery(base_url: str, data_dir: Path, docs_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "--base-url",
            base_url,
            "--data-dir",
            str(data_dir),
            "--docs-dir",
            str(docs_dir),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def test_discovery_run_against_a_real_llama_cpp_server(
    llama_server: LlamaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, docs_dir = tmp_path / "data", tmp_path / "docs"
    monkeypatch.setenv("DISCOVERY_MAX_TOKENS", str(MAX_TOKENS))
    # A Prefect of its own: a temporary server with its database under tmp_path.
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

    done = _run_discovery(llama_server.base_url, data_dir, docs_dir)

    requests_served = llama_server.chat_requests()
    port = llama_server.port
    llama_server.stop()
    assert not llama_server.alive(), "the llama.cpp server's process group is still running"
    assert port_refuses(port)
    output = f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    assert done.returncode == 0, output

    con = duckdb.connect(str(data_dir / "discovery.duckdb"), read_only=True)
    try:
        runs = con.execute("select run_id, source, base_url, status, notes from runs").fetchall()
        catalog = con.execute("select model_id, is_free from catalog").fetchall()
        probes = con.execute(
            "select model_id, task, http_status, failure, passed, ttft_any_ms, ttft_content_ms, "
            "total_ms, reply_excerpt, server_ttft_ms from probes order by task"
        ).fetchall()
        verdicts = con.execute("select model_id, n, n_passed, root_cause from model_results").fetchall()
    finally:
        con.close()

    # One run, from this server, and it says so.
    assert len(runs) == 1, runs
    run_id, source, base_url, status, notes_json = runs[0]
    assert (source, base_url, status) == ("base_url", llama_server.base_url, "completed"), runs
    assert run_id in done.stdout
    # What this server lacks of OpenRouter's extras is noted, not failed on: pricing, /key, usage.
    notes: list[str] = json.loads(notes_json)
    for extra in ("price", "/key", "usage"):
        assert any(extra in note.lower() for note in notes), (extra, notes)

    # The model the server lists was discovered; without pricing it counts as free.
    assert catalog == [(llama_server.model_id, True)]

    # Every task was probed once, each probe is timed, and each reply is a wrong answer, not an error.
    assert sorted(p[1] for p in probes) == sorted(TASKS), probes
    for model_id, task, http_status, failure, passed, ttft_any, ttft_content, total, excerpt, srv in probes:
        said = f"{task}: {excerpt!r}"
        assert model_id == llama_server.model_id
        assert http_status == 200, said
        assert failure == Failure.WRONG_ANSWER.value, said
        assert passed is False, said
        assert excerpt, said
        assert ttft_any is not None and ttft_any > 0, said
        assert ttft_content is not None and ttft_content >= ttft_any, said
        assert total is not None and total > ttft_any, said
        assert srv is None  # llama-cpp-python reports no timings of its own
    # Each probe was one request to this very server: nothing was retried, nothing came from elsewhere.
    assert requests_served == len(probes)
    assert verdicts == [(llama_server.model_id, len(TASKS), 0, Failure.WRONG_ANSWER.value)], verdicts

    # The reports name the source and its base URL.
    reports = {p.name: p.read_text(encoding="utf-8") for p in docs_dir.glob("*.md")}
    assert {"executive-summary.md", "final-report.md"} <= set(reports), sorted(reports)
    for name in ("executive-summary.md", "final-report.md"):
        assert llama_server.base_url in reports[name], name
        assert "OpenAI-compatible server" in reports[name], name
        for note in notes:
            assert note in reports[name], (name, note)

"""The API key never leaves the process except as the bearer header to the configured base URL.

A recognisable fake key is set and the real Prefect flow runs against the sandbox, which (like
OpenRouter) requires that key on its endpoints. Models answer with errors, faults, provider messages
and a redirect to a second loopback server. Then everything the runs wrote is searched for the key:
the DuckDB file (every column of every table), the Parquet files, run.json, the reports, stdout,
stderr and every log record, the Prefect server's logs, artifacts, flow and task runs, the Prefect
database file and the files under the Prefect home. A second run with a wrong key and a third that
fails on an unreachable server add the 401 path and an exception message. The first run is drilled:
the key also goes to the drill's sandboxes, through the models array and through LiteLLM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from freemodels import storage
from freemodels.client import build_http_client
from freemodels.failures import Failure
from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from freemodels.settings import Settings
from tests.integration.sandbox_runs import FREE, only, run_folders, table, write_scenario

pytestmark = pytest.mark.integration

TOKEN = secrets.token_hex(16)
KEY = f"sk-or-v1-LEAKCHECK-{TOKEN}"
WRONG_TOKEN = secrets.token_hex(16)
WRONG_KEY = f"sk-or-v1-LEAKCHECK-{WRONG_TOKEN}"
# Any of these anywhere means a leak (also a cut-off or partly masked key).
NEEDLES = ("LEAKCHECK", TOKEN[:12], TOKEN[-12:], WRONG_TOKEN[:12], WRONG_TOKEN[-12:])


def _hits(text: str) -> list[str]:
    return [needle for needle in NEEDLES if needle in text]


# --- a second server that records what reaches it --------------------------------------------------


class Recorder:
    """A plain HTTP server on loopback that records every request's method, path and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                recorder.requests.append((self.command, self.path, dict(self.headers.items())))
                body = b'{"data": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _record

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Echo401(Recorder):
    """A server that answers every request 401 with the bearer header it was sent in the body."""

    def __init__(self) -> None:
        super().__init__()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(
                    {"error": {"message": f"bad key: {self.headers.get('Authorization')}", "code": 401}}
                ).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server.RequestHandlerClass = Handler


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


# --- redirects and other hosts ----------------------------------------------------------------------


def test_the_key_goes_to_the_base_url_only_redirects_included(recorder: Recorder) -> None:
    model = FREE[0]
    scenario = Scenario.from_mapping(
        {"limits": {"api_key": KEY}, "models": {model: {"redirect": f"{recorder.url}/stolen"}}}
    )
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def go(base_url: str) -> list[int]:
        statuses = []
        async with build_http_client(Settings(), base_url=base_url, api_key=KEY) as client:
            key = await client.get("key")  # the base URL's origin gets the key
            statuses.append(key.status_code)
            # The client never follows a redirect on its own ...
            answer = await client.post("chat/completions", json=body)
            statuses.append(answer.status_code)
            assert answer.headers["location"] == f"{recorder.url}/stolen"
            # ... and when told to, httpx drops the key at the origin change.
            followed = await client.post("chat/completions", json=body, follow_redirects=True)
            statuses.append(followed.status_code)
            # An absolute URL to another origin (same host, other port) gets no key either.
            other = await client.get(f"{recorder.url}/absolute")
            statuses.append(other.status_code)
        return statuses

    with SandboxServer(scenario) as server:
        statuses = asyncio.run(go(server.base_url))
    assert statuses == [200, 307, 200, 200]
    assert [(m, p) for m, p, _ in recorder.requests] == [("POST", "/stolen"), ("GET", "/absolute")]
    for _, _, headers in recorder.requests:
        assert "authorization" not in {name.lower() for name in headers}
        assert not _hits(json.dumps(headers))


# --- the whole flow -----------------------------------------------------------------------------------


def _scan_files(root: Path, *, since: float | None = None) -> list[str]:
    """Leaks in every file under ``root``: raw bytes, and decoded Parquet and DuckDB contents."""
    found: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if since is not None and path.stat().st_mtime < since:
            continue
        raw = path.read_bytes().decode("latin-1")
        found += [f"{path}: {hit}" for hit in _hits(raw)]
        if path.suffix == ".parquet":
            text = json.dumps(pl.read_parquet(path).to_dicts(), default=str, ensure_ascii=False)
            found += [f"{path} (decoded): {hit}" for hit in _hits(text)]
        elif path.suffix == ".duckdb":
            found += [f"{path} (decoded): {hit}" for hit in _hits(_duckdb_text(path))]
    return found


def _duckdb_text(path: Path) -> str:
    """Every value of every table of a DuckDB file, as text (strings in DuckDB files are compressed)."""
    parts = []
    with storage.connect(path, read_only=True, wait_s=10) as con:
        tables = [
            name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        ]
        for name in tables:
            frame = storage.query(con, f'SELECT * FROM "{name}"')
            parts.append(json.dumps(frame.to_dicts(), default=str, ensure_ascii=False))
    return "\n".join(parts)


async def _prefect_text(flow_run_ids: list[str]) -> tuple[str, int, int]:
    """Logs, artifacts, flow and task runs on the Prefect server, as text; log and artifact counts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    ids = [uuid.UUID(i) for i in flow_run_ids]
    parts: list[str] = []
    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
        parts += [log.model_dump_json() for log in logs]
        parts += [log.model_dump_json() for log in await client.read_logs(limit=200)]
        artifacts = await client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        parts += [artifact.model_dump_json() for artifact in artifacts]
        for flow_run_id in ids:
            parts.append((await client.read_flow_run(flow_run_id)).model_dump_json())
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        parts += [task_run.model_dump_json() for task_run in task_runs]
    return "\n".join(parts), len(logs), len(artifacts)


async def _flow_runs_since(started: float, *, exclude: list[str]) -> list[str]:
    """Flow runs of the session's server created since ``started`` (epoch s), but those in ``exclude``."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client

    since = datetime.fromtimestamp(started, UTC)
    async with get_client() as client:
        runs = await client.read_flow_runs()
    return [str(r.id) for r in runs if r.created and r.created >= since and str(r.id) not in exclude]


def test_a_whole_run_writes_the_key_nowhere(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
    recorder: Recorder,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import prefect.settings

    from flows.cli import main

    started = time.time()
    caplog.set_level(logging.DEBUG)
    for name, value in {
        "DISCOVERY_READ_TIMEOUT_S": "1",
        "DISCOVERY_MAX_ATTEMPTS": "2",
        "DISCOVERY_BACKOFF_BASE_S": "0.05",
        "DISCOVERY_BACKOFF_MAX_S": "0.2",
        "DISCOVERY_DRILL_MINUTE_CLEARS_S": "0.5",
    }.items():
        monkeypatch.setenv(name, value)
    models = FREE[:9]
    scenario = write_scenario(
        tmp_path / "leak.json",
        {
            "limits": {"api_key": KEY, "requests_per_minute": 6000},
            "catalog": only(models),
            "defaults": {"behavior": "ok", "ttft_ms": 30, "total_ms": 60},
            "models": {
                models[1]: {"behavior": "moderation_403"},
                models[2]: {"behavior": "upstream_429"},
                models[3]: {"behavior": "mid_stream_error"},
                models[4]: {"fault": "connection_reset", "fault_after_tokens": 1},
                models[5]: {"fault": "truncated_json"},
                models[6]: {"behavior": "credits_402"},
                models[7]: {"redirect": f"{recorder.url}/stolen"},
                models[8]: {"answer": f"my key is {KEY}"},  # a reply that echoes the key
            },
        },
    )
    data, docs = tmp_path / "data", tmp_path / "docs"
    args = [
        "--source",
        "sandbox",
        "--scenario",
        str(scenario),
        "--data-dir",
        str(data),
        "--docs-dir",
        str(docs),
    ]

    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    # The drill sends the key to every incident's sandbox too (each pinned to it), and through LiteLLM.
    assert main(["run", *args, "--drill", "--drill-requests", "1"]) == 0
    (folder,) = run_folders(data)
    drill = table(data / "discovery.duckdb", "drill", folder.name)
    assert drill.height > 0 and "ok" in drill.get_column("outcome").to_list()  # the key was accepted
    probes = table(data / "discovery.duckdb", "probes", folder.name)
    by_model = {
        m: set(probes.filter(pl.col("model_id") == m).get_column("failure").to_list()) for m in models
    }
    assert by_model[models[0]] == {None}  # the key was accepted
    assert by_model[models[7]] == {Failure.TRANSPORT_ERROR.value}  # the redirect is not followed
    assert set(probes.filter(pl.col("model_id") == models[7]).get_column("http_status").to_list()) == {307}
    assert recorder.requests == []  # nothing, let alone the key, reached the other server

    # A wrong key: every probe is refused (401), the messages must not echo it.
    monkeypatch.setenv("OPENROUTER_API_KEY", WRONG_KEY)
    assert main(["run", *args, "--max-models", "2"]) == 0
    wrong = next(f for f in run_folders(data) if f != folder)
    refused = table(data / "discovery.duckdb", "probes", wrong.name)
    assert set(refused.get_column("failure").to_list()) == {Failure.AUTH.value}

    # A run that fails inside the flow on a server that echoes the key it was sent in its 401: the
    # exception's message, the flow run's state and the logs must not carry it either.
    monkeypatch.setenv("FMD_LEAK_KEY", KEY)
    with Echo401() as echo:
        args = ["--base-url", f"{echo.url}/v1", "--api-key-env", "FMD_LEAK_KEY", "--data-dir", str(data)]
        assert main(["run", *args]) == 2

    out, err = capfd.readouterr()
    assert "discovery: error:" in err
    leaks = [f"stdout/stderr: {hit}" for hit in _hits(out + err)]
    leaks += [f"log record: {hit}" for hit in _hits("\n".join(r.getMessage() for r in caplog.records))]
    leaks += [f"log traceback: {hit}" for hit in _hits("\n".join(str(r.exc_info) for r in caplog.records))]
    # The scan reads real content: the reply that echoed the key is stored, with the key masked.
    assert "my key is [REDACTED]" in _duckdb_text(data / "discovery.duckdb")
    leaks += _scan_files(tmp_path / "data")
    leaks += _scan_files(docs)

    flow_run_ids = [i for f in run_folders(data) if (i := storage.read_run_info(f).prefect_flow_run_id)]
    assert len(flow_run_ids) == 2  # the failing run stopped before it recorded anything
    failed = asyncio.run(_flow_runs_since(started, exclude=flow_run_ids))
    assert len(failed) == 1, "the failing run's flow run is on the server too"
    flow_run_ids += failed
    prefect_text, n_logs, n_artifacts = asyncio.run(_prefect_text(flow_run_ids))
    assert n_logs > 10  # the runs' logs really are on the server
    assert n_artifacts >= 2  # the completed run's executive summary and tiers are scanned too
    leaks += [f"Prefect API: {hit}" for hit in _hits(prefect_text)]
    db_url = prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or ""
    prefect_db = Path(db_url.split(":///", 1)[1]) if ":///" in db_url else None
    if prefect_db is not None and prefect_db.parent.is_dir():
        leaks += _scan_files(prefect_db.parent)
    home = Path(prefect.settings.PREFECT_HOME.value())
    if home.is_dir():
        leaks += _scan_files(home, since=started)
    assert leaks == []

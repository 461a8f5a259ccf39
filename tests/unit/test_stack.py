"""The local stack's process handling, with small stand-in processes instead of Prefect.

The stand-ins answer the two questions ``up`` asks (``/api/health`` and the deployment's
``last_polled``), so start, idempotence, stop by pid and clean-up on failure are checked in seconds.
The real Prefect server and serve process are exercised by tests/e2e.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows import stack
from flows.stack import (
    SERVE,
    SERVER,
    ProcessRecord,
    StackConfig,
    StackError,
    StackPaths,
    StackState,
    deployment_polled_since,
    free_port,
    is_running,
    load_state,
    process_start_ticks,
    save_state,
    stop_process,
    stop_stack,
)
from freemodels.secrets import redact

FAKE = r"""
import json, os, sys, time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer

role = sys.argv[1]
if role == "serve":
    if os.environ.get("FAKE_SERVE_FAILS"):
        print("serve: cannot import the flow", flush=True)
        sys.exit(3)
    # A serve process has no port of its own: it marks the deployment as polled in a file.
    with open(os.environ["FAKE_POLL_FILE"], "w") as f:
        f.write(datetime.now(timezone.utc).isoformat())
    while True:
        time.sleep(1)

port = int(sys.argv[2])
poll_file = os.environ["FAKE_POLL_FILE"]

class H(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_GET(self):
        if self.path == "/api/health":
            body = b"true"
        elif self.path in (
            "/api/deployments/name/discovery/monthly", "/api/deployments/name/discovery/watch"
        ) and os.path.exists(poll_file):
            polled = open(poll_file).read()
            body = json.dumps({"status": "READY", "paused": False, "last_polled": polled}).encode()
        else:
            self.send_response(404); self.end_headers(); return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


@pytest.fixture
def fake_prefect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake_prefect.py"
    script.write_text(FAKE)
    monkeypatch.setenv("FAKE_POLL_FILE", str(tmp_path / "polled"))
    monkeypatch.setattr(
        stack, "server_command", lambda host, port: [sys.executable, str(script), "server", str(port)]
    )
    monkeypatch.setattr(stack, "serve_command", lambda defaults: [sys.executable, str(script), "serve"])
    return script


@pytest.fixture
def config(tmp_path: Path) -> StackConfig:
    return StackConfig(
        paths=StackPaths.at(tmp_path / "stack"),
        project_dir=tmp_path,
        data_dir=tmp_path / "data",
        docs_dir=tmp_path / "docs",
        port=0,
        timeout_s=20,
    )


@pytest.fixture(autouse=True)
def _stop_leftovers(tmp_path: Path):
    yield
    stop_stack(StackPaths.at(tmp_path / "stack"), timeout_s=2)


def spawn(tmp_path: Path, argv: list[str]) -> ProcessRecord:
    return stack._spawn("test", argv, cwd=tmp_path, env=dict(os.environ), log=tmp_path / "test.log")


# --------------------------------------------------------------------------------------------------
# up / down with stand-ins


def test_up_starts_both_records_pids_and_down_stops_exactly_them(
    fake_prefect: Path, config: StackConfig
) -> None:
    result = stack.start_stack(config)

    assert not result.already_up
    state = load_state(config.paths)
    assert state == result.state
    assert state is not None and [p.name for p in state.processes] == [SERVER, SERVE]
    assert all(is_running(p) for p in state.processes)
    assert state.api_url == f"http://127.0.0.1:{state.port}/api"
    assert state.ui_url == f"http://127.0.0.1:{state.port}"
    assert Path(state.processes[0].log) == config.paths.log(SERVER)

    again = stack.start_stack(config)
    assert again.already_up and again.state == state

    outcomes = stop_stack(config.paths, timeout_s=5)
    assert [(name, pid) for name, pid, _ in outcomes] == [(p.name, p.pid) for p in reversed(state.processes)]
    assert {what for *_, what in outcomes} == {"stopped"}
    assert not any(is_running(p) for p in state.processes)
    assert not config.paths.state_file.exists()
    assert stop_stack(config.paths) == []


def test_up_after_the_serve_process_died_restarts_the_stack(fake_prefect: Path, config: StackConfig) -> None:
    first = stack.start_stack(config).state
    serve = first.process(SERVE)
    assert serve is not None
    os.killpg(serve.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while is_running(serve) and time.monotonic() < deadline:
        time.sleep(0.05)

    second = stack.start_stack(config)

    assert not second.already_up
    new_serve = second.state.process(SERVE)
    assert new_serve is not None and new_serve.pid != serve.pid
    assert not any(is_running(p) for p in first.processes)  # the old server was stopped, not leaked


def test_a_serve_process_that_fails_is_reported_and_everything_is_stopped(
    fake_prefect: Path, config: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SERVE_FAILS", "1")
    with pytest.raises(StackError, match="serve process exited while starting") as err:
        stack.start_stack(config)
    assert "cannot import the flow" in str(err.value)
    assert not config.paths.state_file.exists()
    assert "starting server" in (config.paths.logs / "server.log").read_text()


def test_a_busy_port_is_refused_before_anything_starts(fake_prefect: Path, config: StackConfig) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = StackConfig(config.paths, config.project_dir, config.data_dir, config.docs_dir, port=port)
        with pytest.raises(StackError, match=f"port {port} .* is in use"):
            stack.start_stack(cfg)
    assert load_state(config.paths) is None


def test_only_loopback_is_accepted(config: StackConfig) -> None:
    cfg = StackConfig(config.paths, config.project_dir, config.data_dir, config.docs_dir, host="0.0.0.0")
    with pytest.raises(StackError, match="loopback only"):
        stack.start_stack(cfg)


# --------------------------------------------------------------------------------------------------
# processes


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    record = spawn(tmp_path, ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"])
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(pid_file.read_text())

    assert stop_process(record, timeout_s=5) == "stopped"

    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{child}").exists()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    record = spawn(tmp_path, ["sh", "-c", f"trap '' TERM; touch {ready}; while true; do sleep 0.1; done"])
    deadline = time.monotonic() + 5
    while not ready.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)

    assert stop_process(record, timeout_s=0.5).startswith("killed")
    assert not is_running(record)


def test_a_dead_or_reused_pid_is_never_signalled() -> None:
    dead = ProcessRecord("gone", 2**22 + 12345, None, ["x"], "x.log")
    assert not is_running(dead)
    assert stop_process(dead, timeout_s=1) == "was not running"

    # A live pid whose start time does not match the record is someone else's process now.
    ticks = process_start_ticks(os.getpid())
    if ticks is None:
        pytest.skip("/proc is not available")
    reused = ProcessRecord("reused", os.getpid(), ticks + 1, ["x"], "x.log")
    assert not is_running(reused)
    assert stop_process(reused, timeout_s=1) == "was not running"  # and this test process lives on


def test_down_with_a_stale_state_file_forgets_it(tmp_path: Path) -> None:
    paths = StackPaths.at(tmp_path / "stack")
    stale = StackState(
        "127.0.0.1", 4200, "p", "d", "o", "t", [ProcessRecord(SERVER, 2**22 + 1, 5, ["x"], "l")]
    )
    save_state(paths, stale)

    assert stop_stack(paths) == [(SERVER, 2**22 + 1, "was not running")]
    assert not paths.state_file.exists()


def test_a_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    paths = StackPaths.at(tmp_path / "stack")
    paths.root.mkdir(parents=True)
    paths.state_file.write_text("{not json")
    with pytest.raises(StackError, match="not a stack state file"):
        load_state(paths)
    with pytest.raises(StackError, match="not a stack state file"):
        stop_stack(paths)  # nothing is signalled on a guess
    paths.state_file.unlink()


# --------------------------------------------------------------------------------------------------
# pure parts


def test_state_round_trips_through_json(tmp_path: Path) -> None:
    state = StackState(
        "127.0.0.1",
        4242,
        "/p",
        "/p/data",
        "/p/docs",
        "2026-11-01T06:00:00+00:00",
        [ProcessRecord(SERVER, 10, 99, ["python", "-m", "prefect"], "/p/.stack/logs/server.log")],
    )
    paths = StackPaths.at(tmp_path / "s")
    save_state(paths, state)
    assert load_state(paths) == state
    assert json.loads(paths.state_file.read_text())["port"] == 4242


def test_environments_keep_prefect_local_and_offline(tmp_path: Path) -> None:
    paths = StackPaths.at(tmp_path / "stack")
    auth = "discovery:s3cret-for-the-test"
    server = stack.server_environment(paths, "127.0.0.1", 4321, auth=auth)
    serve = stack.serve_environment(
        paths, "127.0.0.1", 4321, data_dir=tmp_path / "d", docs_dir=tmp_path / "o", auth=auth
    )

    for env in (server, serve):
        assert env["PREFECT_HOME"] == str(paths.prefect_home)
        assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
        assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
        assert env["PREFECT_API_AUTH_STRING"] == auth  # every client of the stack sends it
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == auth  # the server requires it
    assert "PREFECT_SERVER_API_AUTH_STRING" not in serve
    assert server["PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4321"
    assert server["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4321/api"
    assert (
        server["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
        == f"sqlite+aiosqlite:///{paths.prefect_home}/prefect.db"
    )
    assert serve["DISCOVERY_DATA_DIR"] == str(tmp_path / "d")
    assert serve["DISCOVERY_DOCS_DIR"] == str(tmp_path / "o")


def test_the_auth_string_is_generated_once_and_readable_by_the_user_only(tmp_path: Path) -> None:
    paths = StackPaths.at(tmp_path / "stack")
    assert stack.auth_string(paths) is None  # never made up by a reader
    first = stack.auth_string(paths, create=True)
    assert first is not None and first.startswith("discovery:") and len(first) > 40
    assert paths.auth_file.stat().st_mode & 0o777 == 0o600
    assert stack.auth_string(paths, create=True) == first  # kept across `up`s
    assert stack.auth_string(StackPaths.at(tmp_path / "other"), create=True) != first
    token = first.partition(":")[2]
    assert token not in redact(f"the string is {first}")  # registered with the redaction point
    assert "discovery" in redact("discovery: every run")  # its user name is not a secret
    header = stack.auth_headers(first)["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == first
    assert stack.auth_headers(None) == {}


def test_child_environment_drops_foreign_prefect_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_PROFILE", "cloud")
    monkeypatch.setenv("PREFECT_API_URL", "https://elsewhere.invalid/api")
    env = stack.child_environment(
        {"PREFECT_API_URL": "http://127.0.0.1:1/api"}, drop=stack.FOREIGN_PREFECT_VARS
    )
    assert "PREFECT_PROFILE" not in env
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:1/api"
    assert env["PATH"] == os.environ["PATH"]


def test_serve_arguments_carry_the_deployment_defaults() -> None:
    assert stack.serve_command({})[4:] == ["--source", "auto", "--suite", "standard", "--liveness", "0"]
    cmd = stack.serve_command({"source": "sandbox", "budget": 0, "commit_docs": True, "liveness": 2})
    assert cmd[:4] == [sys.executable, "-m", "flows.cli", "serve"]
    assert cmd[4:] == [
        "--source", "sandbox", "--budget", "0", "--suite", "standard", "--commit-docs", "--liveness", "2",
    ]  # fmt: skip


def test_deployment_polled_since() -> None:
    now = datetime.now(UTC)
    assert deployment_polled_since({"last_polled": (now + timedelta(seconds=1)).isoformat()}, now)
    assert deployment_polled_since({"last_polled": now.isoformat().replace("+00:00", "Z")}, now)
    assert not deployment_polled_since({"last_polled": (now - timedelta(minutes=5)).isoformat()}, now)
    assert not deployment_polled_since({"last_polled": None}, now)
    assert not deployment_polled_since(None, now)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert stack.port_is_free("127.0.0.1", port)

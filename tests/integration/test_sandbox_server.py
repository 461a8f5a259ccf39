"""The sandbox on loopback: timing a probe can trust, socket faults, stalls, and a prompt shutdown."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from freemodels.errors import ScenarioError, SourceError
from freemodels.sandbox.scenario import Scenario, load_scenario
from freemodels.sandbox.server import SandboxServer, serve
from freemodels.suite import build_suite

pytestmark = pytest.mark.integration

LLAMA = "meta-llama/llama-3.3-70b-instruct:free"
GEMMA = "google/gemma-3-12b-it:free"
AUTH = {"Authorization": "Bearer sk-or-v1-sandbox-test"}
TASK = build_suite(3)[0]
TOLERANCE_MS = 30.0  # the sandbox is accurate to 1-2 ms on an idle machine; loaded CI adds jitter


def _client(server: SandboxServer, read_s: float = 5.0) -> httpx.Client:
    timeout = httpx.Timeout(5.0, read=read_s)
    return httpx.Client(base_url=server.base_url, headers=AUTH, timeout=timeout)


def _body(model: str, stream: bool = True) -> dict[str, Any]:
    return {"model": model, "messages": TASK.messages(), "stream": stream}


def _timed_lines(client: httpx.Client, model: str) -> Iterator[tuple[float, str]]:
    """(ms since the request was sent, line) for each non-empty SSE line, stamped on arrival."""
    start = time.perf_counter()
    with client.stream("POST", "/chat/completions", json=_body(model)) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                yield (time.perf_counter() - start) * 1000, line


def test_base_url_and_clean_start_stop() -> None:
    with SandboxServer() as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/api/v1"
        assert (server.requests_per_minute, server.requests_per_day) == (600, 1000)
        with _client(server) as client:
            assert len(client.get("/models").json()["data"]) > 60
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
        pass


def test_a_busy_port_is_a_source_error() -> None:
    with SandboxServer() as first, pytest.raises(SourceError, match="cannot start the sandbox"):
        SandboxServer(port=first.port).start()


def test_staged_ttft_and_total_are_measured_as_staged() -> None:
    spec = {"behavior": "ok", "ttft_ms": 300, "reasoning_ms": 120, "total_ms": 600, "keepalive_ms": 50}
    with SandboxServer(Scenario.from_mapping({"models": {LLAMA: spec}})) as server, _client(server) as client:
        client.get("/models")  # open the connection first, as a probe's shared client would have
        first_any = first_content = last_content = None
        comments = []
        for at, line in _timed_lines(client, LLAMA):
            if line.startswith(":"):
                comments.append(at)
                continue
            if line == "data: [DONE]":
                break
            delta = json.loads(line[len("data: ") :])["choices"]
            delta = delta[0]["delta"] if delta else {}
            if delta.get("reasoning") and first_any is None:
                first_any = at
            if delta.get("content"):
                first_any = first_any if first_any is not None else at
                first_content = first_content if first_content is not None else at
                last_content = at
    assert first_any is not None and first_content is not None and last_content is not None
    assert abs(first_any - 180) < TOLERANCE_MS
    assert abs(first_content - 300) < TOLERANCE_MS
    assert abs(last_content - 600) < TOLERANCE_MS
    assert len(comments) == 3  # at 50, 100, 150 ms: before the first reasoning token
    assert abs(comments[0] - 50) < TOLERANCE_MS


def test_non_streaming_answer_arrives_at_total() -> None:
    spec = {"behavior": "ok", "ttft_ms": 100, "total_ms": 250}
    with SandboxServer(Scenario.from_mapping({"models": {LLAMA: spec}})) as server, _client(server) as client:
        client.get("/models")
        start = time.perf_counter()
        response = client.post("/chat/completions", json=_body(LLAMA, stream=False))
        elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code == 200 and TASK.grade(response.json()["choices"][0]["message"]["content"])
    assert abs(elapsed - 250) < TOLERANCE_MS


@pytest.mark.parametrize("stream", [True, False])
def test_connection_reset_before_any_byte(stream: bool) -> None:
    spec = {"fault": "connection_reset", "ttft_ms": 20, "total_ms": 40}
    with SandboxServer(Scenario.from_mapping({"models": {LLAMA: spec}})) as server, _client(server) as client:
        with pytest.raises(httpx.TransportError):
            client.post("/chat/completions", json=_body(LLAMA, stream))
        assert client.get("/models").status_code == 200  # the server itself is fine


def test_connection_reset_mid_stream_after_some_tokens() -> None:
    spec = {"fault": "connection_reset", "fault_after_tokens": 1, "ttft_ms": 20, "total_ms": 60}
    with SandboxServer(Scenario.from_mapping({"models": {LLAMA: spec}})) as server, _client(server) as client:
        received: list[str] = []
        with (
            pytest.raises(httpx.TransportError),
            client.stream("POST", "/chat/completions", json=_body(LLAMA)) as response,
        ):
            assert response.status_code == 200
            received.extend(line for line in response.iter_lines() if line)
    contents = [json.loads(r[6:])["choices"][0]["delta"].get("content") for r in received]
    assert [c for c in contents if c] and len([c for c in contents if c]) == 1


@pytest.mark.parametrize("stream", [True, False])
def test_never_answer_runs_into_the_read_timeout(stream: bool) -> None:
    spec = {"fault": "never_answer"}
    with (
        SandboxServer(Scenario.from_mapping({"models": {LLAMA: spec}})) as server,
        _client(server, read_s=0.3) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/chat/completions", json=_body(LLAMA, stream))


def test_stall_after_tokens_stops_mid_stream() -> None:
    spec = {"fault": "stall_after_tokens", "fault_after_tokens": 2, "ttft_ms": 10, "total_ms": 40}
    with SandboxServer(Scenario.from_mapping({"models": {LLAMA: spec}})) as server:
        received: list[str] = []
        with (
            _client(server, read_s=0.3) as client,
            pytest.raises(httpx.ReadTimeout),
            client.stream("POST", "/chat/completions", json=_body(LLAMA)) as response,
        ):
            received.extend(line for line in response.iter_lines() if line)
    contents = [json.loads(r[6:])["choices"][0]["delta"].get("content") for r in received]
    assert len([c for c in contents if c]) == 2


def test_stall_with_keepalives_defeats_the_read_timeout() -> None:
    spec = {"behavior": "stall", "ttft_ms": 10, "keepalive_ms": 40}
    with SandboxServer(Scenario.from_mapping({"models": {LLAMA: spec}})) as server:
        comments = 0
        deadline = time.perf_counter() + 0.6  # the client's own total deadline is what ends it
        with (
            _client(server, read_s=0.2) as client,
            client.stream("POST", "/chat/completions", json=_body(LLAMA)) as response,
        ):
            for line in response.iter_lines():
                comments += line.startswith(":")
                assert "content" not in line or '"content":""' in line
                if time.perf_counter() > deadline:
                    break
        assert comments >= 10  # keep-alives every 40 ms kept the 200 ms read timeout from firing


def test_stop_is_prompt_with_stalled_requests_in_flight() -> None:
    scenario = Scenario.from_mapping(
        {"models": {LLAMA: {"fault": "never_answer"}, GEMMA: {"behavior": "stall", "keepalive_ms": 50}}}
    )
    server = SandboxServer(scenario).start()
    errors: list[BaseException] = []

    def hang(model: str) -> None:
        try:
            with (
                httpx.Client(base_url=server.base_url, headers=AUTH, timeout=30) as client,
                client.stream("POST", "/chat/completions", json=_body(model)) as response,
            ):
                for _ in response.iter_lines():
                    pass
        except httpx.HTTPError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hang, args=(m,)) for m in (LLAMA, GEMMA, LLAMA)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    start = time.perf_counter()
    server.stop()
    assert time.perf_counter() - start < 2.0
    for thread in threads:
        thread.join(5)
    assert len(errors) == 3  # every stalled client sees its connection fail, none hangs


def test_stats_over_http_and_in_process(tmp_path: Path) -> None:
    path = tmp_path / "stage.toml"
    lines = ["[limits]", "requests_per_minute = 2", f'[models."{LLAMA}"]', 'behavior = "ok"', "total_ms = 2"]
    path.write_text("\n".join(lines) + "\n")
    with SandboxServer(load_scenario(path)) as server, _client(server) as client:
        statuses = [client.post("/chat/completions", json=_body(LLAMA, False)).status_code for _ in range(3)]
        over_http = httpx.get(f"{server.root_url}/_sandbox/stats").json()
        direct = server.stats()
    assert statuses == [200, 200, 429]
    assert over_http["rejected_429_account"] == 1 == direct["rejected_429_account"]
    assert direct["per_model"] == {LLAMA: 3}


def test_serve_runs_in_the_foreground_until_terminated(tmp_path: Path) -> None:
    scenario = tmp_path / "stage.toml"
    scenario.write_text('[limits]\napi_key = "sk-or-v1-pinned"\n')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "from freemodels.sandbox import serve; "
        f"serve('127.0.0.1', {port}, {str(scenario)!r}, log_level='warning')"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                key = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/key",
                    headers={"Authorization": "Bearer sk-or-v1-pinned"},
                    timeout=1,
                )
                break
            except httpx.TransportError:
                assert process.poll() is None, "serve() exited early"
                assert time.monotonic() < deadline, "serve() did not start"
                time.sleep(0.1)
        assert key.status_code == 200
        other = httpx.get(f"http://127.0.0.1:{port}/api/v1/key", headers=AUTH, timeout=1)
        assert other.status_code == 401  # the scenario file was loaded
    finally:
        process.terminate()
        assert process.wait(10) is not None


def test_serve_rejects_a_bad_scenario_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[models."acme/ghost:free"]\nbehavior = "ok"\n')
    with pytest.raises(ScenarioError, match="not in the sandbox catalog"):
        serve("127.0.0.1", 0, bad)

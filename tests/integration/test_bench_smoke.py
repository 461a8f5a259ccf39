"""Smoke runs of every benchmark in its smallest size, plus checks of the fixes the benchmarks led to.

The smoke runs assert that each script runs through and prints its ratio lines last, in the documented
form; they never assert on timings (that is what the benchmarks themselves are for, on a quiet machine).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from freemodels.client import build_http_client
from freemodels.failures import Failure
from freemodels.probe import DRAIN_GRACE_S, probe_once
from freemodels.records import ProbeSpec
from freemodels.scheduler import PlanOutcome, RateLimiter, run_plan
from freemodels.settings import Settings
from freemodels.suite import build_suite

pytestmark = pytest.mark.integration

NUMBER = r"-?\d+(?:\.\d+)?"
VERDICT = r"(?:PASS|MISS)"
SUITE = {t.name: t for t in build_suite(7)}


def last_lines(text: str, count: int) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) > count, text
    return lines[-count:]


def assert_lines(text: str, patterns: list[str]) -> list[re.Match[str]]:
    """The output ends with one line per pattern, in order."""
    matches = []
    for line, pattern in zip(last_lines(text, len(patterns)), patterns, strict=True):
        match = re.fullmatch(pattern, line)
        assert match, f"{line!r} does not match {pattern!r}"
        matches.append(match)
    return matches


# --------------------------------------------------------------------------------------------------
# The benchmarks, smallest size


def test_overhead_benchmark_prints_its_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bench_overhead

    assert bench_overhead.main(["--probes", "30", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "30 probes per side and round, 1 rounds" in out
    for match in assert_lines(
        out,
        [
            rf"ratio wall: overhead_per_probe_ms=({NUMBER}) tool/raw=({NUMBER}) "
            rf"target: <2 ms or <1.5x {VERDICT}",
            rf"ratio cpu: overhead_per_probe_ms=({NUMBER}) tool/raw=({NUMBER}) "
            rf"target: <2 ms or <1.5x {VERDICT}",
        ],
    ):
        assert float(match.group(2)) > 0


def test_scheduler_benchmark_prints_its_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bench_scheduler

    args = ["--models", "3", "--rpm", "3000", "--latency-ms", "20:60", "--stall-deadline-s", "0.3"]
    assert bench_scheduler.main(args) == 0
    out = capsys.readouterr().out
    assert "suite: 9 probes (3 free models x 3 tasks)" in out
    matches = assert_lines(
        out,
        [
            rf"ratio wall/bound=({NUMBER}) target<=1\.1 {VERDICT}",
            rf"ratio stalls_first wall/bound=({NUMBER}) target<=1\.1 {VERDICT}",
            rf"ratio stalls_spread wall/bound=({NUMBER}) target<=1\.1 {VERDICT}",
            rf"ratio sequential/concurrent=({NUMBER})",
        ],
    )
    # A run cannot beat its bound by much (the bound is a lower limit, up to the limiter's margin).
    assert all(float(m.group(1)) > 0.9 for m in matches[:3])


def test_orchestration_benchmark_prints_its_ratios(
    prefect_harness: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from bench import bench_orchestration

    assert bench_orchestration.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "Prefect API: the configured PREFECT_API_URL" in out  # the session's server was reused
    task_runs = re.search(r"task runs per discovery: (\d+) \((\d+) probe rounds", out)
    assert task_runs and int(task_runs.group(1)) > int(task_runs.group(2)) >= 1
    assert_lines(
        out,
        [
            rf"ratio prefect/plain=({NUMBER}) target<1\.1 {VERDICT}",
            rf"ratio task_runs_per_discovery={task_runs.group(1)} target<100 {VERDICT}",
        ],
    )


def test_scale_benchmark_prints_its_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bench_scale

    args = ["--models", "900", "--runs", "3", "--free", "8", "--repeats", "1"]
    assert bench_scale.main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"synthetic +900 ", out), out
    assert "history: 3 runs x 8 free models" in out
    assert_lines(
        out,
        [
            rf"ratio catalog_900_s=({NUMBER}) peak_mib=(\d+) target<10 s and <1024 MiB {VERDICT}",
            rf"ratio per_model 900/\d+=({NUMBER})",
            rf"ratio render_3_runs_s=({NUMBER}) \(cold\) target<5 s {VERDICT}",
            rf"ratio render 3_runs/1_run=({NUMBER})",
        ],
    )


def test_quota_benchmark_prints_its_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bench_quota

    assert bench_quota.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "default sandbox: 29 free models; staged limits 3000/min and 50/day" in out
    assert re.search(r"adaptive rounds: round-1-screening \(\d+\)", out), out
    lines = assert_lines(
        out,
        [
            rf"ratio verdicts adaptive=(\d+)/29 static=(\d+)/29 target>=28 {VERDICT}",
            rf"ratio verdicts_per_request adaptive=({NUMBER}) static=({NUMBER}) adaptive/static=({NUMBER})",
            rf"ratio requests_per_ruled_out_model adaptive_max=(\d+) static_max=(\d+) target<=1 {VERDICT}",
            rf"ratio rotation_with_full_suite adaptive=(\d+) static=(\d+) target>=3 {VERDICT}",
            rf"ratio time_to_judge_all/floor=({NUMBER}) static=(?:never|{NUMBER}) floor=1s "
            rf"target<=1\.15 {VERDICT}",
        ],
    )
    # What a 50-request day buys does not depend on the pace (timings are not asserted here).
    assert int(lines[0].group(1)) >= 28 > int(lines[0].group(2))
    assert int(lines[2].group(1)) <= 1 < int(lines[2].group(2))


# --------------------------------------------------------------------------------------------------
# Fix: a probe leaves its connection reusable (drains the end of the body after [DONE])

_EVENTS = [
    b'data: {"id":"gen-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    b'data: {"id":"gen-1","choices":[{"index":0,"delta":{"content":"42"},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _sse_server(end_body: bool, connections: list[int]) -> asyncio.Server:
    """HTTP/1.1 keep-alive server: a chunked SSE answer whose end arrives after [DONE] (or never)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for event in _EVENTS:
                    writer.write(_chunk(event))
                    await writer.drain()
                await asyncio.sleep(0.005)  # the body's end comes in a packet of its own
                if not end_body:
                    await asyncio.sleep(3600)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _probe_n_times(end_body: bool, n: int) -> tuple[list[object], int, float]:
    connections: list[int] = []
    settings = Settings(max_concurrency=1, probe_deadline_s=10.0, read_timeout_s=10.0)
    spec = ProbeSpec("m/model:free", "m/model", "arithmetic")

    async def go() -> tuple[list[object], float]:
        server = await _sse_server(end_body, connections)
        port = server.sockets[0].getsockname()[1]
        results = []
        start = time.monotonic()
        async with build_http_client(settings, base_url=f"http://127.0.0.1:{port}/v1", api_key="k") as c:
            for _ in range(n):
                results.append(
                    await probe_once(
                        c, run_id="r", spec=spec, task=SUITE["arithmetic"], settings=settings, attempt=1
                    )
                )
        elapsed = time.monotonic() - start
        server.close()
        return results, elapsed

    results, elapsed = asyncio.run(go())
    return results, len(connections), elapsed


def test_sequential_probes_share_one_connection() -> None:
    results, connections, _ = _probe_n_times(end_body=True, n=5)
    assert connections == 1
    assert all(r.http_status == 200 and r.finish_reason == "stop" for r in results)  # type: ignore[attr-defined]


def test_a_body_that_never_ends_after_done_costs_only_the_grace_period() -> None:
    results, connections, elapsed = _probe_n_times(end_body=False, n=2)
    assert connections == 2  # the unfinished connection is dropped, not reused
    assert all(r.failure is not Failure.TIMEOUT and r.finish_reason == "stop" for r in results)  # type: ignore[attr-defined]
    assert elapsed < 2 * DRAIN_GRACE_S + 5


# --------------------------------------------------------------------------------------------------
# Fix: a retry after a timeout goes ahead of waiting first attempts (others keep their place)


def _scripted(first_status: int) -> tuple[Callable[[httpx.Request], Awaitable[httpx.Response]], list[str]]:
    """Model ``slow`` answers ``first_status`` once, then like the others: a short stream after 30 ms."""
    log: list[str] = []
    seen: set[str] = set()

    async def handler(request: httpx.Request) -> httpx.Response:
        import json

        model = json.loads(request.content)["model"]
        log.append(model)
        await asyncio.sleep(0.03)
        if model == "slow" and model not in seen:
            seen.add(model)
            return httpx.Response(first_status, json={"error": {"code": first_status, "message": "x"}})
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"".join(_EVENTS))

    return handler, log


def _run(first_status: int, limiter: RateLimiter) -> tuple[PlanOutcome, list[str]]:
    handler, log = _scripted(first_status)
    settings = Settings(max_concurrency=1, backoff_base_s=0.01, backoff_max_s=0.02)
    specs = [ProbeSpec(m, m, "arithmetic") for m in ("slow", "a", "b", "c", "d")]

    async def go() -> PlanOutcome:
        transport = httpx.MockTransport(handler)
        async with build_http_client(settings, base_url="http://x/v1", api_key="k", transport=transport) as c:
            return await run_plan(c, specs, SUITE, settings, limiter, run_id="r")

    return asyncio.run(go()), log


def test_a_retry_after_a_timeout_waits_behind_at_most_one_first_attempt() -> None:
    outcome, log = _run(408, RateLimiter(60_000, None))
    assert outcome.results[0].failure is Failure.TIMEOUT
    assert sorted(log) == ["a", "b", "c", "d", "slow", "slow"]
    assert log.index("slow", 1) <= 3  # before c and d; it used to come last


def test_other_retries_keep_their_place_behind_first_attempts() -> None:
    outcome, log = _run(502, RateLimiter(60_000, None))
    assert outcome.results[0].failure is Failure.PROVIDER_ERROR
    assert log == ["slow", "a", "b", "c", "d", "slow"]


def test_a_timeout_retry_never_takes_the_budget_of_an_untested_model() -> None:
    outcome, log = _run(408, RateLimiter(60_000, 5))
    assert log == ["slow", "a", "b", "c", "d"]
    assert outcome.unsent == [] and outcome.quota_exhausted


# --------------------------------------------------------------------------------------------------
# Fix: a catalog is decoded entry by entry (a piece of text at a time), with the same result


_ODD_CATALOGS = [
    b"[]",
    b' {"data": [] } ',
    b'{"object":"list","data":[{"id":"a/b:free","pricing":{"prompt":"0","completion":"0"}}],"x":{"y":[1]}}',
    b'{"data":[{"id":"a/b"}],"data":[{"id":"c/d"}]}',  # the last 'data' wins, as in json.loads
    b'[{"id":"a/b"}] x',
    b'{"data":{"id":1}}',
    b'{"data":[{"id":"a"},]}',
    b'\xef\xbb\xbf[{"id":"z/z","description":"\xf0\x9f\x90\x8b \xc3\xa9"}]',
    b'[{"id":"a/b"},{"id":"a/b"}]',
    b'[{"id":"a/b","context_length":131072}, 7]',
    b'{"data":[{"id":"a/b"}]',
    b"\xff[]",
    b"   ",
]


def _whole(raw: bytes) -> object:
    """The catalog decoded whole with json.loads (the path for shapes that cannot stream)."""
    from freemodels import catalog
    from freemodels.errors import CatalogError

    try:
        text = catalog._catalog_text(raw.removeprefix(b"\xef\xbb\xbf"), "c")
        return catalog._rows(*catalog._entries(catalog._loads(text, "c"), "c"), "c")
    except CatalogError as exc:
        return str(exc)


def _assert_same(raw: bytes) -> None:
    from polars.testing import assert_frame_equal

    from freemodels import catalog
    from freemodels.errors import CatalogError

    expected = _whole(raw)
    try:
        got: object = catalog.parse_catalog_with_notes(raw, origin="c")
    except CatalogError as exc:
        got = str(exc)
    if isinstance(expected, str) or isinstance(got, str):
        assert got == expected, raw[:80]
    else:
        assert_frame_equal(got[0], expected[0])  # type: ignore[index]
        assert got[1] == expected[1]  # type: ignore[index]


@pytest.mark.parametrize("piece", [1, 3, 1 << 20])
def test_odd_catalogs_stream_to_the_same_result(piece: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from freemodels import catalog

    monkeypatch.setattr(catalog._Reader, "PIECE", piece)
    for raw in _ODD_CATALOGS:
        _assert_same(raw)


@pytest.mark.parametrize("piece", [4096, 1 << 20])
def test_recorded_catalogs_stream_to_the_same_result(piece: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from freemodels import catalog
    from tests.conftest import catalog_files

    files = catalog_files()
    if not files:
        pytest.skip("no recorded catalogs beside the repository")
    monkeypatch.setattr(catalog._Reader, "PIECE", piece)
    for path in files:
        _assert_same(path.read_bytes())


def test_watch_benchmark_prints_its_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bench_watch

    assert bench_watch.main(["--quick", "--watches", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(rf"ratio chat_requests=0 sandbox_counted=0 target=0 {VERDICT}", lines[-2])
    assert re.fullmatch(
        rf"ratio watch_wall_s median=({NUMBER}) max=({NUMBER}) n=1 target<10 {VERDICT}", lines[-1]
    )

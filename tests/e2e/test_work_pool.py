"""Past one machine: a Prefect server on PostgreSQL, a process work pool, a worker, ``prefect.yaml``.

The production shape of Prefect, on loopback: PostgreSQL (Debian's package, started by the test as the
``postgres`` user), a Prefect server using it (``PREFECT_API_DATABASE_CONNECTION_URL``), the work pool
``discovery`` of type process, both deployments applied from the project's ``prefect.yaml`` with
``prefect deploy --all``, and a worker. ``discovery/watch`` and a small ``discovery/monthly`` (sandbox)
run through the worker, from the project folder, into this test's data and docs folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest

from flows.stack import free_port
from tests.e2e.conftest import (
    FLOW_RUN_UUID,
    REPO_ROOT,
    RUN_TIMEOUT_S,
    SCRUBBED,
    _describe,
    _prefect_command,
    dump,
)
from tests.e2e.postgres import Postgres, bin_dir
from tests.integration.sandbox_runs import FREE, only

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL is not installed (Debian package postgresql)"),
]

POOL = "discovery"
START_TIMEOUT_S = 180
SMALL: dict[str, object] = {
    "limits": {"requests_per_minute": 6000},
    "catalog": only(FREE[:4]),
    "defaults": {"behavior": "ok", "fault": "none", "ttft_ms": 20, "reasoning_ms": 0, "total_ms": 60},
}


@dataclass
class Pool:
    """The running parts and the folders the flow runs write to."""

    api: str
    auth: str
    env: dict[str, str]
    data_dir: Path
    docs_dir: Path
    inputs: Path
    worker_log: Path
    server_log: Path
    database_url: str

    def prefect(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_prefect_command(), *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def get(self, path: str) -> object:
        response = httpx.get(f"{self.api}{path}", auth=tuple(self.auth.split(":", 1)), timeout=30)  # type: ignore[arg-type]
        response.raise_for_status()
        return response.json()

    def logs(self) -> str:
        parts = []
        for log in (self.server_log, self.worker_log):
            if log.exists():
                parts.append(
                    f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-60:])
                )
        return "\n".join(parts)

    def run(self, deployment: str, *params: str) -> str:
        args = ["deployment", "run", deployment, "--watch", "--watch-timeout", str(RUN_TIMEOUT_S)]
        for param in params:
            args += ["--param", param]
        result = self.prefect(*args, timeout=RUN_TIMEOUT_S + 60)
        assert result.returncode == 0, f"{deployment} failed: {_describe(result)}\n{self.logs()}"
        match = FLOW_RUN_UUID.search(result.stdout)
        assert match, result.stdout
        return match.group(1)


def _spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    try:
        return subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        handle.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait(check: object, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, f"{what} exited:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"{what} not ready:\n{log.read_text(errors='replace')[-3000:]}"
        time.sleep(1)


def postgres_flow_runs(pool: Pool, ids: list[str]) -> list[str]:
    """The ids among ``ids`` of the flow runs stored in the server's PostgreSQL database."""
    import asyncio

    import asyncpg

    async def read() -> list[str]:
        url = pool.database_url.replace("postgresql+asyncpg://", "postgresql://")
        con = await asyncpg.connect(url)
        try:
            rows = await con.fetch(
                "SELECT id::text AS id FROM flow_run WHERE id::text = ANY($1::text[])", ids
            )
        finally:
            await con.close()
        return [row["id"] for row in rows]

    return asyncio.run(read())


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("pool")
    postgres = Postgres.start(free_port())
    port = free_port()
    auth = "discovery:e2e-pool-secret"
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(
        {
            "PREFECT_HOME": str(tmp / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_API_AUTH_STRING": auth,
            "DISCOVERY_DATA_DIR": str(tmp / "data"),
            "DISCOVERY_DOCS_DIR": str(tmp / "docs"),
            "DISCOVERY_INPUT_DIR": str(tmp / "inputs"),
            "DISCOVERY_PROBE_DEADLINE_S": "10",
            "DISCOVERY_PROJECT_DIR": str(REPO_ROOT),
            "COLUMNS": "250",
            "NO_COLOR": "1",
            "PREFECT_CLI_COLORS": "false",
        }
    )
    running = Pool(
        api=env["PREFECT_API_URL"],
        auth=auth,
        env=env,
        data_dir=tmp / "data",
        docs_dir=tmp / "docs",
        inputs=tmp / "inputs",
        worker_log=tmp / "worker.log",
        server_log=tmp / "server.log",
        database_url=postgres.url,
    )
    running.inputs.mkdir()
    server_env = {
        **env,
        "PREFECT_API_DATABASE_CONNECTION_URL": postgres.url,
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_UI_ENABLED": "false",
    }
    server_env.pop("PREFECT_API_URL")
    server = _spawn(
        [*_prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_env,
        running.server_log,
        tmp,
    )
    worker: subprocess.Popen[bytes] | None = None
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{running.api}/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, "the Prefect server", server, running.server_log)
        made = running.prefect("work-pool", "create", POOL, "--type", "process")
        assert made.returncode == 0, _describe(made)
        limited = running.prefect("work-pool", "set-concurrency-limit", POOL, "1")
        assert limited.returncode == 0, _describe(limited)
        deployed = running.prefect("--no-prompt", "deploy", "--all", timeout=300)
        assert deployed.returncode == 0, _describe(deployed)
        worker = _spawn(
            [*_prefect_command(), "worker", "start", "--pool", POOL],
            env,
            running.worker_log,
            tmp,
        )

        def polling() -> bool:
            workers = httpx.post(
                f"{running.api}/work_pools/{POOL}/workers/filter",
                json={},
                auth=tuple(auth.split(":", 1)),  # type: ignore[arg-type]
                timeout=10,
            )
            return workers.status_code == 200 and bool(workers.json())

        _wait(polling, "the worker", worker, running.worker_log)
        yield running
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
        postgres.stop()


def test_both_deployments_come_from_prefect_yaml_into_the_process_pool(pool: Pool) -> None:
    monthly = pool.get("/deployments/name/discovery/monthly")
    watch = pool.get("/deployments/name/discovery/watch")
    assert isinstance(monthly, dict) and isinstance(watch, dict)
    assert monthly["work_pool_name"] == watch["work_pool_name"] == POOL
    assert [s["schedule"]["cron"] for s in monthly["schedules"]] == ["0 6 1 * *"], dump(monthly)
    assert [s["schedule"]["cron"] for s in watch["schedules"]] == ["30 6 * * *"], dump(watch)
    assert watch["parameters"] == {"source": "auto", "liveness": 0}
    steps = json.dumps(monthly["pull_steps"])
    assert "set_working_directory" in steps and str(REPO_ROOT) in steps


def test_monthly_and_watch_run_through_the_worker_on_postgresql(pool: Pool) -> None:
    scenario = pool.inputs / "small.json"
    scenario.write_text(json.dumps(SMALL), encoding="utf-8")
    monthly_id = pool.run("discovery/monthly", "source=sandbox", f"scenario={json.dumps(str(scenario))}")
    watch_id = pool.run("discovery/watch", "source=sandbox", f"scenario={json.dumps(str(scenario))}")

    for flow_run_id in (monthly_id, watch_id):
        flow_run = pool.get(f"/flow_runs/{flow_run_id}")
        assert isinstance(flow_run, dict)
        assert flow_run["state"]["type"] == "COMPLETED", dump(flow_run["state"])
        assert flow_run["work_pool_name"] == POOL
    con = duckdb.connect(str(pool.data_dir / "discovery.duckdb"), read_only=True)
    try:
        runs = con.execute("SELECT run_id, status, prefect_flow_run_id FROM runs").fetchall()
        watches = con.execute(
            "SELECT based_on_run_id, prefect_flow_run_id, chat_requests, lost FROM watches"
        ).fetchall()
    finally:
        con.close()
    assert [(status, flow) for _, status, flow in runs] == [("completed", monthly_id)]
    assert watches == [(runs[0][0], watch_id, 0, 0)]
    assert (pool.docs_dir / "rotation.json").is_file()
    # The server keeps its history in PostgreSQL: both flow runs are rows there.
    assert sorted(postgres_flow_runs(pool, [monthly_id, watch_id])) == sorted([monthly_id, watch_id])
    assert not (REPO_ROOT / "data" / "runs" / runs[0][0]).exists()  # the worker wrote where it was told

"""The real stack, run the way users run it, shared by every e2e test of the session.

``discovery up`` starts a Prefect server on a free loopback port and the serve process, with all state in a
temporary folder (the stack folder, ``PREFECT_HOME`` of the command line, ``data/``, ``docs/``); the
source is the sandbox and no API key reaches any process. The API requires the stack's auth string:
the command line gets it from ``discovery status --env`` as a user's shell would, and the tests' own
requests send it. ``prefect deployment run discovery/monthly --watch`` starts one discovery, shared by
the tests that look at its results. Teardown runs
``discovery down`` and then makes sure, by the recorded pids, that nothing it started is left running,
also when a test or the start itself failed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.stack import StackPaths, auth_headers, free_port, is_running, load_state, stop_stack

REPO_ROOT = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 420
CLI_TIMEOUT_S = 60
FLOW_RUN_UUID = re.compile(r"UUID:\s*([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")

# Variables of the developer's shell that must not leak into the stack or the command line.
SCRUBBED = (
    "OPENROUTER_API_KEY",
    "DISCOVERY_API_KEY",
    "DISCOVERY_SOURCE",
    "DISCOVERY_DB_PATH",
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_PROFILE",
    "PREFECT_PROFILES_PATH",
    "PREFECT_HOME",
)


def _discovery_command() -> list[str]:
    """The ``discovery`` console script of this environment, as a user would call it."""
    script = Path(sys.executable).with_name("discovery")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def _prefect_command() -> list[str]:
    script = Path(sys.executable).with_name("prefect")
    return [str(script)] if script.exists() else [sys.executable, "-m", "prefect"]


@dataclass
class RunningStack:
    """A stack started by ``discovery up`` in a temporary folder."""

    workdir: Path
    stack_dir: Path
    data_dir: Path
    docs_dir: Path
    port: int
    env: dict[str, str]
    up_output: str
    auth: str = ""

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def discovery(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_discovery_command(), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def exports(self) -> dict[str, str]:
        """What ``eval "$(discovery status --env)"`` exports."""
        result = self.discovery("status", "--env", "--stack-dir", str(self.stack_dir))
        assert result.returncode == 0, _describe(result)
        values = {}
        for line in result.stdout.splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0]
        return values

    def prefect(self, *args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_prefect_command(), *args],
            cwd=self.workdir,
            env={**self.env, "PREFECT_API_URL": self.api_url, "PREFECT_API_AUTH_STRING": self.auth},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.request(
            method, f"{self.api_url}{path}", json=body, headers=auth_headers(self.auth), timeout=30
        )
        response.raise_for_status()
        return response.json()

    def up(self) -> subprocess.CompletedProcess[str]:
        return self.discovery(
            "up",
            "--port",
            str(self.port),
            "--source",
            "sandbox",
            "--stack-dir",
            str(self.stack_dir),
            "--timeout",
            str(UP_TIMEOUT_S // 2),
            timeout=UP_TIMEOUT_S,
        )


def _base_env(tmp: Path, data_dir: Path, docs_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(
        {
            "DISCOVERY_DATA_DIR": str(data_dir),
            "DISCOVERY_DOCS_DIR": str(docs_dir),
            # Stalling sandbox models time out after 10 s instead of 90 s: the run stays short.
            "DISCOVERY_PROBE_DEADLINE_S": "10",
            # The drill's full account minute clears after 5 s instead of 20 s: the drill stays short.
            "DISCOVERY_DRILL_MINUTE_CLEARS_S": "5",
            # The command line's own Prefect home, so that ~/.prefect is never used.
            "PREFECT_HOME": str(tmp / "cli-prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Wide, plain output so that the flow run's UUID line is never wrapped or coloured.
            "COLUMNS": "250",
            "NO_COLOR": "1",
            "PREFECT_CLI_COLORS": "false",
        }
    )
    return env


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _logs(stack_dir: Path) -> str:
    parts = []
    for log in sorted((stack_dir / "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()[-60:]
        parts.append(f"--- {log.name} (last lines)\n" + "\n".join(lines))
    return "\n".join(parts)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """``discovery up`` on a free port; ``discovery down`` (and a check by pid) afterwards."""
    tmp = tmp_path_factory.mktemp("e2e")
    workdir = tmp / "project"
    workdir.mkdir()
    data_dir, docs_dir = tmp / "data", tmp / "docs"
    running = RunningStack(
        workdir=workdir,
        stack_dir=tmp / "stack",
        data_dir=data_dir,
        docs_dir=docs_dir,
        port=free_port(),
        env=_base_env(tmp, data_dir, docs_dir),
        up_output="",
    )
    paths = StackPaths.at(running.stack_dir)
    try:
        result = running.up()
        assert result.returncode == 0, f"discovery up failed: {_describe(result)}\n{_logs(running.stack_dir)}"
        running.up_output = result.stdout
        exports = running.exports()
        assert exports["PREFECT_API_URL"] == running.api_url
        running.auth = exports["PREFECT_API_AUTH_STRING"]
        yield running
    finally:
        recorded = load_state(paths)
        down = running.discovery("down", "--stack-dir", str(running.stack_dir), timeout=120)
        leftovers = stop_stack(paths, timeout_s=10)  # only if `down` itself failed
        if recorded is not None:
            alive = [p for p in recorded.processes if is_running(p)]
            assert not alive, f"still running after down: {alive}"
        assert down.returncode == 0, f"discovery down failed: {_describe(down)}"
        assert not leftovers, f"discovery down left processes recorded: {leftovers}"


@dataclass(frozen=True)
class CompletedRun:
    """One deployment run triggered through the CLI and watched to its end."""

    flow_run_id: str
    output: str
    documents: dict[str, str]  # docs/*.md right after the run (a later run rewrites them)


def start_run(stack: RunningStack, *params: str) -> subprocess.CompletedProcess[str]:
    """``prefect deployment run discovery/monthly --watch`` (plus ``--param k=v`` each)."""
    args = ["deployment", "run", "discovery/monthly", "--watch", "--watch-timeout", str(RUN_TIMEOUT_S)]
    for param in params:
        args += ["--param", param]
    return stack.prefect(*args, timeout=RUN_TIMEOUT_S + 60)


def trigger_run(stack: RunningStack, *params: str) -> CompletedRun:
    """:func:`start_run`, asserting exit 0 and the documents it wrote."""
    result = start_run(stack, *params)
    assert result.returncode == 0, f"deployment run failed: {_describe(result)}\n{_logs(stack.stack_dir)}"
    match = FLOW_RUN_UUID.search(result.stdout)
    assert match, f"no flow run UUID in the output:\n{result.stdout}"
    documents = {p.name: p.read_text(encoding="utf-8") for p in sorted(stack.docs_dir.glob("*.md"))}
    return CompletedRun(match.group(1), result.stdout, documents)


@pytest.fixture(scope="session")
def completed_run(stack: RunningStack) -> CompletedRun:
    """The first discovery of the session, run through the deployment with its default parameters
    and a small drill (so the artifact shows the rotation in use)."""
    return trigger_run(stack, "drill=true", "drill_requests=2")


@pytest.fixture(scope="session")
def run_artifacts(stack: RunningStack, completed_run: CompletedRun) -> dict[str, dict[str, Any]]:
    """The completed run's artifacts by key, read through Prefect's API."""
    found = stack.api(
        "POST",
        "/artifacts/filter",
        {"artifacts": {"flow_run_id": {"any_": [completed_run.flow_run_id]}}},
    )
    return {a["key"]: a for a in found if a.get("key")}


MODULE_ORDER = (
    "test_deployment",
    "test_browser",
    "test_alerting",
    "test_watch_deployment",
    "test_stack_security",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first run's checks and screenshots before the alerting test adds a second run.

    Only the e2e modules are reordered among themselves; every other test keeps its place.
    """

    def module_name(item: pytest.Item) -> str:
        return item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""

    slots = [i for i, item in enumerate(items) if module_name(item) in MODULE_ORDER]
    ordered = sorted((items[i] for i in slots), key=lambda item: MODULE_ORDER.index(module_name(item)))
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)[:4000]

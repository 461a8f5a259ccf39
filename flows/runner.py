"""Glue between the CLI and the flow: run a discovery, render reports, list and abandon runs.

Prefect is configured here, at the edge, before it is imported: analytics off (the tool must run with
no internet) and quieter server logs. A run records into a Prefect server, chosen in this order:

1. the one ``PREFECT_API_URL`` names;
2. the local stack's, when ``discovery up`` runs in this folder (the run then shows in its UI), with
   the stack's auth string;
3. a temporary server started for the run and stopped after it, which requires an auth string of
   its own (anyone on the machine could otherwise start runs on it while it is up).

The temporary server runs in a session of its own, so the Ctrl-C meant for the run does not kill it
while the run still reports its state to it (that left Prefect's event worker retrying for minutes).

SIGINT and SIGTERM cancel the run: the flow records it as ``interrupted`` (checkpoint flushed) and
returns a ``Cancelled`` state, and the CLI prints one line and exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx

from flows.parameters import RunParameters
from freemodels.errors import ConfigError, DiscoveryError, RunNotFoundError

if TYPE_CHECKING:
    from flows.discovery import RunSummary
    from flows.parameters import WatchParameters
    from flows.prepare import Prepared
    from flows.watch import PreparedWatch, WatchSummary

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    # The temporary server's first start creates its database; on a busy 2-core machine that can take
    # longer than Prefect's default of 20 s.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
TEMPORARY_SERVER_START_TIMEOUT_S = 120.0
TEMPORARY_SERVER_STOP_TIMEOUT_S = 5.0
WORKER_DRAIN_TIMEOUT_S = 5.0


def configure_prefect() -> None:
    """Offline-friendly Prefect defaults; values the user set win."""
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)


# --------------------------------------------------------------------------------------------------
# which Prefect server a run records into


def _configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from Prefect's settings (a test harness sets it there, not in the
    environment) or, before Prefect is imported, from the environment."""
    if "prefect" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    return os.environ.get("PREFECT_API_URL") or None


def _stack_api(stack_dir: Path) -> tuple[str, str | None] | None:
    """The API of the local stack recorded in ``stack_dir`` and its auth string, when it runs and
    answers."""
    from flows.stack import StackPaths, auth_string, load_state, server_healthy

    paths = StackPaths.at(stack_dir)
    try:
        state = load_state(paths)
        if state is None or not server_healthy(state.api_url):
            return None
        return state.api_url, auth_string(paths)
    except DiscoveryError:
        return None


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def temporary_server() -> Iterator[tuple[str, str]]:
    """A Prefect server for one run, in its own session; yields its API URL and the auth string it
    requires (new for each server), and stops it after."""
    from freemodels.secrets import register_secret

    port = _free_port()
    token = secrets.token_urlsafe(24)
    register_secret(token)
    auth = f"discovery:{token}"
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        "PREFECT_SERVER_API_AUTH_STRING": auth,
    }
    env.pop("PREFECT_API_URL", None)
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + TEMPORARY_SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                detail = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                raise ConfigError(
                    f"the temporary Prefect server did not start: {detail.strip() or proc.returncode}"
                )
            try:
                if httpx.get(f"{api}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                waited = TEMPORARY_SERVER_START_TIMEOUT_S
                raise ConfigError(f"the temporary Prefect server did not answer within {waited:.0f} s")
            time.sleep(0.2)
        yield api, auth
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=TEMPORARY_SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


@contextlib.contextmanager
def prefect_api(stack_dir: Path) -> Iterator[str]:
    """The API a CLI run records into (see the module docstring), set for Prefect for the block."""
    configured = _configured_api_url()
    if configured:
        try:
            yield configured
        finally:
            drain_prefect_workers()
        return
    stack = _stack_api(stack_dir)
    with contextlib.ExitStack() as stack_of_contexts:
        api, auth = stack or stack_of_contexts.enter_context(temporary_server())
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        updates: dict[Any, Any] = {PREFECT_API_URL: api}
        if auth:
            updates[PREFECT_API_AUTH_STRING] = auth
        with temporary_settings(updates=updates):
            try:
                yield api
            finally:
                drain_prefect_workers()


def drain_prefect_workers(timeout_s: float = WORKER_DRAIN_TIMEOUT_S) -> None:
    """Send the logs and events Prefect still holds while the server is up: a temporary server stops
    right after, and whatever is left at exit would be retried against a closed port for minutes."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)


# --------------------------------------------------------------------------------------------------
# running the flow


@dataclasses.dataclass(frozen=True, slots=True)
class RunEnd:
    """How a CLI run ended: a summary, or one line saying why not."""

    summary: RunSummary | None
    interrupted: str | None = None


def check_run(params: RunParameters) -> Prepared:
    """Everything :func:`flows.prepare.prepare` checks, and that the source answers a connection,
    before Prefect is started."""
    from flows.prepare import check_source_reachable, prepare

    prepared = prepare(params)
    check_source_reachable(prepared)
    return prepared


async def _flow_in_task(params: RunParameters) -> Any:
    """Call the flow with SIGTERM cancelling it, as SIGINT does under ``asyncio.run``."""
    from flows.discovery import discovery
    from flows.lifecycle import sigterm_cancels_this_task

    with sigterm_cancels_this_task():
        # Prefect stores a flow run's parameters: URLs go with their credentials masked (this process
        # keeps them for the run's client).
        run = discovery(**dataclasses.asdict(params.shown()), return_state=True)
        return await cast(Awaitable[Any], run)


def run_discovery(params: RunParameters) -> RunEnd:
    """Run the ``discovery`` flow in this process; raise the project's error when it failed."""
    configure_prefect()
    from flows.prepare import settings_for

    with prefect_api(settings_for(params).stack_dir):
        from flows.lifecycle import quiet_expected_errors

        quiet_expected_errors()
        try:
            state = asyncio.run(_flow_in_task(params))
        except (asyncio.CancelledError, KeyboardInterrupt):
            from flows.lifecycle import interrupted_line

            return RunEnd(None, interrupted=interrupted_line(None))
    if state.is_cancelled():
        return RunEnd(None, interrupted=state.message or "interrupted")
    if state.is_failed():
        error = state.data if isinstance(state.data, BaseException) else None
        if isinstance(error, DiscoveryError):
            raise error
        # A crash or a defect: the state's result raises it (with its traceback under --debug).
        state.result()
        raise DiscoveryError(state.message or "the run failed")
    return RunEnd(state.result())


# --------------------------------------------------------------------------------------------------
# the watch


def check_watch(params: WatchParameters) -> PreparedWatch:
    """Everything a watch checks before it reads anything, before Prefect is started."""
    from flows.watch import check_watch_reachable, prepare_watch

    prepared = prepare_watch(params)
    check_watch_reachable(prepared)
    return prepared


async def _watch_in_task(params: WatchParameters) -> Any:
    from flows.lifecycle import sigterm_cancels_this_task
    from flows.watch import watch

    with sigterm_cancels_this_task():
        run = watch(**dataclasses.asdict(params.shown()), return_state=True)
        return await cast(Awaitable[Any], run)


def run_watch(params: WatchParameters) -> WatchSummary:
    """Run the watch flow in this process; raise the project's error when it failed."""
    configure_prefect()
    from flows.prepare import settings_for

    with prefect_api(settings_for(params).stack_dir):
        from flows.lifecycle import quiet_expected_errors

        quiet_expected_errors()
        state = asyncio.run(_watch_in_task(params))
    if state.is_failed() or state.is_cancelled():
        error = state.data if isinstance(state.data, BaseException) else None
        if isinstance(error, DiscoveryError):
            raise error
        if state.is_failed():
            state.result()
        raise DiscoveryError(state.message or "the watch did not finish")
    summary: WatchSummary = state.result()
    return summary


# --------------------------------------------------------------------------------------------------
# reports and the runs listing


def render_reports(*, run_id: str | None, data_dir: str | None, docs_dir: str | None) -> list[Path]:
    """Render docs/ again from the database."""
    from freemodels import storage
    from freemodels.settings import load_settings
    from tasks.render import ReportOptions, render_and_write

    settings = load_settings(data_dir=data_dir, docs_dir=docs_dir)
    if not settings.database.exists():
        raise RunNotFoundError(f"no database at {settings.database}; run `discovery run` first")
    con = storage.connect(settings.database, read_only=True)
    try:
        chosen = run_id or storage.latest_run_id(con)
        if chosen is None:
            raise RunNotFoundError(f"no completed run in {settings.database}")
        written = render_and_write(con, chosen, settings.docs_dir, options=ReportOptions.of(settings))
        repair = latest_repair(con, chosen)
    finally:
        con.close()
    if repair is not None:  # the exports stay as the latest watch of this run repaired them
        from tasks.repair import write_repair

        write_repair(settings.docs_dir, **repair, models_limit=settings.rotation_models_limit)
    return written


def latest_repair(con: Any, run_id: str) -> dict[str, Any] | None:
    """What the latest watch of ``run_id``'s source found lost in its rotation, when that watch
    watched this run (the arguments of :func:`tasks.repair.write_repair`), else None."""
    from datetime import datetime

    import polars as pl

    from freemodels import storage

    run = storage.load_table(con, "runs", run_id)
    if run.is_empty():
        return None
    watch = storage.latest_watch(con, source=run["source"][0])
    if watch is None or watch["based_on_run_id"] != run_id:
        return None
    lost = storage.watch_changes(con, str(watch["watch_id"])).filter(pl.col("change") == "lost")
    if lost.is_empty():
        return None
    return {
        "rotation": storage.load_table(con, "rotation", run_id),
        "lost": [
            (m, r or "", d or "") for m, r, d in lost.select("model_id", "reason", "detail").iter_rows()
        ],
        "run": run.row(0, named=True),
        "watch_id": str(watch["watch_id"]),
        "on": at.date().isoformat() if isinstance(at := watch["at"], datetime) else str(at)[:10],
    }


RUN_COLUMNS = ("run_id", "started", "source", "status", "untested", "quota", "why")


def runs_table(*, data_dir: str | None) -> str:
    """Every run with its status, oldest first, as a plain-text table (unfinished ones included)."""
    from freemodels.runs import all_runs
    from freemodels.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    runs = all_runs(settings.runs_dir)
    if not runs:
        return f"no runs in {settings.runs_dir}"
    rows = []
    for run in runs:
        info = run.info
        quota = "" if info.quota_before is None else f"{info.quota_before} -> {info.quota_after}"
        rows.append(
            [
                run.run_id,
                info.started_at.strftime("%Y-%m-%d %H:%M UTC"),
                info.source,
                run.status.value,
                str(run.untested) if run.untested else "",
                quota,
                run.reason or "",
            ]
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(RUN_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(RUN_COLUMNS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def abandon_run(run_id: str, *, data_dir: str | None) -> str:
    """Mark a run abandoned; returns the line to print."""
    from freemodels.runs import abandon
    from freemodels.settings import load_settings

    settings = load_settings(data_dir=data_dir)
    info = abandon(settings.runs_dir, settings.database, run_id)
    return f"run {info.run_id}: abandoned ({info.status_reason})"

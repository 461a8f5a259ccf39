"""Subcommands ``serve``, ``up``, ``down`` and ``status`` of the ``discovery`` command line.

``flows/cli.py`` calls :func:`register` with its subparsers. Prefect is imported only when a command
runs, so ``discovery --help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from flows.argtypes import port, seconds
from flows.parameters import add_deployment_options, deployment_defaults_from_args
from flows.stack import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_START_TIMEOUT_S,
    DEFAULT_STOP_TIMEOUT_S,
    DEPLOYMENT_NAME,
    FLOW_NAME,
    SERVE,
    SERVER,
    WATCH_DEPLOYMENT_NAME,
    StackConfig,
    StackPaths,
    StackState,
    auth_string,
    stack_status,
    start_stack,
    stop_stack,
)


def _stack_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stack-dir",
        type=Path,
        default=None,
        help="the stack's state, Prefect database and logs (default: .stack, or $DISCOVERY_STACK_DIR)",
    )


def _paths(args: argparse.Namespace) -> StackPaths:
    """The stack folder: ``--stack-dir``, else the ``stack_dir`` setting (``DISCOVERY_STACK_DIR``)."""
    if args.stack_dir is not None:
        return StackPaths.at(args.stack_dir)
    from freemodels.settings import load_settings

    return StackPaths.at(load_settings().stack_dir)


# --------------------------------------------------------------------------------------------------
# commands


def cmd_serve(args: argparse.Namespace) -> int:
    """Register discovery/monthly and serve it in the foreground."""
    from flows.serve import serve

    serve(deployment_defaults_from_args(args))
    return 0


def how_to_use(state: StackState) -> str:
    """The lines a user needs once the stack is up (never the auth string itself)."""
    return "\n".join(
        [
            f"Prefect UI:  {state.ui_url}  (log in with the auth string `discovery status --env` shows)",
            f"Reports:     {state.docs_dir}",
            f"Data:        {state.data_dir}",
            "",
            "Run a discovery now and wait for it:",
            '  eval "$(uv run discovery status --env)"     # PREFECT_API_URL and PREFECT_API_AUTH_STRING',
            f"  uv run prefect deployment run {FLOW_NAME}/{DEPLOYMENT_NAME} --watch",
            "Watch the rotation now (daily at 06:30 UTC anyway; no chat quota):",
            f"  uv run prefect deployment run {FLOW_NAME}/{WATCH_DEPLOYMENT_NAME} --watch",
            "",
            "Stop the stack:  uv run discovery down",
        ]
    )


def env_lines(state: StackState, auth: str | None) -> str:
    """The ``export`` lines that point Prefect's command line (and the UI's login) at the stack."""
    lines = [f"export PREFECT_API_URL={state.api_url}"]
    if auth:
        lines.append(f"export PREFECT_API_AUTH_STRING={shlex.quote(auth)}")
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the Prefect server and the serve process in the background."""
    from freemodels.settings import load_settings

    project_dir = Path.cwd().resolve()
    settings = load_settings()
    config = StackConfig(
        paths=_paths(args),
        project_dir=project_dir,
        data_dir=(project_dir / settings.data_dir).resolve(),
        docs_dir=(project_dir / settings.docs_dir).resolve(),
        host=args.host,
        port=args.port,
        defaults=deployment_defaults_from_args(args),
        timeout_s=args.timeout,
    )
    print(f"Starting the Prefect server and the serve process (state in {config.paths.root}) ...")
    result = start_stack(config)
    state = result.state
    if result.already_up:
        print("The stack is already up.")
    else:
        server, serve = state.process(SERVER), state.process(SERVE)
        assert server is not None and serve is not None
        print(f"Prefect server on {state.ui_url}: pid {server.pid}, ready in {result.server_ready_s:.1f} s")
        print(f"  log: {server.log}")
        print(
            f"Serve process for {FLOW_NAME}/{DEPLOYMENT_NAME} (cron 0 6 1 * *, UTC): "
            f"pid {serve.pid}, ready in {result.serve_ready_s:.1f} s"
        )
        print(f"  log: {serve.log}")
    print()
    print(how_to_use(state))
    return 0


def describe_deployment(
    deployment: Mapping[str, object], next_run: datetime | None, name: str = DEPLOYMENT_NAME
) -> str:
    """The deployment's state in the words a person reads."""
    schedule = "schedule paused" if deployment.get("paused") else "schedule active"
    polled = deployment.get("last_polled")
    serving = (
        f"serve process last asked for runs {polled}"
        if deployment.get("status") == "READY"
        else "no serve process is asking for runs (run `uv run discovery up`)"
    )
    if deployment.get("paused"):
        upcoming = "no run scheduled while paused"
    elif next_run is not None:
        upcoming = f"next run {next_run.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    else:
        upcoming = "no run scheduled yet"
    return f"deployment {FLOW_NAME}/{name}: {schedule}, {upcoming}; {serving}"


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the processes that `discovery up` started."""
    paths = _paths(args)
    outcomes = stop_stack(paths, timeout_s=args.timeout)
    if not outcomes:
        print(f"Nothing to stop: no stack recorded in {paths.root}")
        return 0
    for name, pid, what in outcomes:
        print(f"{name} (pid {pid}): {what}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show whether the stack runs; exit 0 when it is up and healthy, 1 otherwise."""
    paths = _paths(args)
    status = stack_status(paths)
    if status.state is None:
        print(f"stack not running: nothing recorded in {paths.root} (start it with `uv run discovery up`)")
        return 1
    state = status.state
    if args.env:
        print(env_lines(state, auth_string(paths)))
        return 0
    for record in state.processes:
        running = "running" if status.running.get(record.name) else "not running"
        print(f"{record.name}: pid {record.pid}, {running} (log: {record.log})")
    print(f"API {state.api_url}: {'healthy' if status.server_healthy else 'not answering'}")
    deployment = status.deployment
    for name, found, upcoming in (
        (DEPLOYMENT_NAME, status.deployment, status.next_run),
        (WATCH_DEPLOYMENT_NAME, status.watch, status.next_watch),
    ):
        if found is not None:
            print(describe_deployment(found, upcoming, name))
        elif status.server_healthy:
            print(f"deployment {FLOW_NAME}/{name}: not registered (the serve process registers it)")
    up = (
        all(status.running.values())
        and status.server_healthy
        and deployment is not None
        and status.watch is not None
    )
    print()
    print(how_to_use(state) if up else "The stack is not fully up: run `uv run discovery down` then `up`.")
    return 0 if up else 1


# --------------------------------------------------------------------------------------------------
# parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve``, ``up``, ``down`` and ``status`` to the ``discovery`` command line."""
    serve = sub.add_parser(
        "serve",
        help="serve discovery/monthly and discovery/watch (foreground; needs PREFECT_API_URL)",
        description=(
            "Register the deployments discovery/monthly (cron 0 6 1 * *, UTC) and discovery/watch "
            "(cron 30 6 * * *, UTC) with the Prefect server named by PREFECT_API_URL and run their "
            "flow runs, one at a time, until interrupted. Runs start in this "
            "folder: relative data/ and docs/ resolve here. `discovery up` starts this in the "
            "background together with a local server."
        ),
    )
    add_deployment_options(serve)
    serve.set_defaults(func=cmd_serve)

    up = sub.add_parser(
        "up",
        help="start a local Prefect server and the serve process in the background",
        description=(
            "Start a Prefect server on loopback (SQLite under --stack-dir, analytics off, no internet "
            "needed) and the serve process of discovery/monthly and discovery/watch, wait until both "
            "are healthy, and "
            "print the UI address. Run it from the project folder: runs write data/ and docs/ there "
            "(or to $DISCOVERY_DATA_DIR / $DISCOVERY_DOCS_DIR). Already up: says so."
        ),
    )
    up.add_argument("--host", default=DEFAULT_HOST, help="loopback address to bind (default: 127.0.0.1)")
    up.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"server port (default: {DEFAULT_PORT}; 0 = any)"
    )
    up.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_START_TIMEOUT_S,
        help=f"seconds to wait for each process to be ready (default: {DEFAULT_START_TIMEOUT_S:.0f})",
    )
    add_deployment_options(up)
    _stack_dir(up)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser(
        "down",
        help="stop the processes that `discovery up` started",
        description=(
            "Stop the serve process and the Prefect server recorded by `discovery up` (by pid, with "
            "their process groups): SIGTERM, then SIGKILL after --timeout. Processes already gone are "
            "reported and forgotten. The Prefect database stays, with the history and the schedule."
        ),
    )
    down.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_STOP_TIMEOUT_S,
        help=f"seconds to wait after SIGTERM (default: {DEFAULT_STOP_TIMEOUT_S:.0f})",
    )
    _stack_dir(down)
    down.set_defaults(func=cmd_down)

    status = sub.add_parser(
        "status",
        help="show whether the local stack runs (exit 1 when it is not up)",
        description="Show the recorded processes, the API's health and the deployment's state.",
    )
    status.add_argument(
        "--env",
        action="store_true",
        help=(
            "print only the `export` lines of PREFECT_API_URL and PREFECT_API_AUTH_STRING (the auth "
            'string is also the UI\'s login); use as eval "$(discovery status --env)"'
        ),
    )
    _stack_dir(status)
    status.set_defaults(func=cmd_status)

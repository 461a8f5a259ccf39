"""The ``discovery`` command line.

Each subcommand imports what it needs only when it runs, so ``discovery catalog`` and ``--help`` answer
at once without loading Prefect. Every error the project raises on purpose (:class:`DiscoveryError`) ends
as one line on stderr and exit code 2; a user mistake never shows a traceback. Every line that may
quote outside text is printed through :func:`~freemodels.secrets.printable` (control characters
escaped), and every log record of the process is redacted (:func:`~freemodels.secrets.install_log_redaction`).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from flows.argtypes import non_negative_int, port, positive_int
from flows.parameters import WatchParameters, add_run_options
from freemodels.errors import DiscoveryError, RunFailed, environment_error
from freemodels.secrets import install_log_redaction, printable, redact

EXIT_RUN_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------------------------------
# subcommands


def cmd_catalog(args: argparse.Namespace) -> int:
    """Summarise a catalog file or URL."""
    from freemodels.catalog import parse_catalog_with_notes, read_catalog_source, summarize

    raw = read_catalog_source(args.source, timeout_s=args.timeout)
    frame, notes = parse_catalog_with_notes(raw, origin=args.source)
    summary = summarize(frame)
    if args.json:
        print(json.dumps(summary.as_json()))
        return 0
    data = summary.as_json()
    print(printable(f"catalog: {args.source}"))
    print(f"  models listed:            {data['models']}")
    print(f"  free (all):               {data['free']}")
    print(f"    free by ':free' suffix: {data['free_suffix']}")
    print(f"    free by zero price:     {data['free_zero_price']}")
    print(f"  routers (counted apart):  {data['routers']}")
    print(f"  families of free models:  {data['families']}")
    for note in notes:  # entries skipped or dropped
        print(printable(f"  note: {note}"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) one discovery and print where the results went."""
    from dataclasses import replace

    from flows.parameters import parameters_from_args
    from flows.runner import check_run, run_discovery

    params = parameters_from_args(args)
    prepared = check_run(params)
    if prepared.resumed is not None:
        run = prepared.resumed
        extra = f", {run.untested} models untested" if run.untested else ""
        why = f": {run.reason}" if run.reason and run.status.value != "completed" else ""
        print(
            printable(
                f"resuming run {run.run_id} ({run.info.source}, started "
                f"{run.info.started_at:%Y-%m-%d %H:%M} UTC, {run.status.value}{why}{extra})"
            ),
            flush=True,
        )
        params = replace(prepared.params, resume=run.run_id)
    end = run_discovery(params)
    if end.interrupted is not None:
        print(printable(f"discovery: {end.interrupted}"), file=sys.stderr)
        return EXIT_INTERRUPTED
    assert end.summary is not None
    print(printable(end.summary.describe(), keep_newlines=True))
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Watch the latest rotation: no chat quota (unless --liveness), exit 0 whatever it finds."""
    from flows.parameters import WatchParameters, record_from_args
    from flows.runner import check_watch, run_watch

    params = record_from_args(args, WatchParameters)
    check_watch(params)  # a mistake in the command or the machine: one line, exit 2
    try:
        summary = run_watch(params)
    except DiscoveryError as exc:  # the watch itself failed (source, database, disk)
        print(printable(f"discovery: error: the watch failed: {exc}"), file=sys.stderr)
        return EXIT_RUN_FAILED
    print(printable(summary.describe(), keep_newlines=True))
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Serve the OpenRouter-compatible sandbox until interrupted."""
    from freemodels.sandbox.scenario import load_scenario
    from freemodels.sandbox.server import serve

    scenario = load_scenario(args.scenario) if args.scenario else None
    serve(host=args.host, port=args.port, scenario=scenario, seed=args.seed)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Render the reports again from the database (latest run, or --run-id)."""
    from flows.runner import render_reports

    written = render_reports(
        run_id=args.run_id,
        data_dir=str(args.data_dir) if args.data_dir else None,
        docs_dir=str(args.docs_dir) if args.docs_dir else None,
    )
    for path in written:
        print(path)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    """Drill a stored run's rotation through the clients people deploy, then render the reports."""
    import asyncio

    from flows.drill import describe, drill_command
    from freemodels.settings import load_settings

    data_dir = str(args.data_dir) if args.data_dir else None
    docs_dir = str(args.docs_dir) if args.docs_dir else None
    done, run_id, written = asyncio.run(
        drill_command(
            run_id=args.run_id,
            requests=args.requests,
            budget=args.budget,
            data_dir=data_dir,
            docs_dir=docs_dir,
        )
    )
    settings = load_settings(data_dir=data_dir, docs_dir=docs_dir)
    print(describe(done, run_id=run_id, tail_min_answers=settings.min_answers_for_tail))
    if written:
        print(f"  reports:  {Path(written[0]).parent}/ ({len(written)} files)")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """List every run with its status, or abandon one."""
    from flows.runner import abandon_run, runs_table

    data_dir = str(args.data_dir) if args.data_dir else None
    if getattr(args, "action", None) == "abandon":
        print(printable(abandon_run(args.run_id, data_dir=data_dir)))
        return 0
    print(printable(runs_table(data_dir=data_dir), keep_newlines=True))
    return 0


# --------------------------------------------------------------------------------------------------
# parser


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="runtime data folder: DuckDB file and Parquet per run (default: data/, or $DISCOVERY_DATA_DIR)",
    )


def _add_paths(parser: argparse.ArgumentParser) -> None:
    _add_data_dir(parser)
    parser.add_argument(
        "--docs-dir",
        type=Path,
        help="where the Markdown reports go (default: docs/, or $DISCOVERY_DOCS_DIR)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="discovery",
        description=(
            "Find out which free LLM models on OpenRouter work right now, how fast they are, why "
            "the others fail, and which to fall back to. Without OPENROUTER_API_KEY every command "
            "runs against the built-in sandbox."
        ),
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also DISCOVERY_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run a full discovery and write the database and the reports",
        description=(
            "Fetch the catalog, probe every free model with the standard suite within the rate "
            "limit and daily quota, analyse failures, rank the working models, store the run in "
            "DuckDB and render the reports into docs/. Source: OpenRouter when OPENROUTER_API_KEY "
            "is set, otherwise the built-in sandbox."
        ),
    )
    add_run_options(run)
    run.set_defaults(func=cmd_run)

    watch = sub.add_parser(
        "watch",
        help="check the rotation against the catalog now (no chat quota) and repair the exports",
        description=(
            "Read the catalog and the endpoints listings of the latest rotation's models (no chat "
            "requests, no key needed), compare with the latest completed run and the previous watch, "
            "store what changed in DuckDB, emit discovery.model.lost / .expiring / .added, and rewrite "
            "docs/rotation.json and docs/litellm-router.yaml without lost models. Exit 0 whatever it "
            "finds; 1 only when the watch itself failed."
        ),
    )
    add_run_options(watch, WatchParameters)
    watch.set_defaults(func=cmd_watch)

    catalog = sub.add_parser(
        "catalog",
        help="summarise a catalog file or URL (free rule, routers, families)",
        description=(
            "Read a GET /api/v1/models response from a file or URL and count models, free models "
            "(by ':free' suffix and by zero price), routers and families of free models."
        ),
    )
    catalog.add_argument("source", metavar="PATH_OR_URL", help="catalog JSON file or URL")
    catalog.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    catalog.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for a URL (default: 30)"
    )
    catalog.set_defaults(func=cmd_catalog)

    sandbox = sub.add_parser(
        "sandbox",
        help="serve the OpenRouter-compatible sandbox on loopback",
        description=(
            "Serve the built-in OpenRouter-compatible server (catalog, /key, chat completions with "
            "streaming, rate limits, staged failures) until Ctrl-C. Base URL: "
            "http://HOST:PORT/api/v1"
        ),
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    sandbox.add_argument("--port", type=port, default=8765, help="port (default: 8765; 0 = any)")
    sandbox.add_argument("--scenario", type=Path, help="scenario file (TOML or JSON)")
    sandbox.add_argument("--seed", type=non_negative_int, help="seed of the behaviour profiles")
    sandbox.set_defaults(func=cmd_sandbox)

    report = sub.add_parser(
        "report",
        help="render the reports again from the database",
        description="Render docs/ from the DuckDB data of the latest completed run (or --run-id).",
    )
    report.add_argument("--run-id", help="render this run instead of the latest")
    _add_paths(report)
    report.set_defaults(func=cmd_report)

    drill = sub.add_parser(
        "drill",
        help="drill the rotation through OpenRouter's models array and LiteLLM's router",
        description=(
            "Send a small workload through the rotation of a stored run (the latest completed one, or "
            "--run-id) exactly as it is exported: OpenRouter's `models` fallback array (rotation.json) "
            "and litellm.Router loaded from litellm-router.yaml, each also with the primary alone and "
            "with openrouter/free. On the sandbox it stages incidents (the primary's upstream 429 "
            "storm, its free variant ending, the account's per-minute limit reached, a 5xx burst). "
            "Every request is paced and counted against the budget; the results go to the `drill` "
            "table and the reports are rendered again. LiteLLM comes from the optional dependency "
            "group `litellm`; without it only the `models` array is drilled."
        ),
    )
    drill.add_argument("--run-id", help="drill this run instead of the latest completed one")
    drill.add_argument(
        "--requests",
        type=positive_int,
        metavar="N",
        help="requests per client, arm and incident (default: 10, or $DISCOVERY_DRILL_REQUESTS)",
    )
    drill.add_argument(
        "--budget",
        type=non_negative_int,
        metavar="N",
        help="most requests the drill may send (default: the remaining daily quota)",
    )
    _add_paths(drill)
    drill.set_defaults(func=cmd_drill)

    runs = sub.add_parser(
        "runs",
        help="list every run with its status, or abandon one",
        description=(
            "List every run, unfinished ones included, with its status: running, interrupted, "
            "failed, completed or abandoned (and why, for interrupted and failed runs). "
            "`discovery runs abandon RUN_ID` marks an unfinished run abandoned: it is never resumed."
        ),
    )
    _add_data_dir(runs)
    runs.set_defaults(func=cmd_runs, action=None)
    runs_actions = runs.add_subparsers(dest="action", metavar="ACTION")
    abandon = runs_actions.add_parser(
        "abandon",
        help="mark an unfinished run abandoned (it is never resumed)",
        description="Mark an interrupted or failed run abandoned: `--resume` never picks it again.",
    )
    abandon.add_argument("run_id", metavar="RUN_ID", help="the run to abandon (see `discovery runs`)")
    _add_data_dir(abandon)
    abandon.set_defaults(func=cmd_runs)

    _add_stack_commands(sub)
    return parser


def _add_stack_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """serve / up / down: the local Prefect stack (see flows/stack.py)."""
    try:
        from flows import stack_cli
    except ImportError:
        return
    stack_cli.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    install_log_redaction()
    debug = bool(args.debug) or _debug_requested()
    if debug:
        import os

        os.environ["DISCOVERY_DEBUG"] = "1"  # the flow's own processes and loggers see it too
    try:
        return func(args)
    except RunFailed as exc:
        if debug:
            _print_traceback()
        print(
            printable(
                f"discovery: error: {exc.reason} (run {exc.run_id} is recorded as failed; resume it with "
                f"discovery run --resume {exc.run_id})"
            ),
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED
    except DiscoveryError as exc:
        if debug:
            _print_traceback()
        print(printable(f"discovery: error: {exc}"), file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        if debug:
            _print_traceback()
        print(printable(f"discovery: error: {environment_error(exc)}"), file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        print("discovery: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a defect of this program: one line, the traceback with --debug
        if debug:
            _print_traceback()
        print(
            printable(
                f"discovery: internal error: {type(exc).__name__}: {redact(str(exc))[:300]} "
                "(run again with --debug for the traceback)"
            ),
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED


def _print_traceback() -> None:
    """The current exception's traceback on stderr (``--debug``), redacted."""
    print(printable(redact(traceback.format_exc()), keep_newlines=True), file=sys.stderr)


def _debug_requested() -> bool:
    from freemodels.settings import debug_requested

    return debug_requested()


if __name__ == "__main__":
    raise SystemExit(main())

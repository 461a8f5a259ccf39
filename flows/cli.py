"""The ``discovery`` command line.

Each subcommand imports what it needs only when it runs, so ``discovery catalog`` and ``--help`` answer
at once without loading Prefect. Every error the project raises on purpose (:class:`DiscoveryError`) ends
as one line on stderr and exit code 2; a user mistake never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from flows.argtypes import non_negative_int, port, positive_int
from freemodels.errors import DiscoveryError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------------------------------
# subcommands


def cmd_catalog(args: argparse.Namespace) -> int:
    """Summarise a catalog file or URL."""
    from freemodels.catalog import parse_catalog, read_catalog_source, summarize

    raw = read_catalog_source(args.source, timeout_s=args.timeout)
    frame = parse_catalog(raw, origin=args.source)
    summary = summarize(frame)
    if args.json:
        print(json.dumps(summary.as_json()))
        return 0
    data = summary.as_json()
    print(f"catalog: {args.source}")
    print(f"  models listed:            {data['models']}")
    print(f"  free (all):               {data['free']}")
    print(f"    free by ':free' suffix: {data['free_suffix']}")
    print(f"    free by zero price:     {data['free_zero_price']}")
    print(f"  routers (counted apart):  {data['routers']}")
    print(f"  families of free models:  {data['families']}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run one discovery (the `discovery` flow) and print where the results went."""
    from flows.runner import run_discovery

    summary = run_discovery(
        source=args.source,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        scenario=str(args.scenario) if args.scenario else None,
        seed=args.seed,
        budget=args.budget,
        candidates=str(args.candidates) if args.candidates else None,
        resume=args.resume,
        max_models=args.max_models,
        requests_per_minute=args.rpm,
        data_dir=str(args.data_dir) if args.data_dir else None,
        docs_dir=str(args.docs_dir) if args.docs_dir else None,
        commit_docs=args.commit_docs,
    )
    print(summary.describe())
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


def cmd_runs(args: argparse.Namespace) -> int:
    """List the runs stored in the database."""
    from flows.runner import list_runs_table

    print(list_runs_table(data_dir=str(args.data_dir) if args.data_dir else None))
    return 0


# --------------------------------------------------------------------------------------------------
# parser


def _add_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="runtime data folder: DuckDB file and Parquet per run (default: data/, or $DISCOVERY_DATA_DIR)",
    )
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
    run.add_argument(
        "--source",
        choices=["auto", "sandbox", "openrouter"],
        default=None,
        help="where the catalog and probes go (default: auto = openrouter with a key, else sandbox)",
    )
    run.add_argument(
        "--base-url",
        metavar="URL",
        help="probe any OpenAI-compatible server instead (e.g. http://127.0.0.1:8080/v1)",
    )
    run.add_argument(
        "--api-key-env",
        metavar="NAME",
        help="environment variable holding the key for --base-url (default: none)",
    )
    run.add_argument("--scenario", type=Path, help="sandbox scenario file (TOML or JSON)")
    run.add_argument("--seed", type=non_negative_int, help="sandbox seed")
    run.add_argument(
        "--budget",
        type=non_negative_int,
        help="most requests this run may send (default: the remaining daily quota)",
    )
    run.add_argument("--rpm", type=positive_int, help="requests per minute (default: 20 on OpenRouter)")
    run.add_argument(
        "--candidates",
        type=Path,
        help="file of model ids (one per line) to check even if the catalog does not list them",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest unfinished run without repeating probes that have a result",
    )
    run.add_argument("--max-models", type=positive_int, help="probe at most this many free models")
    run.add_argument(
        "--commit-docs",
        action="store_true",
        help="commit docs/ with git afterwards (only docs/, never pushes)",
    )
    _add_paths(run)
    run.set_defaults(func=cmd_run)

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

    runs = sub.add_parser("runs", help="list stored runs", description="List the runs in DuckDB.")
    _add_paths(runs)
    runs.set_defaults(func=cmd_runs)

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
    try:
        return func(args)
    except DiscoveryError as exc:
        print(f"discovery: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("discovery: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())

"""The serve/up/down/status commands and the deployment's definition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows import serve as serve_module
from flows.cli import build_parser, main
from flows.parameters import deployment_parameters
from flows.stack import ProcessRecord, StackPaths, StackState, auth_string, save_state
from flows.stack_cli import how_to_use


def test_up_flags_parse_into_deployment_defaults() -> None:
    args = build_parser().parse_args(
        ["up", "--port", "0", "--source", "sandbox", "--budget", "12", "--commit-docs", "--stack-dir", "/x"]
    )
    assert (args.port, args.source, args.suite, args.budget, args.commit_docs) == (
        0,
        "sandbox",
        "standard",
        12,
        True,
    )
    assert args.stack_dir == Path("/x")
    assert args.func.__name__ == "cmd_up"


@pytest.mark.parametrize(
    "argv", [["up", "--port", "70000"], ["up", "--budget", "-1"], ["down", "--timeout", "0"]]
)
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "expected" in err or "at most" in err


def test_down_without_a_stack_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["down", "--stack-dir", str(tmp_path / "none")]) == 0
    assert "Nothing to stop" in capsys.readouterr().out


def test_status_without_a_stack_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--stack-dir", str(tmp_path / "none")]) == 1
    assert "stack not running: nothing recorded in" in capsys.readouterr().out


def test_status_env_prints_the_export_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = StackPaths.at(tmp_path / "stack")
    save_state(paths, StackState("127.0.0.1", 4999, "/p", "/p/data", "/p/docs", "t", []))
    auth = auth_string(paths, create=True)
    assert main(["status", "--env", "--stack-dir", str(paths.root)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        "export PREFECT_API_URL=http://127.0.0.1:4999/api",
        f"export PREFECT_API_AUTH_STRING={auth}",  # token_urlsafe needs no shell quoting
    ]
    # What a shell does with them (eval "$(discovery status --env)").
    out = subprocess.run(
        [
            "sh",
            "-c",
            f'eval "$({sys.executable} -m flows.cli status --env --stack-dir {paths.root})"; '
            'printf "%s\\n%s" "$PREFECT_API_URL" "$PREFECT_API_AUTH_STRING"',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.splitlines() == ["http://127.0.0.1:4999/api", auth]


def test_status_of_a_dead_stack_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = StackPaths.at(tmp_path / "stack")
    dead = ProcessRecord("server", 2**22 + 7, None, ["x"], "server.log")
    save_state(paths, StackState("127.0.0.1", 1, "/p", "/p/data", "/p/docs", "t", [dead]))
    assert main(["status", "--stack-dir", str(paths.root)]) == 1
    out = capsys.readouterr().out
    assert "server: pid 4194311, not running" in out
    assert "not fully up" in out


def test_how_to_use_names_the_ui_the_env_line_and_the_run_command() -> None:
    text = how_to_use(StackState("127.0.0.1", 4200, "/p", "/p/data", "/p/docs", "t", []))
    assert "Prefect UI:  http://127.0.0.1:4200" in text
    assert 'eval "$(uv run discovery status --env)"' in text  # never the auth string itself
    assert "prefect deployment run discovery/monthly --watch" in text
    assert "/p/docs" in text


def test_deployment_is_monthly_at_six_utc_with_a_stable_slug() -> None:
    schedule = serve_module.monthly_schedule()
    assert schedule.cron == "0 6 1 * *"
    assert schedule.timezone == "UTC"
    assert schedule.slug == serve_module.SCHEDULE_SLUG
    assert serve_module.DEPLOYMENT_NAME == "monthly"


def test_deployment_parameters_cover_source_suite_and_budget() -> None:
    assert deployment_parameters() == {
        "source": "auto",
        "suite": "standard",
        "budget": None,
        "commit_docs": False,
        "drill": False,  # the drill is off unless asked for
    }
    assert deployment_parameters(source="sandbox", budget=5)["budget"] == 5


def test_serve_without_a_prefect_server_is_a_clear_error(tmp_path: Path) -> None:
    # A separate process: within this test session a Prefect test harness may already be configured.
    env = {**os.environ, "PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert "needs a Prefect server" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_deployment_is_described_in_words() -> None:
    from datetime import UTC, datetime

    from flows.stack_cli import describe_deployment

    active = {"status": "READY", "paused": False, "last_polled": "2026-11-30T10:00:00Z"}
    line = describe_deployment(active, datetime(2026, 12, 1, 6, 0, tzinfo=UTC))
    assert line == (
        "deployment discovery/monthly: schedule active, next run 2026-12-01 06:00 UTC; "
        "serve process last asked for runs 2026-11-30T10:00:00Z"
    )
    assert "paused False" not in line
    paused = describe_deployment({**active, "paused": True, "status": "NOT_READY"}, None)
    assert paused == (
        "deployment discovery/monthly: schedule paused, no run scheduled while paused; "
        "no serve process is asking for runs (run `uv run discovery up`)"
    )

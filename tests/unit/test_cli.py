"""The command line: help texts, argument errors, user errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli import EXIT_USER_ERROR, build_parser, main


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"run", "catalog", "sandbox", "report", "runs"} <= set(subcommands)
    for name in subcommands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: discovery {name}" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rpm", "0"],
        ["run", "--budget", "-3"],
        ["run", "--max-models", "x"],
        ["sandbox", "--port", "70000"],
    ],
)
def test_bad_arguments_exit_2_with_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_missing_catalog_file_is_one_line_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["catalog", str(tmp_path / "nope.json")])
    assert code == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("discovery: error:") and "nope.json" in err
    assert len(err.splitlines()) == 1


def test_report_without_database_is_clear(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", "--data-dir", str(tmp_path / "empty")])
    assert code == EXIT_USER_ERROR
    assert "run `discovery run` first" in capsys.readouterr().err


def test_console_script_help_is_fast_and_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    assert "usage: discovery" in proc.stdout


def test_parser_does_not_import_prefect() -> None:
    code = "import sys; from flows.cli import build_parser; build_parser(); print('prefect' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--resume"], "no unfinished run to resume"),
        (["run", "--candidates", "/nonexistent/candidates.txt"], "candidates file"),
        (["run", "--scenario", "/nonexistent/scenario.toml"], "scenario file"),
        (["run", "--source", "openrouter"], "needs OPENROUTER_API_KEY"),
        (["run", "--base-url", "http://127.0.0.1:9/v1", "--api-key-env", "UNSET_KEY_VAR"], "UNSET_KEY_VAR"),
    ],
)
def test_run_mistakes_are_caught_before_any_flow_run(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    import flows.discovery

    def no_flow(**_: object) -> None:
        raise AssertionError("the flow must not start")

    monkeypatch.setattr(flows.discovery, "discovery", no_flow)
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

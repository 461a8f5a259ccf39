"""Deployment parameters are a trust boundary: what a run started from the deployment may name.

Anyone who can reach the Prefect API can start ``discovery/monthly`` with any parameters. These tests
call :func:`flows.prepare.prepare` as the flow does for such a run (``deployment_run=True``) and as the
command line does (the user's own machine, where none of the checks apply).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.parameters import RunParameters, Trust
from flows.prepare import prepare, url_allowed
from freemodels import secrets as secrets_module
from freemodels import storage
from freemodels.errors import ConfigError
from freemodels.records import RunInfo
from freemodels.secrets import MASK
from freemodels.settings import load_settings
from freemodels.source import SourceKind


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder a deployment run starts in (the serve process's), holding a good candidates file."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "candidates.txt").write_text("vendor/model:free\n", encoding="utf-8")
    monkeypatch.chdir(folder)
    return folder


def _refused(params: RunParameters) -> str:
    with pytest.raises(ConfigError) as info:
        prepare(params, deployment_run=True)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_parameter_that_reaches_the_machine_is_declared_with_its_trust() -> None:
    trust = {name: RunParameters.meta(name).trust for name in RunParameters.__dataclass_fields__}
    assert trust["api_key_env"] is Trust.KEY_ENV
    assert trust["base_url"] is trust["source"] is Trust.URL
    assert trust["candidates"] is trust["scenario"] is Trust.FILE
    assert trust["data_dir"] is trust["docs_dir"] is Trust.FOLDER


# --- api_key_env --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["HOME", "PATH", "PREFECT_API_AUTH_STRING", "DISCOVERY_API_KEY", "AWS_SECRET"]
)
def test_a_key_variable_outside_the_allowlist_is_refused(project: Path, name: str) -> None:
    # --param base_url=http://... --param api_key_env=ANY_VAR sent any variable as a bearer token.
    message = _refused(RunParameters(base_url="http://127.0.0.1:9/v1", api_key_env=name))
    assert message.startswith(f"api_key_env: {name} is not a key variable a deployment run may use")
    assert "DISCOVERY_ALLOWED_KEY_ENVS" in message


def test_the_allowlist_is_a_setting(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCOVERY_ALLOWED_KEY_ENVS", "OPENROUTER_API_KEY, LOCAL_KEY")
    monkeypatch.setenv("LOCAL_KEY", "local-key-value-for-the-test")
    prepared = prepare(
        RunParameters(source="sandbox", api_key_env="LOCAL_KEY", data_dir=None), deployment_run=True
    )
    assert prepared.params.api_key_env == "LOCAL_KEY"


# --- base_url and source ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://openrouter.ai/api/v1", True),
        ("https://openrouter.ai/api/v1/", True),
        ("http://127.0.0.1:8080/v1", True),
        ("http://localhost:1234/v1", True),
        ("http://[::1]:9/v1", True),
        ("https://openrouter.ai/api/v10", False),
        ("https://openrouter.ai/api/v1/../../x", False),
        ("http://openrouter.ai/api/v1", False),  # another scheme
        ("http://127.0.0.1.evil.example/v1", False),
        ("http://user:pw@127.0.0.1:8080/v1", False),  # credentials never
        ("http://evil.example/v1", False),
        ("http://2130706433/v1", False),
    ],
)
def test_base_urls_match_the_allowlist(url: str, allowed: bool) -> None:
    default = ("https://openrouter.ai/api/v1", "http://127.0.0.1", "http://localhost", "http://[::1]")
    assert url_allowed(url, default) is allowed


@pytest.mark.parametrize("field", ["base_url", "source"])
def test_a_base_url_outside_the_allowlist_is_refused(project: Path, field: str) -> None:
    message = _refused(RunParameters(**{field: "http://evil.example/v1"}))
    assert message.startswith(f"{field}: http://evil.example/v1 is not a base URL a deployment run may probe")
    message = _refused(RunParameters(**{field: "http://user:hunter2-secret@127.0.0.1:9/v1"}))
    assert "hunter2-secret" not in message and MASK in message


# --- candidates and scenario --------------------------------------------------------------------------


def test_a_file_outside_the_project_is_refused(project: Path) -> None:
    # --param candidates=/proc/self/environ wrote the serve process's environment into the reports.
    message = _refused(RunParameters(source="sandbox", candidates="/proc/self/environ"))
    assert message.startswith("candidates: /proc/self/environ is outside ")
    message = _refused(RunParameters(source="sandbox", candidates="../../etc/passwd"))
    assert message.startswith("candidates: ../../etc/passwd is outside ")


def test_a_symlink_out_of_the_project_is_refused(project: Path) -> None:
    (project / "innocent.txt").symlink_to("/proc/self/environ")
    message = _refused(RunParameters(source="sandbox", candidates="innocent.txt"))
    assert message.startswith("candidates: innocent.txt is outside ")


@pytest.mark.parametrize("name", [".env", ".stack/auth", ".git/config", "sub/.hidden"])
def test_hidden_files_inside_the_project_are_refused(project: Path, name: str) -> None:
    (project / name).parent.mkdir(parents=True, exist_ok=True)
    (project / name).write_text("OPENROUTER_API_KEY=not-a-real-key\n", encoding="utf-8")
    message = _refused(RunParameters(source="sandbox", candidates=name))
    assert (
        message == f"candidates: {name} is hidden or inside a hidden folder; a deployment run never reads it"
    )


def test_only_regular_files_under_the_size_cap(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkfifo(project / "pipe")
    assert _refused(RunParameters(source="sandbox", candidates="pipe")) == (
        "candidates: pipe is not a regular file"
    )
    (project / "folder").mkdir()
    assert (
        _refused(RunParameters(source="sandbox", scenario="folder"))
        == "scenario: folder is not a regular file"
    )
    monkeypatch.setenv("DISCOVERY_MAX_INPUT_FILE_BYTES", "10")
    (project / "big.txt").write_text("vendor/model:free\n" * 2, encoding="utf-8")
    assert _refused(RunParameters(source="sandbox", candidates="big.txt")) == (
        "candidates: big.txt is larger than 10 bytes (DISCOVERY_MAX_INPUT_FILE_BYTES)"
    )


def test_a_file_inside_the_project_is_read(project: Path) -> None:
    prepared = prepare(RunParameters(source="sandbox", candidates="candidates.txt"), deployment_run=True)
    assert prepared.candidates == ("vendor/model:free",)
    assert prepared.params.candidates == str(project / "candidates.txt")


def test_the_input_folder_is_a_setting(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "ids.txt").write_text("other/model:free\n", encoding="utf-8")
    monkeypatch.setenv("DISCOVERY_INPUT_DIR", str(inputs))
    prepared = prepare(RunParameters(source="sandbox", candidates="ids.txt"), deployment_run=True)
    assert prepared.candidates == ("other/model:free",)
    assert _refused(RunParameters(source="sandbox", candidates=str(project / "candidates.txt"))).startswith(
        "candidates: "
    )


def test_a_scenario_may_replay_only_files_inside_the_project(project: Path) -> None:
    scenario = {"models": {"vendor/model:free": {"replay": "/proc/self/environ"}}}
    (project / "scenario.json").write_text(json.dumps(scenario), encoding="utf-8")
    message = _refused(RunParameters(source="sandbox", scenario="scenario.json"))
    assert message.startswith("scenario (replay): /proc/self/environ is outside ")


# --- data_dir and docs_dir ----------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["data_dir", "docs_dir"])
def test_a_deployment_run_writes_only_where_the_serve_process_was_told(
    project: Path, tmp_path: Path, field: str
) -> None:
    message = _refused(RunParameters(source="sandbox", **{field: "/tmp/elsewhere"}))
    assert message.startswith(f"{field}: a deployment run writes only to ")
    assert message.endswith("leave the parameter out")
    configured = os.environ[f"DISCOVERY_{field.upper()}"]
    assert prepare(RunParameters(source="sandbox", **{field: configured}), deployment_run=True)


# --- resumed runs and the command line ----------------------------------------------------------------


def _stored_run(params: RunParameters, *, base_url: str) -> str:
    """An interrupted run on disk, started from the command line with ``params``."""
    settings = load_settings()
    run_id = "20261101T060000Z-abcdef"
    info = RunInfo(
        run_id=run_id,
        started_at=datetime(2026, 11, 1, 6, tzinfo=UTC),
        source=SourceKind.BASE_URL.value,
        base_url=base_url,
        status="interrupted",
        settings_json=json.dumps({"parameters": params.stored()}),
    )
    storage.write_run_info(storage.run_dir(settings.runs_dir, run_id), info)
    return run_id


def test_a_resumed_run_is_checked_with_the_parameters_it_takes_over(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _stored_run(
        RunParameters(base_url="http://evil.example/v1", api_key_env="MY_KEY"),
        base_url="http://evil.example/v1",
    )
    monkeypatch.setenv("MY_KEY", "my-key-for-the-test-only")
    message = _refused(RunParameters(resume=run_id))
    assert message.startswith("base_url: http://evil.example/v1 is not a base URL a deployment run may probe")


def test_a_base_url_with_credentials_is_stored_masked_and_must_be_given_again(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "http://user:pw-for-the-test@127.0.0.1:9/v1"
    params = RunParameters(base_url=url)
    assert params.stored()["base_url"] == f"http://{MASK}@127.0.0.1:9/v1"
    assert params.shown().base_url == f"http://{MASK}@127.0.0.1:9/v1"  # what Prefect is given
    run_id = _stored_run(params, base_url=f"http://{MASK}@127.0.0.1:9/v1")
    monkeypatch.delitem(secrets_module._urls, f"http://{MASK}@127.0.0.1:9/v1")  # as in a new process
    with pytest.raises(ConfigError, match="used a base URL with credentials, which are never stored"):
        prepare(RunParameters(resume=run_id))
    resumed = prepare(RunParameters(resume=run_id, base_url=url))
    assert resumed.params.base_url == url


def test_the_command_line_is_the_users_own_machine(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "my-key-for-the-test-only")
    prepared = prepare(RunParameters(source="sandbox", candidates=str(project / "candidates.txt")))
    assert prepared.candidates == ("vendor/model:free",)
    prepared = prepare(RunParameters(base_url="http://127.0.0.1:9/v1", api_key_env="MY_KEY"))
    assert prepared.params.api_key_env == "MY_KEY"

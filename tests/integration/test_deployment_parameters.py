"""A flow run started from the deployment refuses parameters that reach outside the run, in one line
of its state message, before it writes anything or sends a request.

The flow is called as the serve process calls it; :func:`flows.discovery.started_from_deployment` is
made to say so (``tests/e2e/test_deployment.py`` starts real deployment runs).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from flows import discovery as discovery_module
from tests.integration.test_secrets import Recorder

pytestmark = pytest.mark.integration


@pytest.fixture
def from_deployment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefect_harness: None) -> Path:
    monkeypatch.setattr(discovery_module, "started_from_deployment", lambda: True)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    return project


def _state(**params: Any) -> Any:
    return asyncio.run(discovery_module.discovery(**params, return_state=True))  # type: ignore[call-overload]


def test_any_variable_sent_to_any_url_is_refused(
    from_deployment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANY_VAR", "a-value-that-must-stay-here")
    with Recorder() as recorder:
        state = _state(base_url=f"{recorder.url}/v1", api_key_env="ANY_VAR")
        allowed_url_state = _state(base_url="http://evil.example/v1")
    assert state.is_failed()
    assert state.message.startswith("api_key_env: ANY_VAR is not a key variable a deployment run may use")
    assert "\n" not in state.message
    assert allowed_url_state.is_failed()
    assert allowed_url_state.message.startswith("base_url: http://evil.example/v1 is not a base URL")
    assert recorder.requests == []  # nothing was sent, let alone the variable


def test_a_file_outside_the_project_is_never_read(from_deployment: Path, tmp_path: Path) -> None:
    data, docs = Path.cwd().parent / "data", Path.cwd().parent / "docs"
    state = _state(source="sandbox", candidates="/proc/self/environ")
    assert state.is_failed()
    assert state.message.startswith("candidates: /proc/self/environ is outside ")
    assert "\n" not in state.message
    assert not (data / "runs").exists() and not docs.exists()  # nothing was written


def test_folders_are_the_serve_process_own(from_deployment: Path, tmp_path: Path) -> None:
    state = _state(source="sandbox", docs_dir=str(tmp_path / "elsewhere"))
    assert state.is_failed() and state.message.startswith("docs_dir: a deployment run writes only to ")
    assert not (tmp_path / "elsewhere").exists()

"""``prefect.yaml`` (the process work pool's deployments) says what ``discovery serve`` serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows import serve
from flows.parameters import RunParameters, WatchParameters, deployment_parameters
from tests.conftest import REPO_ROOT


def _deployments() -> dict[str, dict]:
    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return {d["name"]: d for d in config["deployments"]}


def test_prefect_yaml_has_both_deployments_with_the_served_schedules_and_defaults() -> None:
    found = _deployments()
    assert set(found) == {serve.DEPLOYMENT_NAME, serve.WATCH_DEPLOYMENT_NAME}
    monthly, watch = found[serve.DEPLOYMENT_NAME], found[serve.WATCH_DEPLOYMENT_NAME]
    assert [(s["cron"], s["timezone"]) for s in monthly["schedules"]] == [(serve.CRON, serve.TIMEZONE)]
    assert [(s["cron"], s["timezone"]) for s in watch["schedules"]] == [(serve.WATCH_CRON, serve.TIMEZONE)]
    assert monthly["parameters"] == deployment_parameters(RunParameters)
    assert watch["parameters"] == deployment_parameters(WatchParameters)
    assert monthly["tags"] == list(serve.DEPLOYMENT_TAGS) and watch["tags"] == list(serve.WATCH_TAGS)
    assert monthly["work_pool"]["name"] == watch["work_pool"]["name"]


def test_prefect_yaml_entrypoints_name_the_flows_and_runs_start_in_the_project_folder() -> None:
    from flows.discovery import discovery
    from flows.watch import watch

    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    for deployment, flow in zip(config["deployments"], (discovery, watch), strict=True):
        path, _, name = deployment["entrypoint"].partition(":")
        assert (REPO_ROOT / path).is_file() and Path(path).stem == flow.fn.__module__.rsplit(".", 1)[-1]
        assert name == flow.fn.__name__ and flow.name == "discovery"
    step = config["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ $DISCOVERY_PROJECT_DIR }}"

"""The run's parameters, declared once: the CLI, the flow signature and resume derive from the record."""

from __future__ import annotations

import argparse
import inspect
from dataclasses import fields

import pytest

from flows.parameters import (
    RunParameters,
    add_deployment_options,
    add_run_options,
    deployment_args,
    deployment_parameters,
    parameters_from_args,
)
from freemodels.errors import ConfigError


def test_the_flow_signature_and_its_prefect_schema_come_from_the_record() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.discovery import discovery

    names = [f.name for f in fields(RunParameters)]
    assert list(inspect.signature(discovery.fn).parameters) == names
    schema = parameter_schema(discovery.fn).model_dump()
    assert list(schema["properties"]) == names
    assert schema["properties"]["budget"]["description"].startswith("most requests this run may send")
    assert schema["properties"]["source"]["default"] == "auto"


def test_every_option_of_discovery_run_is_a_field_and_parses_back() -> None:
    parser = argparse.ArgumentParser()
    add_run_options(parser)
    args = parser.parse_args(
        ["--source", "sandbox", "--budget", "5", "--rpm", "7", "--resume", "--commit-docs", "--seed", "0"]
    )
    params = parameters_from_args(args)
    assert params == RunParameters(
        source="sandbox", budget=5, requests_per_minute=7, resume="latest", commit_docs=True, seed=0
    )
    assert parameters_from_args(parser.parse_args(["--resume", "20261101T000000Z-abcdef"])).resume == (
        "20261101T000000Z-abcdef"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--budget", "-1"])


def test_deployment_defaults_and_serve_arguments_come_from_the_record() -> None:
    assert deployment_parameters() == {
        "source": "auto",
        "budget": None,
        "suite": "standard",
        "commit_docs": False,
        "drill": False,
    }
    with pytest.raises(ConfigError, match="not a deployment default: base_url"):
        deployment_parameters(base_url="http://x")
    assert deployment_args({"budget": 3, "commit_docs": True}) == [
        "--source", "auto", "--budget", "3", "--suite", "standard", "--commit-docs", "--liveness", "0",
    ]  # fmt: skip
    assert "--drill" in deployment_args({"drill": True})
    assert "--drill" not in deployment_args({"budget": 3})
    parser = argparse.ArgumentParser()
    add_deployment_options(parser)
    assert set(vars(parser.parse_args([]))) == {
        "source",
        "budget",
        "suite",
        "commit_docs",
        "liveness",
        "drill",
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"budget": -1}, "parameter budget: expected a number of at least 0, got -1"),
        ({"budget": "5"}, "parameter budget: expected a whole number, got '5'"),
        ({"requests_per_minute": 0}, "parameter requests_per_minute: expected a number of at least 1, got 0"),
        ({"suite": "quick"}, "parameter suite: 'quick' is not one of standard"),
        ({"source": "elsewhere"}, "parameter source: 'elsewhere' is not one of auto, openrouter, sandbox"),
        ({"commit_docs": "yes"}, "parameter commit_docs: expected true or false, got 'yes'"),
        ({"base_url": 5}, "parameter base_url: expected text, got 5"),
    ],
)
def test_a_bad_parameter_is_named_in_one_line(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RunParameters(**values).check()  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_a_resume_takes_over_the_stored_values_and_refuses_contradictions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stored = RunParameters(source="openrouter", max_models=3, seed=None).stored()
    assert "budget" not in stored and stored["source"] == "openrouter"
    resumed = RunParameters(resume="latest", budget=9).resumed_from(stored, run_id="r")
    assert (resumed.source, resumed.max_models, resumed.budget) == ("openrouter", 3, 9)
    with pytest.raises(ConfigError, match="run r was started with source='openrouter'; --source 'sandbox'"):
        RunParameters(resume="latest", source="sandbox").resumed_from(stored, run_id="r")
    with pytest.raises(ConfigError, match="--max-models 5 does not match"):
        RunParameters(resume="latest", max_models=5).resumed_from(stored, run_id="r")
    scenario = tmp_path / "s.toml"
    scenario.write_text("")
    kept = RunParameters(scenario=str(scenario)).stored()
    assert kept["scenario"] == str(scenario.resolve())
    assert (
        RunParameters(resume="r", scenario=str(scenario)).resumed_from(kept, run_id="r").scenario
        == kept["scenario"]
    )

"""The exports as a user takes them, against the sandbox on loopback.

One real discovery on a small sandbox (every model working, so every chain is as long as a chain gets)
writes ``docs/rotation.json`` and ``docs/litellm-router.yaml``. Then:

- each purpose of ``rotation.json``, merged into a chat request body, is answered (200) by the sandbox,
  which refuses a ``models`` array of more than three ids with OpenRouter's 400; when the primary fails,
  the next model of the array answers;
- a ``models`` array cut from the file's full chain: three ids are accepted, four and five refused;
- LiteLLM's ``Router`` loaded from the YAML, pointed at the sandbox (``api_base``, a placeholder key),
  gets its answer from the sandbox, and falls back along the YAML's chain when the primary fails.
  Needs the optional ``litellm`` dependency group; skipped with that reason where it is absent.
  ``LITELLM_LOCAL_MODEL_COST_MAP`` is set in ``tests/conftest.py`` before anything imports LiteLLM.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from freemodels.sandbox.scenario import Scenario, load_scenario
from freemodels.sandbox.server import SandboxServer
from freemodels.suite import build_suite
from tasks.rank import DEFAULT_CHAIN_LENGTH, GENERAL
from tests.integration.sandbox_runs import FREE, only, run_plain, write_scenario

pytestmark = pytest.mark.integration

MODELS = FREE[:7]  # more working models than a chain holds, so every long chain is full
CAP_MESSAGE = "'models' array must have 3 items or fewer."
PLACEHOLDER_KEY = "sk-or-v1-placeholder-not-a-real-key"
TASK = build_suite(20261130)[0]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SCENARIO: dict[str, Any] = {
    "limits": {"requests_per_minute": 6000},
    "catalog": only(MODELS),
    "defaults": {
        "behavior": "ok",
        "fault": "none",
        "ttft_ms": 20,
        "reasoning_ms": 0,
        "total_ms": 60,
        "keepalive_ms": 0,
    },
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One discovery on the small sandbox; its exports and its scenario file."""
    tmp = tmp_path_factory.mktemp("exports")
    scenario = write_scenario(tmp / "scenario.json", SCENARIO)
    summary = run_plain(tmp / "data", tmp / "docs", source="sandbox", scenario=str(scenario))
    assert summary.status == "completed" and summary.working_models == len(MODELS)
    docs = tmp / "docs"
    return {
        "rotation": json.loads((docs / "rotation.json").read_text(encoding="utf-8")),
        "litellm_yaml": (docs / "litellm-router.yaml").read_text(encoding="utf-8"),
        "scenario": scenario,
    }


def _sandbox(exported: dict[str, Any], **models: dict[str, Any]) -> SandboxServer:
    """A sandbox serving the run's scenario (plus per-model changes)."""
    scenario: Scenario = load_scenario(exported["scenario"])
    if models:
        scenario = Scenario.from_mapping({**SCENARIO, "models": models})
    return SandboxServer(scenario)


def _client(server: SandboxServer) -> httpx.Client:
    headers = {"Authorization": f"Bearer {PLACEHOLDER_KEY}"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=10)


def test_the_run_exports_no_models_array_longer_than_three(exported: dict[str, Any]) -> None:
    rotation = exported["rotation"]
    assert rotation["source"] == "sandbox" and "warning" in rotation
    assert rotation["purposes"], "the run exported no purpose"
    assert len(rotation["chains"][GENERAL]) == DEFAULT_CHAIN_LENGTH  # the cap had something to cut
    for purpose, fields in rotation["purposes"].items():
        assert set(fields) == {"model", "models"}
        assert 1 <= len(fields["models"]) <= 3, purpose
        chain = rotation["chains"][purpose]
        assert fields["model"] == chain[0] and fields["models"] == chain[:3]
        assert [m["model"] for m in rotation["measurements"][purpose]] == chain


def test_a_run_caps_models_at_the_configured_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = write_scenario(tmp_path / "scenario.json", {**SCENARIO, "catalog": only(MODELS[:4])})
    monkeypatch.setenv("DISCOVERY_ROTATION_MODELS_LIMIT", "2")
    run_plain(tmp_path / "data", tmp_path / "docs", source="sandbox", scenario=str(scenario))
    rotation = json.loads((tmp_path / "docs" / "rotation.json").read_text(encoding="utf-8"))
    assert rotation["models_limit"] == 2
    assert len(rotation["chains"][GENERAL]) == 4
    assert {p: f["models"] for p, f in rotation["purposes"].items()} == {
        p: c[:2] for p, c in rotation["chains"].items()
    }


def test_every_purpose_merged_into_a_request_is_answered(exported: dict[str, Any]) -> None:
    rotation = exported["rotation"]
    served: Counter[str] = Counter()
    with _sandbox(exported) as server, _client(server) as client:
        for purpose, fields in rotation["purposes"].items():
            for stream in (False, True):
                body = {"messages": TASK.messages(), "stream": stream, **fields}
                response = client.post("/chat/completions", json=body)
                assert response.status_code == 200, (purpose, response.text)
                served[fields["models"][0]] += 1
                if not stream:
                    reply = response.json()
                    assert reply["model"] == fields["models"][0]
                    assert reply["choices"][0]["message"]["content"] == TASK.expected
        stats = server.stats()
    assert stats["per_model"] == dict(served)
    assert stats["chat_requests"] == 2 * len(rotation["purposes"])


@pytest.mark.parametrize("stream", [False, True])
def test_the_models_array_falls_back_when_the_primary_fails(exported: dict[str, Any], stream: bool) -> None:
    fields = exported["rotation"]["purposes"][GENERAL]
    primary, fallback = fields["models"][0], fields["models"][1]
    down = {"behavior": "provider_503", "ttft_ms": 5, "total_ms": 5}
    body = {"messages": TASK.messages(), "stream": stream, **fields}
    with _sandbox(exported, **{primary: down}) as server, _client(server) as client:
        response = client.post("/chat/completions", json=body)
        stats = server.stats()
    assert response.status_code == 200, response.text
    if stream:
        models = {json.loads(line[6:])["model"] for line in response.text.splitlines() if line[6:7] == "{"}
        assert models == {fallback}
    else:
        assert response.json()["model"] == fallback
        assert response.json()["choices"][0]["message"]["content"] == TASK.expected
    assert stats["per_model"] == {primary: 1, fallback: 1} and stats["fallbacks"] == 1
    assert stats["chat_requests"] == 1 and stats["day_count"] == 1


@pytest.mark.parametrize(("length", "status"), [(3, 200), (4, 400), (5, 400)])
def test_a_models_array_from_the_full_chain_is_refused_beyond_three(
    exported: dict[str, Any], length: int, status: int
) -> None:
    chain = exported["rotation"]["chains"][GENERAL]
    body = {"model": chain[0], "models": chain[:length], "messages": TASK.messages()}
    with _sandbox(exported) as server, _client(server) as client:
        response = client.post("/chat/completions", json=body)
        stats = server.stats()
    assert response.status_code == status, response.text
    if status == 400:
        reply = response.json()
        assert reply["error"] == {"message": CAP_MESSAGE, "code": 400}
        assert set(reply) == {"error", "user_id"}
        assert stats["chat_requests"] == 0
    else:
        assert response.json()["model"] == chain[0]
        assert stats["per_model"] == {chain[0]: 1}


# --------------------------------------------------------------------------------------------------
# LiteLLM


@pytest.fixture
def no_remote_hosts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse (and record) any name lookup of a host other than loopback: nothing may leave the machine."""
    attempts: list[str] = []
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            attempts.append(name)
            raise socket.gaierror(f"test: no network beyond loopback ({name})")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return attempts


def _router(exported: dict[str, Any], server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``litellm.Router`` built from the run's YAML, every deployment pointed at ``server``."""
    litellm = pytest.importorskip(
        "litellm", reason="litellm is not installed (optional dependency group `litellm`)"
    )
    config = yaml.safe_load(exported["litellm_yaml"])
    for entry in config["model_list"]:
        params = entry["litellm_params"]
        # The YAML targets OpenRouter (openrouter/<id>, key from the environment); a user points it
        # at another OpenRouter-compatible endpoint by giving each deployment an api_base.
        assert params["model"].startswith("openrouter/")
        assert params["api_key"] == "os.environ/OPENROUTER_API_KEY"
        params["api_base"] = server.base_url
    monkeypatch.setenv("OPENROUTER_API_KEY", PLACEHOLDER_KEY)
    return litellm.Router(model_list=config["model_list"], **config["router_settings"])


def test_litellm_router_from_the_yaml_gets_its_answer_from_the_sandbox(
    exported: dict[str, Any], monkeypatch: pytest.MonkeyPatch, no_remote_hosts: list[str]
) -> None:
    primary = exported["rotation"]["chains"][GENERAL][0]
    with _sandbox(exported) as server:
        router = _router(exported, server, monkeypatch)
        response = router.completion(model=GENERAL, messages=TASK.messages())
        stats = server.stats()
    assert response.choices[0].message.content == TASK.expected
    assert response.model.endswith(primary)
    # The request really reached the sandbox, for the purpose's primary, and nothing else did.
    assert stats["per_model"] == {primary: 1}
    assert no_remote_hosts == []


def test_litellm_router_falls_back_along_the_yaml_chain(
    exported: dict[str, Any], monkeypatch: pytest.MonkeyPatch, no_remote_hosts: list[str]
) -> None:
    chain = exported["rotation"]["chains"][GENERAL]
    down = {"behavior": "no_endpoints", "ttft_ms": 5, "total_ms": 5}
    with _sandbox(exported, **{chain[0]: down, chain[1]: down}) as server:
        router = _router(exported, server, monkeypatch)
        response = router.completion(model=GENERAL, messages=TASK.messages())  # the YAML's own settings
        stats = server.stats()
    assert response.choices[0].message.content == TASK.expected
    assert response.model.endswith(chain[2])
    # A 404 falls back at once: each failed model was asked once, then the next.
    assert stats["per_model"] == {chain[0]: 1, chain[1]: 1, chain[2]: 1}
    assert no_remote_hosts == []

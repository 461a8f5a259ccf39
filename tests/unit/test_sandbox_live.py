"""The sandbox as live traffic shows OpenRouter (in process, httpx.ASGITransport): the classifier on both
error shapes, answers in the reasoning channel, error chunks with empty choices, a provider's shared pool,
replayed sequences of recorded responses, and the routes the official SDK calls (/models/count,
/models/user, the endpoints listing, the current /key fields)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from freemodels.client import build_http_client, parse_key_info
from freemodels.failures import Failure
from freemodels.probe import probe_attempt
from freemodels.records import ProbeResult, ProbeSpec
from freemodels.sandbox.app import create_app
from freemodels.sandbox.scenario import Scenario
from freemodels.scheduler import RateLimiter, run_plan
from freemodels.settings import Settings
from freemodels.suite import build_suite
from tests.conftest import shared_fixtures
from tests.unit.test_sandbox_app import (
    AUTH,
    FAST,
    GEMMA,
    LLAMA,
    QWEN,
    chat,
    parse_sse,
    sandbox,
    staged,
)

pytestmark = pytest.mark.anyio

SUITE = build_suite(2024)
ARITHMETIC = SUITE[0]
KEY = "sk-or-v1-sandbox-live-shape-test-000000"
PAID_LLAMA = "meta-llama/llama-3.3-70b-instruct"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "probe_deadline_s": 5.0,
        "read_timeout_s": 5.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def probe_client(scenario: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Scenario.from_mapping(scenario))
    async with build_http_client(
        settings(), base_url="http://sandbox/api/v1", api_key=KEY, transport=httpx.ASGITransport(app=app)
    ) as client:
        yield client


async def probe(
    scenario: dict[str, Any], model: str = LLAMA, *, stream_keepalive: bool = False
) -> ProbeResult:
    async with probe_client(scenario) as client:
        outcome = await probe_attempt(
            client,
            run_id="r",
            spec=ProbeSpec(model_id=model, family=model, task=ARITHMETIC.name),
            task=ARITHMETIC,
            settings=settings(),
            attempt=1,
        )
    return outcome.result


# --------------------------------------------------------------------------------------------------
# the classifier on both shapes


EXPECTED = {
    "no_endpoints": Failure.NO_ENDPOINTS,
    "free_variant_ended": Failure.FREE_VARIANT_ENDED,
    "privacy": Failure.PRIVACY_EXCLUDED,
    "provider_restricted": Failure.PROVIDER_RESTRICTED,
    "app_restricted": Failure.APP_RESTRICTED,
    "capability": Failure.CAPABILITY_UNSUPPORTED,
    "upstream_429": Failure.RATE_LIMIT_UPSTREAM,
    "capacity_429": Failure.RATE_LIMIT_UPSTREAM,
    "provider_502": Failure.PROVIDER_ERROR,
    "provider_503": Failure.PROVIDER_ERROR,
    "timeout_408": Failure.TIMEOUT,
    "credits_402": Failure.CREDITS_REQUIRED,
    "moderation_403": Failure.MODERATION,
    "mid_stream_error": Failure.MID_STREAM_ERROR,
    "empty": Failure.EMPTY_REPLY,
    "wrong_answer": Failure.WRONG_ANSWER,
    "reasoning_exhausted": Failure.REASONING_EXHAUSTED,
}


@pytest.mark.parametrize("shape", ["live", "documented"])
@pytest.mark.parametrize("keepalive", [0, 1], ids=["before-stream", "in-band"])
@pytest.mark.parametrize(("behavior", "expected"), list(EXPECTED.items()))
async def test_every_staged_failure_is_classified_the_same_in_both_shapes(
    shape: str, keepalive: int, behavior: str, expected: Failure
) -> None:
    spec = {**FAST, "behavior": behavior, "keepalive_ms": keepalive, "ttft_ms": 6, "total_ms": 10}
    result = await probe({"error_shape": shape, "models": {QWEN: spec}}, QWEN)
    assert result.failure is expected, (result.http_status, result.message)


@pytest.mark.parametrize(
    ("spec", "expected", "suggestion"),
    [
        (
            {"behavior": "free_variant_ended", "wording": "period_ended"},
            Failure.FREE_VARIANT_ENDED,
            PAID_LLAMA,
        ),
        ({"behavior": "free_variant_ended", "error_status": 400}, Failure.FREE_VARIANT_ENDED, PAID_LLAMA),
        (
            {"behavior": "privacy", "wording": "guardrail_count", "error_status": 400},
            Failure.PRIVACY_EXCLUDED,
            None,
        ),
        ({"behavior": "privacy", "wording": "data_policy_publication"}, Failure.PRIVACY_EXCLUDED, None),
    ],
)
async def test_every_live_wording_is_classified_right(
    spec: dict[str, Any], expected: Failure, suggestion: str | None
) -> None:
    from freemodels.classify import suggested_model_in

    result = await probe(staged(LLAMA, **spec))
    assert result.failure is expected
    assert suggested_model_in(result.message or "") == suggestion


# --------------------------------------------------------------------------------------------------
# answers in the reasoning channel


async def test_reasoning_answer_streams_only_reasoning_and_passes_with_the_caveat() -> None:
    scenario = staged(QWEN, behavior="reasoning_answer", reasoning_ms=4, ttft_ms=8, total_ms=20)
    async with sandbox(scenario) as client:
        streamed = await chat(client, QWEN, stream=True)
        plain = (await chat(client, QWEN)).json()
    events = [obj for kind, obj in parse_sse(streamed.text) if kind == "data"]
    deltas = [c["delta"] for obj in events for c in obj["choices"]]
    assert not any(d.get("content") for d in deltas)
    assert "".join(d.get("reasoning") or "" for d in deltas).endswith(ARITHMETIC.expected)
    assert any(c.get("finish_reason") == "stop" for obj in events for c in obj["choices"])
    message = plain["choices"][0]["message"]
    assert message["content"] is None and message["reasoning"].endswith(ARITHMETIC.expected)
    assert plain["choices"][0]["finish_reason"] == "stop"

    result = await probe(scenario, QWEN)
    assert result.failure is None and result.passed
    assert result.answer_channel == "reasoning" and result.total_ms is not None
    assert result.ttft_content_ms is None


async def test_empty_reply_has_no_reasoning_either() -> None:
    async with sandbox(staged(QWEN, behavior="empty", reasoning_ms=4, ttft_ms=8)) as client:
        streamed = await chat(client, QWEN, stream=True)
    deltas = [c["delta"] for kind, obj in parse_sse(streamed.text) if kind == "data" for c in obj["choices"]]
    assert not any(d.get("reasoning") or d.get("content") for d in deltas)


# --------------------------------------------------------------------------------------------------
# error chunks with empty choices


@pytest.mark.parametrize("behavior", ["upstream_429", "mid_stream_error"])
async def test_an_error_chunk_can_carry_empty_choices(behavior: str) -> None:
    spec = {
        "behavior": behavior,
        "keepalive_ms": 1,
        "ttft_ms": 6,
        "total_ms": 12,
        "error_chunk": "empty_choices",
    }
    async with sandbox(staged(LLAMA, **spec)) as client:
        response = await chat(client, LLAMA, stream=True)
    assert response.status_code == 200
    chunks = [obj for kind, obj in parse_sse(response.text) if kind == "data" and "error" in obj]
    assert len(chunks) == 1 and chunks[0]["choices"] == []
    result = await probe(staged(LLAMA, **spec))
    expected = Failure.RATE_LIMIT_UPSTREAM if behavior == "upstream_429" else Failure.MID_STREAM_ERROR
    assert result.http_status == 200 and result.failure is expected


# --------------------------------------------------------------------------------------------------
# a provider's shared pool


async def test_a_shared_pool_refuses_concurrent_requests_then_clears() -> None:
    scenario = {
        "shared_pool": {"DigitalOcean": {"max_concurrent": 1, "clear_s": 0.3}},
        "models": {
            LLAMA: {"behavior": "ok", "ttft_ms": 60, "total_ms": 80, "provider": "DigitalOcean"},
            GEMMA: {**FAST, "behavior": "ok", "provider": "Chutes"},
        },
    }
    async with sandbox(scenario) as client:
        first, second, other = await asyncio.gather(
            chat(client, LLAMA), chat(client, LLAMA), chat(client, GEMMA)
        )
        refused_serial = await chat(client, LLAMA)  # still within the refused period
        await asyncio.sleep(0.35)
        cleared = await chat(client, LLAMA)
        stats = (await client.get("/_sandbox/stats")).json()
    assert sorted([first.status_code, second.status_code]) == [200, 429]
    assert other.status_code == 200  # another provider is not in the pool
    assert refused_serial.status_code == 429 and cleared.status_code == 200
    refused = second if second.status_code == 429 else first
    error = refused.json()["error"]
    assert error["message"] == "Provider returned error" and error["code"] == 429
    metadata = error["metadata"]
    assert metadata["limit_source"] == "upstream_provider_shared_pool"
    assert metadata["is_byok"] is False and metadata["provider_name"] == "DigitalOcean"
    assert metadata["remedy_hint"].startswith("Retry shortly")
    assert stats["rejected_429_shared_pool"] == 2
    assert stats["day_count"] == 5  # the refused requests count against the daily quota too


async def test_the_scheduler_gets_through_a_shared_pool_by_waiting_and_going_one_at_a_time() -> None:
    scenario = {
        "shared_pool": {"DigitalOcean": {"max_concurrent": 1, "clear_s": 0.3}},
        "models": {LLAMA: {"behavior": "ok", "ttft_ms": 30, "total_ms": 50, "provider": "DigitalOcean"}},
    }
    app = create_app(Scenario.from_mapping(scenario))
    cfg = settings(shared_pool_clear_s=0.3, max_attempts=3, max_concurrency=4)
    specs = [ProbeSpec(model_id=LLAMA, family="llama", task=t.name) for t in SUITE]
    async with build_http_client(
        cfg, base_url="http://sandbox/api/v1", api_key=KEY, transport=httpx.ASGITransport(app=app)
    ) as client:
        outcome = await run_plan(
            client, specs, {t.name: t for t in SUITE}, cfg, RateLimiter(60_000, None), run_id="r"
        )
        stats = (await client.get("_sandbox/stats")).json()
    finals = {r.task: r for r in sorted(outcome.results, key=lambda r: r.attempt)}
    assert all(r.failure is None for r in finals.values())
    refused = [r for r in outcome.results if r.failure is not None]
    assert refused and all(r.limit_source == "upstream_provider_shared_pool" for r in refused)
    assert stats["rejected_429_shared_pool"] == len(refused)
    assert stats["max_in_flight_per_provider"] == {"DigitalOcean": 1}


# --------------------------------------------------------------------------------------------------
# replayed sequences of recorded responses


def _recorded(name: str) -> str:
    return str(shared_fixtures() / "recorded" / name)


async def test_a_replayed_real_429_then_a_real_success_drives_the_retry_path() -> None:
    sequence = [
        _recorded("pydantic__pydantic-ai__test_openrouter_errors_raised@227e873c.0.json"),
        _recorded("simonw__llm-openrouter__test_prompt@473e5eaf.1.sse"),
    ]
    scenario = staged(LLAMA, behavior="ok", replay=sequence)
    app = create_app(Scenario.from_mapping(scenario))
    cfg = settings(max_attempts=3)
    spec = ProbeSpec(model_id=LLAMA, family="llama", task=ARITHMETIC.name)
    async with build_http_client(
        cfg, base_url="http://sandbox/api/v1", api_key=KEY, transport=httpx.ASGITransport(app=app)
    ) as client:
        outcome = await run_plan(
            client, [spec], {ARITHMETIC.name: ARITHMETIC}, cfg, RateLimiter(60_000, None), run_id="r"
        )
    attempts = sorted(outcome.results, key=lambda r: r.attempt)
    assert [(r.attempt, r.http_status) for r in attempts] == [(1, 429), (2, 200)]
    assert attempts[0].failure is Failure.RATE_LIMIT_UPSTREAM
    assert "rate-limited upstream" in (attempts[0].message or "")
    # The recorded success answers another prompt: it is read in full and graded as a wrong answer.
    assert attempts[1].failure is Failure.WRONG_ANSWER and attempts[1].reply_excerpt
    assert attempts[1].answer_channel == "content"


async def test_a_replayed_sequence_repeats_its_last_response(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    two = tmp_path / "two.json"
    one.write_text('{"id": "gen-1", "choices": []}')
    two.write_text('{"id": "gen-2", "choices": []}')
    async with sandbox(staged(LLAMA, replay=[str(one), str(two)])) as client:
        bodies = [(await chat(client, LLAMA)).json()["id"] for _ in range(3)]
    assert bodies == ["gen-1", "gen-2", "gen-2"]


# --------------------------------------------------------------------------------------------------
# the routes the official SDK calls


async def test_models_count_matches_the_listing() -> None:
    async with sandbox() as client:
        count = (await client.get("/models/count")).json()
        listed = (await client.get("/models")).json()["data"]
        everything = (await client.get("/models/count", params={"output_modalities": "all"})).json()
    assert count == {"data": {"count": len(listed)}}
    assert everything["data"]["count"] >= count["data"]["count"]


async def test_models_user_needs_a_key_and_leaves_out_what_the_account_excludes() -> None:
    scenario = {"models": {LLAMA: {"behavior": "privacy"}, GEMMA: {"behavior": "provider_restricted"}}}
    app = create_app(Scenario.from_mapping(scenario))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox/api/v1"
    ) as client:
        anonymous = await client.get("/models/user")
        user = (await client.get("/models/user", headers=AUTH)).json()["data"]
        public = (await client.get("/models")).json()["data"]
    assert anonymous.status_code == 401
    user_ids = {m["id"] for m in user}
    staged_out = {
        m
        for m, p in app.state.sandbox.profiles.items()
        if p.behavior.value in ("privacy", "provider_restricted")
    }
    assert {LLAMA, GEMMA} <= staged_out  # the two staged here, plus any the seed made private
    assert {m["id"] for m in public} - user_ids == staged_out
    assert QWEN in user_ids


async def test_endpoints_listing_has_the_recorded_shape_and_follows_the_staged_behaviour() -> None:
    recorded = json.loads(
        (
            shared_fixtures()
            / "endpoints"
            / "RooVetGit__Roo-Code__openrouter-model-endpoints@fa1e7b41.body.json"
        ).read_text()
    )
    scenario = {
        "models": {
            LLAMA: {"behavior": "ok"},
            GEMMA: {"behavior": "no_endpoints"},
            QWEN: {"behavior": "provider_502"},
        }
    }
    async with sandbox(scenario) as client:
        llama = await client.get(f"/models/{PAID_LLAMA}/endpoints")
        llama_free = await client.get(f"/models/{LLAMA}/endpoints")
        gemma = await client.get(f"/models/{GEMMA}/endpoints")
        qwen = (await client.get(f"/models/{QWEN.removesuffix(':free')}/endpoints")).json()["data"]
        unknown = await client.get("/models/acme/none/endpoints")
    body = llama.json()
    assert set(recorded["data"]) <= set(body["data"])
    assert set(recorded["data"]["architecture"]) <= set(body["data"]["architecture"])
    for endpoint in body["data"]["endpoints"]:
        assert set(recorded["data"]["endpoints"][0]) <= set(endpoint)
    assert body["data"]["id"] == PAID_LLAMA
    prices = {e["tag"]: e["pricing"]["prompt"] for e in body["data"]["endpoints"]}
    assert len(prices) == 2 and any(tag.endswith("/free") and price == "0" for tag, price in prices.items())
    assert len(llama_free.json()["data"]["endpoints"]) == 1
    assert gemma.status_code == 200 and gemma.json()["data"]["endpoints"] == []
    assert all(e["uptime_last_30m"] < 50 for e in qwen["endpoints"] if e["tag"].endswith("/free"))
    assert unknown.status_code == 404 and set(unknown.json()) == {"error", "user_id"}


async def test_key_has_the_current_schema_fields_and_stays_readable_by_the_client() -> None:
    async with sandbox() as client:
        body = (await client.get("/key")).content
    data = json.loads(body)["data"]
    assert data["allowed_data_regions"] == ["global"] and data["budgets"] == []
    assert (
        data["effective_budget"] is None and data["organization_id"] is None and data["workspace_id"] is None
    )
    info = parse_key_info(body)
    assert info is not None and info.daily_limit == 1000 and info.daily_remaining == 1000

"""The sandbox app in-process (httpx.ASGITransport): wire format against real recordings, auth, errors,
limits, staged behaviours and replays. Timing and socket faults are tested on loopback (integration)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from freemodels.sandbox.app import create_app
from freemodels.sandbox.scenario import Scenario
from freemodels.suite import build_suite
from tests.conftest import shared_fixtures

pytestmark = pytest.mark.anyio

LLAMA = "meta-llama/llama-3.3-70b-instruct:free"
QWEN = "qwen/qwen3-14b:free"  # a reasoning model
GEMMA = "google/gemma-3-12b-it:free"  # no tools
AUTH = {"Authorization": "Bearer sk-or-v1-sandbox-test"}
FAST = {"ttft_ms": 4, "total_ms": 8}
ARITHMETIC = build_suite(2024)[0]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def sandbox(data: dict[str, Any] | None = None, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Scenario.from_mapping(data or {}), **kwargs)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://sandbox/api/v1", headers=AUTH, timeout=10
    ) as client:
        yield client


def staged(model: str, **spec: Any) -> dict[str, Any]:
    return {"models": {model: {**FAST, **spec}}}


async def chat(
    client: httpx.AsyncClient, model: str, *, stream: bool = False, **extra: Any
) -> httpx.Response:
    body = {"model": model, "messages": ARITHMETIC.messages(), "stream": stream, **extra}
    return await client.post("/chat/completions", json=body)


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """Events of an SSE body: ("comment", line), ("data", obj) or ("done", None)."""
    events: list[tuple[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        block = block.strip("\n")
        if not block:
            continue
        if block.startswith(":"):
            events.append(("comment", block))
        elif block == "data: [DONE]":
            events.append(("done", None))
        else:
            assert block.startswith("data: "), block
            events.append(("data", json.loads(block[len("data: ") :])))
    return events


def check_stream_invariants(events: list[tuple[str, Any]]) -> None:
    """What every successful OpenRouter stream in the recordings satisfies."""
    data = [obj for kind, obj in events if kind == "data"]
    assert data, "no data chunks"
    assert events[-1] == ("done", None)
    assert all(kind != "done" for kind, _ in events[:-1])
    ids = {obj["id"] for obj in data}
    assert len(ids) == 1 and next(iter(ids)).startswith("gen-")
    assert all(obj["object"] == "chat.completion.chunk" for obj in data)
    assert {"id", "object", "created", "model", "provider", "choices"} <= set(data[0])
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "usage" in data[-1]
    assert all("usage" not in obj for obj in data[:-1])
    finishes = [i for i, obj in enumerate(data) for c in obj["choices"] if c.get("finish_reason")]
    assert finishes, "no finish_reason"


def recorded_streams() -> list[tuple[str, list[tuple[str, Any]]]]:
    folder = shared_fixtures() / "recorded"
    index = json.loads((folder / "index.json").read_text())
    found = []
    for item in index:
        if item["kind"] == "sse" and item["status"] == 200 and "error" not in item["flags"]:
            found.append((item["file"], parse_sse((folder / item["file"]).read_text())))
    return found


# --------------------------------------------------------------------------------------------------
# wire format compared with the recordings


async def test_stream_has_the_recorded_shape() -> None:
    real = recorded_streams()
    assert len(real) >= 20
    for _, events in real:  # the invariants hold for the real traffic...
        check_stream_invariants(events)
    real_chunk_keys = set().union(*(set(o) for _, ev in real for k, o in ev if k == "data"))
    real_choice_keys = set().union(
        *(set(c) for _, ev in real for k, o in ev if k == "data" for c in o["choices"])
    )
    real_delta_keys = set().union(
        *(set(c["delta"]) for _, ev in real for k, o in ev if k == "data" for c in o["choices"])
    )
    real_usage_keys = [set(o["usage"]) for _, ev in real for k, o in ev if k == "data" and "usage" in o]
    for style in ("empty_choices", "with_choice", "with_finish"):
        scenario = staged(QWEN, behavior="ok", reasoning_ms=2, keepalive_ms=1, usage_chunk=style)
        async with sandbox(scenario) as client:
            response = await chat(client, QWEN, stream=True)
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-generation-id"].startswith("gen-")
        events = parse_sse(response.text)
        check_stream_invariants(events)  # ...and for the sandbox's
        assert events[0][0] == "comment" and events[0][1] == ": OPENROUTER PROCESSING"
        data = [obj for kind, obj in events if kind == "data"]
        assert data[0]["choices"][0]["delta"] == {
            "role": "assistant",
            "content": "",
            "reasoning": None,
            "reasoning_details": [],
        }
        assert response.headers["x-generation-id"] == data[0]["id"]
        for obj in data:
            assert set(obj) <= real_chunk_keys
            for choice in obj["choices"]:
                assert set(choice) <= real_choice_keys
                assert set(choice["delta"]) <= real_delta_keys
        usage_keys = set(data[-1]["usage"])
        assert usage_keys <= set().union(*real_usage_keys)
        assert any(usage_keys == keys for keys in real_usage_keys)  # one recorded form exactly
        if style == "empty_choices":
            assert data[-1]["choices"] == []
        elif style == "with_choice":
            assert data[-1]["choices"][0]["finish_reason"] is None
        else:
            assert data[-1]["choices"][0]["finish_reason"] == "stop"
            assert "service_tier" in data[-1]


async def test_reasoning_deltas_come_before_content() -> None:
    async with sandbox(staged(QWEN, behavior="ok", reasoning_ms=3, reasoning_tokens=30)) as client:
        response = await chat(client, QWEN, stream=True)
    data = [obj for kind, obj in parse_sse(response.text) if kind == "data"]
    kinds = []
    for obj in data:
        for choice in obj["choices"]:
            delta = choice["delta"]
            if delta.get("reasoning"):
                kinds.append("reasoning")
                assert delta["reasoning_details"][0]["type"] == "reasoning.text"
            elif delta.get("content"):
                kinds.append("content")
    assert kinds[0] == "reasoning" and "content" in kinds
    assert kinds.index("content") > max(i for i, k in enumerate(kinds) if k == "reasoning")
    content = "".join(c["delta"].get("content") or "" for o in data for c in o["choices"])
    assert ARITHMETIC.grade(content)
    usage = data[-1]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 30
    assert usage["completion_tokens"] > 30 and usage["cost"] == 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_include_reasoning_false_hides_the_reasoning_text() -> None:
    async with sandbox(staged(QWEN, behavior="ok", reasoning_ms=3)) as client:
        response = await chat(client, QWEN, stream=True, include_reasoning=False)
    data = [obj for kind, obj in parse_sse(response.text) if kind == "data"]
    assert not any(c["delta"].get("reasoning") for o in data for c in o["choices"])
    assert data[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


async def test_non_streaming_reply_has_the_recorded_shape() -> None:
    folder = shared_fixtures() / "recorded"
    index = json.loads((folder / "index.json").read_text())
    newest = max(
        (i for i in index if i["kind"] == "json" and i["status"] == 200 and "usage" in i["flags"]),
        key=lambda i: i["commit_date"],
    )
    real = json.loads((folder / newest["file"]).read_text())
    async with sandbox(staged(LLAMA, behavior="ok")) as client:
        response = await chat(client, LLAMA)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(real)
    assert body["id"].startswith("gen-") and body["object"] == "chat.completion"
    assert body["model"] == LLAMA and body["provider"]
    assert set(body["choices"][0]) == set(real["choices"][0])
    assert set(body["choices"][0]["message"]) <= set(real["choices"][0]["message"]) | {"reasoning_details"}
    assert set(body["usage"]) <= set(real["usage"]) | {"is_byok"}
    assert ARITHMETIC.grade(body["choices"][0]["message"]["content"])
    assert body["choices"][0]["finish_reason"] == "stop"
    assert response.headers["x-generation-id"] == body["id"]


async def test_suite_prompts_are_answered_correctly_and_other_prompts_get_filler() -> None:
    async with sandbox(staged(LLAMA, behavior="ok")) as client:
        for task in build_suite(77):
            body = {"model": LLAMA, "messages": task.messages()}
            reply = (await client.post("/chat/completions", json=body)).json()
            assert task.grade(reply["choices"][0]["message"]["content"]), task.name
        other = {"model": LLAMA, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
        reply = (await client.post("/chat/completions", json=other)).json()
        assert len(reply["choices"][0]["message"]["content"]) > 20


async def test_max_tokens_truncates_with_finish_reason_length() -> None:
    async with sandbox(staged(LLAMA, behavior="ok", answer="word " * 40)) as client:
        reply = (await chat(client, LLAMA, max_tokens=5)).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) == 20
    assert reply["usage"]["completion_tokens"] == 5


# --------------------------------------------------------------------------------------------------
# auth, ids, catalog and key


async def test_models_needs_no_key_but_chat_and_key_do() -> None:
    real_401 = json.loads(
        next(
            (shared_fixtures() / "recorded").glob("*raises_appropriate_auth_error@75b5cd5a.0.json")
        ).read_text()
    )
    async with sandbox() as client:
        models = await client.get("/models", headers={"Authorization": ""})
        assert models.status_code == 200 and len(models.json()["data"]) > 60
        for path, method in (("/key", "GET"), ("/chat/completions", "POST")):
            response = await client.request(method, path, headers={"Authorization": ""}, json={})
            assert response.status_code == 401
            assert response.json() == real_401  # {"error":{"message":"Missing Authentication header",...}}
        key = await client.get("/key")
        assert key.status_code == 200


async def test_a_pinned_key_refuses_others_with_user_not_found() -> None:
    async with sandbox({"limits": {"api_key": "sk-or-v1-right"}}) as client:
        wrong = await client.get("/key")
        assert wrong.status_code == 401
        assert wrong.json() == {"error": {"message": "User not found.", "code": 401}}
        right = await client.get("/key", headers={"Authorization": "Bearer sk-or-v1-right"})
        assert right.status_code == 200
        assert "sk-or-v1-right" not in right.text


async def test_unknown_model_is_not_a_valid_model_id() -> None:
    async with sandbox() as client:
        response = await chat(client, "acme/fake-1.0")
        stats = (await client.get("/_sandbox/stats")).json()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error == {"message": "acme/fake-1.0 is not a valid model ID", "code": 400}  # the live shape
    assert response.json()["user_id"].startswith("user_")
    assert stats["day_count"] == 0  # not counted against the free quota
    async with sandbox({"error_shape": "documented"}) as client:
        documented = (await chat(client, "acme/fake-1.0")).json()["error"]
    assert documented["availability"]["code"] == "model_not_found"
    assert documented["availability"]["retryable"] is False
    assert documented["metadata"]["error_type"] == "invalid_request"


async def test_bad_request_bodies() -> None:
    async with sandbox() as client:
        bad_json = await client.post(
            "/chat/completions", content=b"{", headers={"Content-Type": "application/json"}
        )
        no_messages = await client.post("/chat/completions", json={"model": LLAMA})
        no_model = await client.post("/chat/completions", json={"messages": ARITHMETIC.messages()})
    for response in (bad_json, no_messages, no_model):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == 400


# --------------------------------------------------------------------------------------------------
# the `models` fallback list

CAP_MESSAGE = "'models' array must have 3 items or fewer."


def _three_ok() -> dict[str, Any]:
    return {"models": {m: {**FAST, "behavior": "ok"} for m in (LLAMA, GEMMA, QWEN)}}


@pytest.mark.parametrize("length", [4, 5, 13])
async def test_a_models_array_longer_than_three_is_refused_as_openrouter_does(length: int) -> None:
    listed = [LLAMA, GEMMA, QWEN, "mistralai/mistral-small-3.2-24b-instruct:free", *[LLAMA] * 9]
    async with sandbox(_three_ok()) as client:
        response = await chat(client, LLAMA, models=listed[:length])
        for_stream = await chat(client, LLAMA, stream=True, models=listed[:length])
        without_model = await client.post(
            "/chat/completions", json={"models": listed[:length], "messages": ARITHMETIC.messages()}
        )
        stats = (await client.get("/_sandbox/stats")).json()
    for refused in (response, for_stream, without_model):
        assert refused.status_code == 400
        assert refused.headers["content-type"].startswith("application/json")
        # The live body: message and code only, plus the top-level user_id.
        body = refused.json()
        assert body["error"] == {"message": CAP_MESSAGE, "code": 400}
        assert set(body) == {"error", "user_id"} and body["user_id"].startswith("user_")
    # The whole request fails before any model is tried or any quota is spent.
    assert stats["chat_requests"] == 0 and stats["per_model"] == {} and stats["day_count"] == 0


@pytest.mark.parametrize("length", [1, 2, 3])
async def test_three_or_fewer_models_are_served_by_the_first(length: int) -> None:
    order = [GEMMA, LLAMA, QWEN][:length]
    async with sandbox(_three_ok()) as client:
        # `model` names another model: OpenRouter routes by the `models` list, and so does the sandbox.
        response = await chat(client, QWEN if length < 3 else LLAMA, models=order)
        streamed = await chat(client, LLAMA, stream=True, models=order)
        stats = (await client.get("/_sandbox/stats")).json()
    assert response.status_code == 200
    assert response.json()["model"] == GEMMA
    assert response.json()["choices"][0]["message"]["content"] == ARITHMETIC.expected
    assert streamed.status_code == 200
    chunks = [obj for kind, obj in parse_sse(streamed.text) if kind == "data"]
    assert {c["model"] for c in chunks} == {GEMMA}
    assert stats["per_model"] == {GEMMA: 2} and stats["chat_requests"] == 2


async def test_models_without_model_and_an_unlisted_id() -> None:
    async with sandbox(_three_ok()) as client:
        served = await client.post(
            "/chat/completions", json={"models": [LLAMA], "messages": ARITHMETIC.messages()}
        )
        unlisted_first = await chat(client, LLAMA, models=["acme/fake-1.0", LLAMA])
        unlisted_only = await chat(client, LLAMA, models=["acme/fake-1.0"])
    assert served.status_code == 200 and served.json()["model"] == LLAMA
    # An id OpenRouter does not know is an error like any other: the next model answers.
    assert unlisted_first.status_code == 200 and unlisted_first.json()["model"] == LLAMA
    assert unlisted_only.status_code == 400
    assert unlisted_only.json()["error"]["message"] == "acme/fake-1.0 is not a valid model ID"


# --------------------------------------------------------------------------------------------------
# the models fallback array


async def test_models_falls_back_on_an_error_and_names_the_model_that_served() -> None:
    scenario = {
        "models": {
            LLAMA: {"ttft_ms": 150, "total_ms": 150, "behavior": "upstream_429"},
            GEMMA: {**FAST, "behavior": "provider_503"},
            QWEN: {**FAST, "behavior": "ok"},
        }
    }
    async with sandbox(scenario) as client:
        started = time.monotonic()
        response = await chat(client, LLAMA, models=[LLAMA, GEMMA, QWEN])
        elapsed = time.monotonic() - started
        streamed = await chat(client, LLAMA, stream=True, models=[LLAMA, QWEN])
        stats = (await client.get("/_sandbox/stats")).json()
    assert response.status_code == 200
    assert response.json()["model"] == QWEN
    assert response.json()["choices"][0]["message"]["content"] == ARITHMETIC.expected
    # The answer waits for the failed models' errors first (150 ms, then 4 ms), as a real walk does.
    assert elapsed >= 0.15
    chunks = [obj for kind, obj in parse_sse(streamed.text) if kind == "data"]
    assert streamed.status_code == 200 and {c["model"] for c in chunks} == {QWEN}
    assert stats["per_model"] == {LLAMA: 2, GEMMA: 1, QWEN: 2}
    assert stats["fallbacks"] == 2 and stats["chat_requests"] == 2
    # One request to the account's limits each, however many models it tried.
    assert stats["day_count"] == 2


async def test_models_answers_with_the_last_error_when_every_model_fails() -> None:
    scenario = {
        "models": {
            LLAMA: {**FAST, "behavior": "upstream_429"},
            GEMMA: {**FAST, "behavior": "no_endpoints"},
        }
    }
    async with sandbox(scenario) as client:
        response = await chat(client, LLAMA, models=[LLAMA, GEMMA])
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"No endpoints found for {GEMMA}."


async def test_an_error_inside_a_200_answer_is_not_a_fallback() -> None:
    scenario = {
        "models": {
            LLAMA: {**FAST, "behavior": "mid_stream_error"},
            GEMMA: {**FAST, "behavior": "wrong_answer"},
            QWEN: {**FAST, "behavior": "ok"},
        }
    }
    async with sandbox(scenario) as client:
        broken = await chat(client, LLAMA, stream=True, models=[LLAMA, QWEN])
        wrong = await chat(client, GEMMA, models=[GEMMA, QWEN])
        stats = (await client.get("/_sandbox/stats")).json()
    assert broken.status_code == 200 and "Provider disconnected" in broken.text
    assert wrong.status_code == 200 and wrong.json()["model"] == GEMMA
    assert stats["fallbacks"] == 0 and QWEN not in stats["per_model"]


async def test_an_account_429_is_not_avoided_by_falling_back() -> None:
    scenario = {"limits": {"requests_per_minute": 1}, **_three_ok()}
    async with sandbox(scenario) as client:
        first = await chat(client, LLAMA, models=[LLAMA, GEMMA, QWEN])
        refused = await chat(client, LLAMA, models=[LLAMA, GEMMA, QWEN])
        paid = await chat(client, LLAMA, models=[LLAMA, "openai/gpt-4o-mini"])
        stats = (await client.get("/_sandbox/stats")).json()
    assert first.status_code == 200 and first.json()["model"] == LLAMA
    assert refused.status_code == 429
    assert refused.json()["error"]["message"] == "Rate limit exceeded: free-models-per-min."
    # The walk skips every free model (they share the account's limits); only a paid one is tried.
    assert paid.status_code == 402
    assert stats["per_model"] == {LLAMA: 3, GEMMA: 1, QWEN: 1, "openai/gpt-4o-mini": 1}
    assert stats["rejected_429_per_min"] == 2 and stats["day_count"] == 3


async def test_ok_first_then_the_behaviour() -> None:
    async with sandbox(staged(LLAMA, behavior="free_variant_ended", ok_first=2)) as client:
        statuses = [(await chat(client, LLAMA)).status_code for _ in range(4)]
    assert statuses == [200, 200, 404, 404]
    async with sandbox(staged(LLAMA, fault="storm_5xx", ok_first=1, fail_first=3)) as client:
        statuses = [(await chat(client, LLAMA)).status_code for _ in range(5)]
    assert statuses == [200, 502, 503, 200, 200]  # the storm's statuses go by request number


async def test_a_minute_already_spent_by_other_traffic_clears_when_staged() -> None:
    limits = {"requests_per_minute": 5, "requests_this_minute": 5, "minute_clears_in_s": 0.4}
    async with sandbox({"limits": limits, **staged(LLAMA, behavior="ok")}) as client:
        refused = await chat(client, LLAMA)
        clears_in_ms = int(refused.headers["x-ratelimit-reset"]) - time.time() * 1000
        await anyio.sleep(0.5)
        served = await chat(client, LLAMA)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"] == "Rate limit exceeded: free-models-per-min."
    assert 0 < clears_in_ms <= 400
    assert served.status_code == 200


@pytest.mark.parametrize(
    "models",
    [
        LLAMA,
        {"0": LLAMA},
        7,
        True,
        [],
        [LLAMA, 3],
        [LLAMA, None],
        [LLAMA, ""],
        [[LLAMA]],
        [{"id": LLAMA}],
    ],
    ids=[
        "string",
        "object",
        "number",
        "bool",
        "empty",
        "int-item",
        "null-item",
        "empty-id",
        "nested",
        "dict",
    ],
)
async def test_a_malformed_models_field_is_an_invalid_request(models: object) -> None:
    async with sandbox(_three_ok()) as client:
        response = await chat(client, LLAMA, models=models)
        stats = (await client.get("/_sandbox/stats")).json()
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and "models" in error["message"]
    assert error["message"] != CAP_MESSAGE
    assert stats["chat_requests"] == 0


async def test_models_null_falls_back_to_model() -> None:
    async with sandbox(_three_ok()) as client:
        response = await chat(client, LLAMA, models=None)
    assert response.status_code == 200 and response.json()["model"] == LLAMA


async def test_key_reports_the_daily_quota_as_it_is_spent() -> None:
    async with sandbox({"limits": {"requests_per_day": 50}, **staged(LLAMA, behavior="ok")}) as client:
        first = (await client.get("/key")).json()["data"]
        assert first["free_model_daily_requests"] == {"limit": 50, "remaining": 50, "used": 0}
        assert first["is_free_tier"] is True
        assert first["rate_limit"]["note"] == "This field is deprecated and safe to ignore."
        for expected_used in (1, 2):
            await chat(client, LLAMA)
            quota = (await client.get("/key")).json()["data"]["free_model_daily_requests"]
            assert quota == {"limit": 50, "remaining": 50 - expected_used, "used": expected_used}
        await chat(client, "openai/gpt-4o-mini")  # paid: not a free-model request
        quota = (await client.get("/key")).json()["data"]["free_model_daily_requests"]
        assert quota["used"] == 2


# --------------------------------------------------------------------------------------------------
# account limits


async def test_per_minute_limit_answers_the_real_429_shape() -> None:
    async with sandbox({"limits": {"requests_per_minute": 3}, **staged(LLAMA, behavior="ok")}) as client:
        statuses = [(await chat(client, LLAMA)).status_code for _ in range(3)]
        limited = await chat(client, LLAMA)
        stats = (await client.get("/_sandbox/stats")).json()
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    body = limited.json()
    assert body["error"]["message"] == "Rate limit exceeded: free-models-per-min."
    assert body["error"]["code"] == 429
    headers = body["error"]["metadata"]["headers"]
    assert headers["X-RateLimit-Limit"] == "3" and headers["X-RateLimit-Remaining"] == "0"
    reset_ms = int(headers["X-RateLimit-Reset"])
    assert limited.headers["x-ratelimit-reset"] == headers["X-RateLimit-Reset"]
    assert "retry-after" not in limited.headers
    assert 50_000 < reset_ms - time.time() * 1000 <= 60_500
    # The refused request counts too: "Failed attempts still count toward your daily quota".
    assert stats["rejected_429_account"] == 1 and stats["day_count"] == 4
    assert stats["max_requests_in_any_60s"] == 4


async def test_count_rejected_and_retry_after_are_stageable() -> None:
    for count_rejected, expected in ((True, 2), (False, 1)):
        limits = {"requests_per_minute": 1, "count_rejected": count_rejected, "retry_after_s": 7}
        async with sandbox({"limits": limits, **staged(LLAMA, behavior="ok")}) as client:
            await chat(client, LLAMA)
            limited = await chat(client, LLAMA)
            stats = (await client.get("/_sandbox/stats")).json()
        assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
        assert stats["day_count"] == expected


async def test_failed_attempts_count_toward_the_daily_quota_by_default() -> None:
    scenario = {
        "limits": {"requests_per_day": 3},
        "models": {LLAMA: {**FAST, "behavior": "upstream_429"}, GEMMA: {**FAST, "behavior": "provider_502"}},
    }
    async with sandbox(scenario) as client:
        statuses = [(await chat(client, model)).status_code for model in (LLAMA, GEMMA, LLAMA, GEMMA)]
        quota = (await client.get("/key")).json()["data"]["free_model_daily_requests"]
    assert statuses == [429, 502, 429, 429]  # the 4th is the account's own per-day 429
    assert quota == {"limit": 3, "remaining": 0, "used": 4}


async def test_daily_quota_runs_out_and_resets_at_utc_midnight() -> None:
    midnight = 1_800_057_600  # 2027-01-15T00:00:00Z
    assert midnight % 86_400 == 0
    now = [midnight - 30.0]
    limits = {"requests_per_day": 2, "requests_used_today": 1}
    async with sandbox(
        {"limits": limits, **staged(LLAMA, behavior="ok")}, wall_clock=lambda: now[0]
    ) as client:
        assert (await chat(client, LLAMA)).status_code == 200
        limited = await chat(client, LLAMA)
        assert limited.status_code == 429
        error = limited.json()["error"]
        assert error["message"].startswith("Rate limit exceeded: free-models-per-day")
        assert error["metadata"]["headers"]["X-RateLimit-Reset"] == str(midnight * 1000)
        quota = (await client.get("/key")).json()["data"]["free_model_daily_requests"]
        assert quota == {"limit": 2, "remaining": 0, "used": 3}  # the refused request counted too
        now[0] += 60  # the next UTC day
        assert (await chat(client, LLAMA)).status_code == 200
        quota = (await client.get("/key")).json()["data"]["free_model_daily_requests"]
        assert quota == {"limit": 2, "remaining": 1, "used": 1}


# --------------------------------------------------------------------------------------------------
# staged behaviours


ERROR_BEHAVIOURS = [
    ("no_endpoints", 404, "no_endpoints", f"No endpoints found for {LLAMA}."),
    ("free_variant_ended", 404, "free_variant_ended", "This model is unavailable for free."),
    ("privacy", 404, "privacy_restricted", "matching your guardrail restrictions and data policy"),
    ("provider_restricted", 404, "privacy_restricted", "No allowed providers are available"),
    ("app_restricted", 403, None, "is only available on agentic harnesses"),
    ("capability", 404, "constraint_filtered", "No endpoints found"),
    ("upstream_429", 429, None, "Provider returned error"),
    ("capacity_429", 429, "capacity_exhausted", "at capacity"),
    ("provider_502", 502, None, "Provider returned error"),
    ("provider_503", 503, "temporarily_unavailable", "No instances available"),
    ("timeout_408", 408, None, "Timed out"),
    ("credits_402", 402, None, "Insufficient credits"),
    ("moderation_403", 403, None, "requires moderation"),
]
LIVE_METADATA = {  # the only error behaviours whose live bodies carry metadata, and its keys
    "upstream_429": {"raw", "provider_name"},
    "provider_502": {"raw", "provider_name"},
    "provider_restricted": {"available_providers", "requested_providers"},
    "moderation_403": {"reasons", "flagged_input", "provider_name", "model_slug"},
}


@pytest.mark.parametrize(("behavior", "status", "availability", "needle"), ERROR_BEHAVIOURS)
async def test_error_behaviours_have_the_live_shape(
    behavior: str, status: int, availability: str | None, needle: str
) -> None:
    async with sandbox(staged(LLAMA, behavior=behavior, retry_after_s=3)) as client:
        for stream in (False, True):
            response = await chat(client, LLAMA, stream=stream)
            assert response.status_code == status
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            error = body["error"]
            assert set(body) == {"error", "user_id"}
            assert error["code"] == status and needle in error["message"]
            assert set(error) <= {"message", "code", "metadata"} and "availability" not in error
            assert set(error.get("metadata", {})) == LIVE_METADATA.get(behavior, set())
            if status in (429, 503):
                assert response.headers["retry-after"] == "3"
    if behavior == "upstream_429":
        assert "rate-limited upstream" in error["metadata"]["raw"]
        assert error["metadata"]["provider_name"]
    if behavior == "free_variant_ended":
        assert error["message"].endswith("use this slug instead: meta-llama/llama-3.3-70b-instruct")


@pytest.mark.parametrize(("behavior", "status", "availability", "needle"), ERROR_BEHAVIOURS)
async def test_error_behaviours_in_the_documented_shape(
    behavior: str, status: int, availability: str | None, needle: str
) -> None:
    scenario = {"error_shape": "documented", **staged(LLAMA, behavior=behavior, retry_after_s=3)}
    async with sandbox(scenario) as client:
        response = await chat(client, LLAMA)
    error = response.json()["error"]
    assert response.status_code == status and needle in error["message"]
    assert (error.get("availability") or {}).get("code") == availability
    assert error["metadata"]["error_type"]
    if behavior == "free_variant_ended":
        assert error["availability"]["fallback_models"] == ["meta-llama/llama-3.3-70b-instruct"]
    if behavior == "provider_restricted":
        assert error["availability"]["excluded_by"] == ["allowed_providers"]


@pytest.mark.parametrize(
    ("behavior", "wording", "error_status", "status", "message"),
    [
        (
            "free_variant_ended",
            "period_ended",
            None,
            404,
            "The free llama-3.3-70b-instruct period has ended. To continue using this model, please "
            "migrate to the paid slug: meta-llama/llama-3.3-70b-instruct",
        ),
        (
            "free_variant_ended",
            None,
            400,
            400,
            "This model is unavailable for free. The paid version is available now - use this slug "
            "instead: meta-llama/llama-3.3-70b-instruct",
        ),
        (
            "privacy",
            "guardrail_count",
            400,
            400,
            "0 endpoints out of 1 requested are available matching your guardrail restrictions and data "
            "policy. Free model training violation (guardrail): 1 endpoint excluded",
        ),
        (
            "privacy",
            "data_policy_training",
            None,
            404,
            "No endpoints found matching your data policy (Free model training)",
        ),
    ],
)
async def test_live_wordings_and_statuses_are_stageable(
    behavior: str, wording: str | None, error_status: int | None, status: int, message: str
) -> None:
    spec: dict[str, Any] = {"behavior": behavior}
    if wording:
        spec["wording"] = wording
    if error_status:
        spec["error_status"] = error_status
    async with sandbox(staged(LLAMA, **spec)) as client:
        response = await chat(client, LLAMA)
    assert response.status_code == status
    assert response.json()["error"] == {"message": message, "code": status}


async def test_empty_reply_and_wrong_answer() -> None:
    scenario = {"models": {LLAMA: {**FAST, "behavior": "empty"}, GEMMA: {**FAST, "behavior": "wrong_answer"}}}
    async with sandbox(scenario) as client:
        empty = (await chat(client, LLAMA)).json()
        wrong = (await chat(client, GEMMA)).json()
    assert empty["choices"][0]["message"]["content"] == ""
    assert empty["choices"][0]["finish_reason"] == "stop"
    assert empty["usage"]["completion_tokens"] == 0
    answer = wrong["choices"][0]["message"]["content"]
    assert answer.strip() and not ARITHMETIC.grade(answer)
    assert answer.isdigit()  # plausible: a number, just the wrong one


async def test_reasoning_exhausted_spends_max_tokens_on_thinking() -> None:
    async with sandbox(staged(QWEN, behavior="reasoning_exhausted", reasoning_ms=2)) as client:
        plain = (await chat(client, QWEN, max_tokens=64)).json()
        streamed = await chat(client, QWEN, stream=True, max_tokens=64)
    choice = plain["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "" and choice["message"]["reasoning"]
    assert plain["usage"]["completion_tokens_details"]["reasoning_tokens"] == 64
    data = [obj for kind, obj in parse_sse(streamed.text) if kind == "data"]
    assert not any(c["delta"].get("content") for o in data for c in o["choices"])
    assert any(c["delta"].get("reasoning") for o in data for c in o["choices"])
    assert any(c.get("finish_reason") == "length" for o in data for c in o["choices"])


async def test_mid_stream_error_keeps_status_200() -> None:
    async with sandbox(staged(LLAMA, behavior="mid_stream_error")) as client:
        streamed = await chat(client, LLAMA, stream=True)
        plain = await chat(client, LLAMA)
    assert streamed.status_code == 200
    events = parse_sse(streamed.text)
    assert events[-1] == ("done", None)
    last = events[-2][1]
    assert last["error"]["code"] == 502 and last["choices"][0]["finish_reason"] == "error"
    assert any(c["delta"].get("content") for kind, o in events[:-2] if kind == "data" for c in o["choices"])
    assert plain.status_code == 200
    choice = plain.json()["choices"][0]
    assert choice["finish_reason"] == "error" and choice["error"]["code"] == 502


async def test_an_error_after_a_keepalive_arrives_in_band() -> None:
    spec = {"behavior": "upstream_429", "ttft_ms": 30, "total_ms": 30, "keepalive_ms": 10}
    async with sandbox({"models": {LLAMA: spec}}) as client:
        streamed = await chat(client, LLAMA, stream=True)
        plain = await chat(client, LLAMA)
    assert streamed.status_code == 200
    events = parse_sse(streamed.text)
    assert events[0][0] == "comment"
    error_chunk = events[-2][1]
    assert error_chunk["error"]["code"] == 429
    assert error_chunk["choices"][0]["finish_reason"] == "error"
    assert plain.status_code == 200  # committed by the whitespace keep-alive, as recorded
    assert plain.content.startswith(b"\n")
    assert plain.json()["error"]["code"] == 429


async def test_fail_first_then_ok() -> None:
    async with sandbox(staged(LLAMA, behavior="provider_502", fail_first=2)) as client:
        statuses = [(await chat(client, LLAMA)).status_code for _ in range(4)]
    assert statuses == [502, 502, 200, 200]


async def test_tools_on_a_model_without_tools_is_a_capability_error() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    async with sandbox(staged(GEMMA, behavior="ok")) as client:
        response = await chat(client, GEMMA, tools=tools)
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("No endpoints found that support tool use")


async def test_paid_models_need_credits_and_ended_free_variants_say_so() -> None:
    async with sandbox({"catalog": {"paid": [GEMMA]}}) as client:
        paid = await chat(client, "openai/gpt-4o-mini")
        ended = await chat(client, GEMMA)
        listed = {m["id"] for m in (await client.get("/models")).json()["data"]}
    assert paid.status_code == 402
    assert ended.status_code == 404
    assert ended.json()["error"]["message"].endswith("use this slug instead: google/gemma-3-12b-it")
    assert GEMMA not in listed and "google/gemma-3-12b-it" in listed


async def test_free_router_answers_with_a_working_free_model() -> None:
    async with sandbox({"defaults": FAST}) as client:
        reply = (await chat(client, "openrouter/free")).json()
    assert reply["model"].endswith(":free") or reply["model"] == "openrouter/owl-alpha"
    assert reply["model"] != "openrouter/free"
    assert ARITHMETIC.grade(reply["choices"][0]["message"]["content"])


async def test_storms_and_body_faults_in_process() -> None:
    scenario = {
        "models": {
            LLAMA: {**FAST, "fault": "storm_5xx"},
            GEMMA: {**FAST, "fault": "storm_429", "retry_after_s": 5},
            QWEN: {**FAST, "fault": "truncated_json"},
            "google/gemma-3-4b-it:free": {**FAST, "fault": "invalid_utf8"},
            "google/gemma-3-27b-it:free": {**FAST, "fault": "huge_body", "huge_body_bytes": 300_000},
        }
    }
    async with sandbox(scenario) as client:
        storm = [(await chat(client, LLAMA)).status_code for _ in range(5)]
        storm_429 = await chat(client, GEMMA)
        truncated = await chat(client, QWEN)
        truncated_stream = await chat(client, QWEN, stream=True)
        invalid = await chat(client, "google/gemma-3-4b-it:free")
        invalid_stream = await chat(client, "google/gemma-3-4b-it:free", stream=True)
        huge = await chat(client, "google/gemma-3-27b-it:free", stream=True)
    assert storm == [500, 502, 503, 504, 500]
    assert storm_429.status_code == 429
    assert not any(h in storm_429.headers for h in ("retry-after", "x-ratelimit-reset"))
    assert "headers" not in storm_429.json()["error"]["metadata"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated.content)
    assert b"[DONE]" not in truncated_stream.content
    with pytest.raises(ValueError):
        parse_sse(truncated_stream.text)
    for response in (invalid, invalid_stream):
        with pytest.raises(UnicodeDecodeError):
            response.content.decode("utf-8")
    assert len(huge.content) > 300_000
    assert parse_sse(huge.text)[-1] == ("done", None)


# --------------------------------------------------------------------------------------------------
# replay of recorded responses


def _recorded(pattern: str) -> Path:
    return next((shared_fixtures() / "recorded").glob(pattern))


async def test_replay_of_a_recorded_stream_is_verbatim() -> None:
    path = _recorded("pydantic__pydantic-ai__test_openrouter_stream_error@8d090f01.0.sse")
    async with sandbox(staged(LLAMA, replay=str(path))) as client:
        response = await chat(client, LLAMA, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.content == path.read_bytes()


async def test_replay_of_a_recorded_error_uses_its_meta_status() -> None:
    path = _recorded("pydantic__pydantic-ai__test_openrouter_errors_raised@111dda9b.0.json")
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    async with sandbox(staged(LLAMA, replay=str(path))) as client:
        response = await chat(client, LLAMA)
    assert response.status_code == meta["status"] == 404
    assert response.content == path.read_bytes()
    assert response.headers["permissions-policy"] == meta["response_headers"]["permissions-policy"][0]
    assert response.headers["content-length"] == str(len(path.read_bytes()))


async def test_replay_without_meta_is_a_200(tmp_path: Path) -> None:
    body = tmp_path / "reply.json"
    body.write_bytes(b'{"id":"gen-1-x","choices":[]}')
    async with sandbox(staged(LLAMA, replay=str(body))) as client:
        response = await chat(client, LLAMA)
    assert response.status_code == 200 and response.content == body.read_bytes()


async def test_stats_count_requests() -> None:
    async with sandbox(staged(LLAMA, behavior="ok")) as client:
        await client.get("/models")
        await chat(client, LLAMA)
        await chat(client, "acme/none")
        stats = (await client.get("/_sandbox/stats")).json()
        root_stats = (await client.get("http://sandbox/_sandbox/stats")).json()
    assert stats["requests_total"] == 4 and root_stats["requests_total"] == 5
    assert stats["chat_requests"] == 2
    assert stats["per_model"] == {LLAMA: 1, "acme/none": 1}
    assert stats["max_requests_in_any_60s"] == 1 and stats["day_count"] == 1

"""OpenRouter's official Python SDK (``openrouter``, generated from OpenRouter's published OpenAPI schema,
which it validates every response against) driven against the sandbox on loopback: every call it makes
for the catalog, the model count, the models the account may route, a model's endpoints, the key, and
chat completions plain and streamed parses, and the sandbox's errors come back as the SDK's typed errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from freemodels.sandbox.scenario import Scenario
from freemodels.sandbox.server import SandboxServer
from freemodels.suite import build_suite

openrouter = pytest.importorskip("openrouter", reason="the official SDK is in the dev dependency group")
errors = openrouter.errors

pytestmark = [
    pytest.mark.integration,
    # The SDK warns when it reads /key's rate_limit, which OpenRouter still sends (deprecated there).
    pytest.mark.filterwarnings("ignore:.*DEPRECATED.*:DeprecationWarning"),
]

KEY = "sk-or-v1-sdk-against-the-sandbox-000000"
LLAMA = "meta-llama/llama-3.3-70b-instruct:free"
QWEN = "qwen/qwen3-14b:free"  # a reasoning model
GEMMA = "google/gemma-3-12b-it:free"
DEEPSEEK = "deepseek/deepseek-r1-0528:free"
ARITHMETIC = build_suite(31)[0]
FAST = {"ttft_ms": 5, "total_ms": 15}


@pytest.fixture(params=["live", "documented"])
def server(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    scenario = Scenario.from_mapping(
        {
            "error_shape": request.param,
            "models": {
                LLAMA: {**FAST, "behavior": "ok"},
                QWEN: {**FAST, "behavior": "reasoning_answer", "reasoning_ms": 3},
                GEMMA: {**FAST, "behavior": "no_endpoints"},
                DEEPSEEK: {**FAST, "behavior": "upstream_429"},
            },
        }
    )
    with SandboxServer(scenario) as running:
        yield running


@pytest.fixture
def sdk(server: SandboxServer) -> Iterator[Any]:
    with openrouter.OpenRouter(api_key=KEY, server_url=server.base_url, retry_config=None) as client:
        yield client


def test_catalog_count_and_the_models_the_account_may_route(sdk: Any) -> None:
    listed = sdk.models.list().result.data
    assert len(listed) > 20
    assert sdk.models.count().data.count == len(listed)
    whole = sdk.models.list(offset=None, limit=None).result  # the unpaged form
    assert whole.total_count == len(whole.data) == len(listed) and whole.links.next is None
    user = sdk.models.list_for_user(security={"bearer": KEY}).result.data
    assert 0 < len(user) <= len(listed)
    assert GEMMA in {m.id for m in user}


def test_endpoints_follow_the_staged_behaviour(sdk: Any) -> None:
    llama = sdk.endpoints.list(author="meta-llama", slug="llama-3.3-70b-instruct").data
    assert llama.id == "meta-llama/llama-3.3-70b-instruct"
    assert {e.pricing.prompt for e in llama.endpoints} >= {"0"}
    assert all(e.uptime_last_30m is not None and e.latency_last_30m is not None for e in llama.endpoints)
    gemma = sdk.endpoints.list(author="google", slug="gemma-3-12b-it:free").data
    assert gemma.endpoints == []  # staged as no_endpoints
    with pytest.raises(errors.NotFoundResponseError) as info:
        sdk.endpoints.list(author="acme", slug="no-such-model")
    assert info.value.data.error.code == 404


def test_key_in_the_current_schema(sdk: Any) -> None:
    data = sdk.api_keys.get_current_key_metadata().data
    assert data.free_model_daily_requests.limit == 1000
    assert data.allowed_data_regions == ["global"] and data.budgets == []
    assert data.effective_budget is None and data.organization_id is None and data.workspace_id is None


def test_chat_plain_and_streamed(sdk: Any) -> None:
    messages = ARITHMETIC.messages()
    plain = sdk.chat.send(model=LLAMA, messages=messages)
    assert plain.choices[0].message.content == ARITHMETIC.expected
    with sdk.chat.send(model=LLAMA, messages=messages, stream=True) as stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ARITHMETIC.expected
    # An answer in the reasoning channel: content null, the answer in reasoning, finish_reason stop.
    reasoning = sdk.chat.send(model=QWEN, messages=messages).choices[0]
    assert reasoning.message.content is None and reasoning.finish_reason == "stop"
    assert (reasoning.message.reasoning or "").endswith(ARITHMETIC.expected)


@pytest.mark.parametrize(
    ("model", "error", "code"),
    [
        ("acme/no-such-model:free", "BadRequestResponseError", 400),
        (GEMMA, "NotFoundResponseError", 404),
        (DEEPSEEK, "TooManyRequestsResponseError", 429),
    ],
)
def test_errors_are_typed(sdk: Any, model: str, error: str, code: int) -> None:
    with pytest.raises(getattr(errors, error)) as info:
        sdk.chat.send(model=model, messages=ARITHMETIC.messages())
    assert info.value.data.error.code == code
    assert (info.value.data.user_id or "").startswith("user_")


def test_a_wrong_key_is_refused_with_the_typed_401() -> None:
    scenario = Scenario.from_mapping({"limits": {"api_key": KEY}})
    with (
        SandboxServer(scenario) as server,
        openrouter.OpenRouter(api_key=KEY, server_url=server.base_url, retry_config=None) as client,
        pytest.raises(errors.UnauthorizedResponseError) as info,
    ):
        client.models.list_for_user(security={"bearer": "sk-or-v1-not-this-account"})
    assert info.value.data.error.code == 401

"""The shared HTTP client: timeouts, limits, redirects, where the key goes; catalog and key calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from freemodels.client import KeyInfo, build_http_client, fetch_catalog_bytes, fetch_key_info, parse_key_info
from freemodels.errors import SourceError
from freemodels.settings import Settings

BASE = "https://openrouter.example/api/v1"
KEY = "sk-or-v1-feedfacefeedfacefeedfacefeedface"
Handler = Callable[[httpx.Request], httpx.Response]


def client_for(
    handler: Handler, *, api_key: str | None = KEY, settings: Settings | None = None
) -> httpx.AsyncClient:
    return build_http_client(
        settings or Settings(), base_url=BASE, api_key=api_key, transport=httpx.MockTransport(handler)
    )


def test_client_configuration() -> None:
    settings = Settings(
        connect_timeout_s=3, read_timeout_s=7, write_timeout_s=4, pool_timeout_s=5, max_concurrency=6
    )
    client = build_http_client(settings, base_url=BASE + "/", api_key=KEY)
    try:
        assert client.timeout == httpx.Timeout(connect=3, read=7, write=4, pool=5)
        assert client.follow_redirects is False
        assert str(client.base_url) == BASE + "/"
        assert client.headers["HTTP-Referer"] == settings.http_referer
        assert client.headers["X-Title"] == settings.app_title
        assert "authorization" not in client.headers  # added per request, for the base origin only
        assert KEY not in repr(client.auth)
        pool = client._transport._pool  # type: ignore[attr-defined]
        assert pool._max_connections >= settings.max_concurrency
    finally:
        asyncio.run(client.aclose())


def test_key_goes_only_to_the_base_origin() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[str(request.url)] = request.headers.get("authorization")
        return httpx.Response(200, json={})

    async def go() -> None:
        async with client_for(handler) as client:
            await client.get("models")
            await client.get("https://elsewhere.example/api/v1/models")
            await client.get("https://openrouter.example:8443/api/v1/models")
            await client.get("http://openrouter.example/api/v1/models")
            await client.get("https://OPENROUTER.example:443/api/v1/key")
            await client.get("https://elsewhere.example/x", headers={"Authorization": "Bearer leaked"})

    asyncio.run(go())
    assert seen == {
        BASE + "/models": f"Bearer {KEY}",
        "https://elsewhere.example/api/v1/models": None,
        "https://openrouter.example:8443/api/v1/models": None,
        "http://openrouter.example/api/v1/models": None,
        "https://openrouter.example/api/v1/key": f"Bearer {KEY}",
        "https://elsewhere.example/x": None,
    }


def test_without_a_key_no_authorization_is_sent() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, content=b"[]")

    async def go() -> bytes:
        async with client_for(handler, api_key=None) as client:
            return await fetch_catalog_bytes(client)

    assert asyncio.run(go()) == b"[]"
    assert seen == [None]


def test_redirects_are_not_followed() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(301, headers={"location": "https://elsewhere.example/models"})

    async def go() -> None:
        async with client_for(handler) as client:
            await fetch_catalog_bytes(client)

    with pytest.raises(SourceError, match="HTTP 301"):
        asyncio.run(go())
    assert calls == [BASE + "/models"]


CATALOG = json.dumps({"data": [{"id": "a/b:free"}]}).encode()


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (lambda r: httpx.Response(500, text=f"oops Bearer {KEY}"), "HTTP 500"),
        (lambda r: httpx.Response(200, content=b"x" * 5000), "more than 1000 bytes"),
    ],
)
def test_catalog_failures_raise_source_error(handler: Handler, error: str) -> None:
    async def go() -> None:
        async with client_for(handler) as client:
            await fetch_catalog_bytes(client, max_bytes=1000)

    with pytest.raises(SourceError, match=error) as caught:
        asyncio.run(go())
    assert KEY not in str(caught.value)


def test_catalog_transport_error_and_timeout() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async def go_refused() -> None:
        async with client_for(refuse) as client:
            await fetch_catalog_bytes(client)

    with pytest.raises(
        SourceError, match=r"cannot connect to openrouter\.example .*connection refused"
    ) as caught:
        asyncio.run(go_refused())
    assert not caught.value.transient

    def slow(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"{"
            await asyncio.sleep(5)
            yield b"}"

        return httpx.Response(200, content=body())

    async def go_slow() -> None:
        async with client_for(slow) as client:
            await fetch_catalog_bytes(client, timeout_s=0.1)

    with pytest.raises(SourceError, match=r"longer than 0\.1 s"):
        asyncio.run(go_slow())


def test_catalog_bytes_are_returned_verbatim() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, content=b"\xef\xbb\xbf" + CATALOG)

    async def go() -> bytes:
        async with client_for(handler) as client:
            return await fetch_catalog_bytes(client)

    assert asyncio.run(go()) == b"\xef\xbb\xbf" + CATALOG
    assert paths == ["/api/v1/models"]


KEY_BODY = {
    "data": {
        "label": "sk-or-v1-abc...def",
        "limit": None,
        "usage": 0.0,
        "is_free_tier": True,
        "free_model_daily_requests": {"limit": 50, "remaining": 37, "used": 13},
        "rate_limit": {"requests": 20, "interval": "10s"},
    }
}


def test_key_info_is_read() -> None:
    async def go() -> KeyInfo | None:
        async with client_for(lambda r: httpx.Response(200, json=KEY_BODY)) as client:
            return await fetch_key_info(client)

    info = asyncio.run(go())
    assert info is not None
    assert (info.daily_limit, info.daily_remaining, info.daily_used, info.is_free_tier) == (50, 37, 13, True)
    assert info.label is not None and "sk-or-v1-abc" not in info.label


@pytest.mark.parametrize(
    "handler",
    [
        lambda r: httpx.Response(404, json={"error": {"code": 404, "message": "Not Found"}}),
        lambda r: httpx.Response(401, json={"error": {"code": 401, "message": "No auth credentials found"}}),
        lambda r: httpx.Response(405, text="Method Not Allowed"),
        lambda r: httpx.Response(200, text="<html>llama.cpp</html>"),
        lambda r: httpx.Response(200, json=[1, 2, 3]),
        lambda r: httpx.Response(200, json={"object": "list", "data": []}),
    ],
)
def test_key_info_absent_is_none(handler: Handler) -> None:
    async def go() -> KeyInfo | None:
        async with client_for(handler) as client:
            return await fetch_key_info(client)

    assert asyncio.run(go()) is None


def test_key_info_unreachable_is_none() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async def go() -> KeyInfo | None:
        async with client_for(refuse) as client:
            return await fetch_key_info(client)

    assert asyncio.run(go()) is None


def test_parse_key_info_without_quota_fields() -> None:
    info = parse_key_info(json.dumps({"data": {"label": "x", "is_free_tier": False}}))
    assert info == KeyInfo(None, None, None, False, "x")
    odd = parse_key_info(
        json.dumps({"data": {"free_model_daily_requests": {"limit": "50", "remaining": -3, "used": 2.0}}})
    )
    assert odd is not None and (odd.daily_limit, odd.daily_remaining, odd.daily_used) == (None, 0, 2)


@pytest.mark.parametrize(
    ("error", "line", "transient"),
    [
        (
            httpx.ConnectError("[Errno -2] Name or service not known"),
            "cannot resolve openrouter.example (DNS): no network, or a wrong host name",
            False,
        ),
        (
            httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
            "cannot resolve openrouter.example (DNS)",
            False,
        ),
        (
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "TLS failed with openrouter.example",
            False,
        ),
        (
            httpx.ConnectError("[Errno 101] Network is unreachable"),
            "no network route to openrouter.example",
            False,
        ),
        (
            httpx.ConnectTimeout("timed out"),
            "openrouter.example did not answer in time (ConnectTimeout)",
            True,
        ),
        (httpx.RemoteProtocolError("illegal chunk"), "failed: RemoteProtocolError", True),
    ],
)
def test_a_catalog_request_without_an_answer_is_one_line_naming_the_host(
    error: httpx.HTTPError, line: str, transient: bool
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    async def go() -> None:
        async with client_for(fail) as client:
            await fetch_catalog_bytes(client)

    with pytest.raises(SourceError) as caught:
        asyncio.run(go())
    assert line in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.transient is transient


def test_a_5xx_catalog_answer_is_transient_and_a_4xx_is_not() -> None:
    for status, transient in ((502, True), (404, False)):

        async def go(status: int = status) -> None:
            async with client_for(
                lambda request, status=status: httpx.Response(status, text="nope")
            ) as client:
                await fetch_catalog_bytes(client)

        with pytest.raises(SourceError, match=f"answered HTTP {status}") as caught:
            asyncio.run(go())
        assert caught.value.transient is transient


# /key as live accounts and the current schema show it: the older shape (no quota block, deprecated
# rate_limit) and the newer one (the quota block plus allowed_data_regions, budgets, effective_budget,
# organization_id, workspace_id). Values from live reports: is_free_tier false once credit was bought,
# free_model_daily_requests {used 0, limit 1000, remaining 1000}, the key's own cap (limit 100,
# limit_remaining 0, include_byok_in_limit true, byok_usage_monthly 44.0326365).
KEY_2025 = {
    "data": {
        "label": "sk-or-v1-abc...xyz",
        "usage": 0.5,
        "limit": None,
        "is_free_tier": True,
        "rate_limit": {"requests": 50, "interval": "10s"},
    }
}
KEY_2026 = {
    "data": {
        "label": "sk-or-v1-abc...xyz",
        "limit": 100,
        "limit_remaining": 0,
        "limit_reset": "monthly",
        "include_byok_in_limit": True,
        "usage": 100.0,
        "usage_daily": 0,
        "usage_weekly": 3.2,
        "usage_monthly": 100.0,
        "byok_usage": 44.0326365,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 1.0,
        "byok_usage_monthly": 44.0326365,
        "is_free_tier": False,
        "is_management_key": False,
        "is_provisioning_key": False,
        "creator_user_id": None,
        "expires_at": None,
        "rate_limit": {
            "requests": -1,
            "interval": "10s",
            "note": "This field is deprecated and safe to ignore.",
        },
        "free_model_daily_requests": {"used": 0, "limit": 1000, "remaining": 1000},
        "allowed_data_regions": ["global"],
        "budgets": [
            {
                "budget_id": None,
                "guardrail_id": None,
                "include_byok": True,
                "limit_usd": 100.0,
                "remaining_usd": 0.0,
                "reset_interval": "monthly",
                "resets_at": "2026-12-01T00:00:00Z",
                "scope": "key_limit",
                "spend_usd": 100.0,
            }
        ],
        "effective_budget": None,
        "organization_id": "org_123",
        "workspace_id": None,
    }
}


def test_parse_key_info_reads_the_older_and_the_newer_shape() -> None:
    older = parse_key_info(json.dumps(KEY_2025))
    assert older is not None and older.daily_limit is None and older.is_free_tier is True
    newer = parse_key_info(json.dumps(KEY_2026))
    assert newer is not None
    assert (newer.daily_limit, newer.daily_remaining, newer.daily_used, newer.is_free_tier) == (
        1000,
        1000,
        0,
        False,
    )
    assert newer.label is not None and "sk-or-v1-abc" not in newer.label


def test_the_catalog_step_retries_only_what_may_pass_by_itself() -> None:
    from prefect.states import Failed

    from tasks.fetch_catalog import retry_if_transient

    def retried(error: BaseException) -> bool:
        return retry_if_transient(None, None, Failed(data=error, message=str(error)))

    assert retried(SourceError("GET x answered HTTP 502: bad gateway", transient=True))
    assert not retried(SourceError("cannot connect to x: connection refused or no network"))
    assert not retried(ValueError("a bug"))

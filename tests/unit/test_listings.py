"""Free signals (freemodels.listings, tasks.free_signals): endpoints listings and models/user, parsed
from recorded bodies, hostile ones and the sandbox; read politely; the endpoints table and the models
they settle."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freemodels.client import build_http_client
from freemodels.failures import Failure
from freemodels.listings import (
    NO_ENDPOINTS_EVIDENCE,
    Listing,
    ListingStatus,
    endpoints_frame,
    fetch_listing,
    fetch_listings,
    fetch_user_models,
    listed_providers,
    listing_path,
    parse_listing,
    parse_user_models,
    reported,
    routable_ids,
    settlements,
)
from freemodels.records import ENDPOINTS_SCHEMA
from freemodels.sandbox.app import create_app
from freemodels.sandbox.bodies import ROUTING_EXCLUSIONS
from freemodels.sandbox.scenario import Behavior, Scenario
from freemodels.settings import Settings
from tasks.free_signals import read_free_signals
from tests.conftest import shared_fixtures

BASE = "http://source.test/api/v1"
KEY = "sk-or-v1-listing-test-000000000000000000000000"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def recorded(name: str) -> bytes:
    return (shared_fixtures() / "endpoints" / name).read_bytes()


def endpoint(**fields: object) -> dict[str, object]:
    return {
        "name": "Chutes | acme/m:free",
        "provider_name": "Chutes",
        "tag": "chutes/free",
        "status": 0,
        "uptime_last_5m": 99.0,
        "uptime_last_30m": 98.5,
        "uptime_last_1d": 97.0,
        "latency_last_30m": {"p50": 0.8, "p75": 1.0, "p90": 1.5, "p99": 3.0},
        "throughput_last_30m": {"p50": 50, "p75": 40, "p90": 30, "p99": 10},
        "context_length": 32768,
        **fields,
    }


def body(*endpoints: object) -> bytes:
    return json.dumps({"data": {"id": "acme/m", "endpoints": list(endpoints)}}).encode()


# --------------------------------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize(
    "name",
    [
        "RooVetGit__Roo-Code__openrouter-model-endpoints@9ffdc787.body.json",
        "RooVetGit__Roo-Code__openrouter-model-endpoints@fa1e7b41.body.json",
    ],
)
def test_recorded_listings_parse(name: str) -> None:
    listing = parse_listing("google/gemini-2.5-pro-preview", recorded(name))
    assert listing.status is ListingStatus.ENDPOINTS
    assert [e.provider for e in listing.endpoints] == ["Google", "Google AI Studio"]
    assert all(e.status == 0 and e.context_length == 1048576 for e in listing.endpoints)
    assert all(e.latency_ms is None and e.uptime_30m is None for e in listing.endpoints)  # 2025 shape


def test_the_current_fields_are_read_and_latency_becomes_milliseconds() -> None:
    (e,) = parse_listing("acme/m:free", body(endpoint())).endpoints
    assert e.latency_ms == {"p50": 800.0, "p75": 1000.0, "p90": 1500.0, "p99": 3000.0}
    assert e.throughput == {"p50": 50.0, "p75": 40.0, "p90": 30.0, "p99": 10.0}
    assert (e.uptime_5m, e.uptime_30m, e.uptime_1d) == (99.0, 98.5, 97.0)


def test_an_empty_listing_and_unexpected_shapes() -> None:
    assert parse_listing("m", body()).status is ListingStatus.EMPTY
    for text in (b"", b"null", b"[]", b'{"data": {"endpoints": {}}}', b'{"data": []}', b"\xff\xfe"):
        assert parse_listing("m", text).status is ListingStatus.UNREADABLE, text
    assert parse_listing("m", body(1, "x", None)).status is ListingStatus.UNREADABLE
    assert parse_listing("m", "[" * 100_000).status is ListingStatus.UNREADABLE


def test_server_text_is_redacted_and_cut_and_odd_numbers_are_dropped() -> None:
    hostile = endpoint(
        provider_name="Evil " + KEY + " {run_id}" + "x" * 5000,
        status=True,
        uptime_last_30m=float("nan"),
        uptime_last_1d="99",
        latency_last_30m={"p50": float("inf"), "p75": -1, "p90": True, "p99": 2},
        context_length=2**70,
    )
    text = json.dumps({"data": {"endpoints": [hostile]}}, allow_nan=True)
    (e,) = parse_listing("m", text, KEY).endpoints
    assert e.provider is not None and KEY not in e.provider and len(e.provider) <= 200
    assert e.status is None and e.uptime_30m is None and e.uptime_1d is None
    assert e.latency_ms == {"p99": 2000.0} and e.context_length is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        k: JSON
        for k in (
            "provider_name",
            "name",
            "status",
            "uptime_last_30m",
            "latency_last_30m",
            "throughput_last_30m",
            "context_length",
        )
    },
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(JSON, st.lists(FIELDS, max_size=5).map(lambda es: {"data": {"endpoints": es}})))
def test_any_json_body_parses_without_raising(document: object) -> None:
    listing = parse_listing("acme/m", json.dumps(document, allow_nan=True))
    assert listing.status in set(ListingStatus)
    frame = endpoints_frame("r", [listing], routable=None, fetched_at=T0)
    assert frame.schema == pl.Schema(ENDPOINTS_SCHEMA) and frame.height >= 1


def test_user_models_ids() -> None:
    assert parse_user_models(b'{"data": [{"id": "a/b:free"}, {"id": 3}, "x", {"name": "y"}]}') == {"a/b:free"}
    assert parse_user_models(b'{"data": {}}') is None and parse_user_models(b"nope") is None
    assert routable_ids(frozenset({"other/x"}), ["a/b:free"]) is None  # another naming: no verdict
    assert routable_ids(frozenset({"a/b:free"}), ["a/b:free", "c/d"]) == {"a/b:free"}
    assert routable_ids(None, ["a/b"]) is None


@pytest.mark.parametrize(
    ("model_id", "path"),
    [
        ("meta-llama/llama-3.3-70b-instruct:free", "models/meta-llama/llama-3.3-70b-instruct:free/endpoints"),
        ("openrouter/owl-alpha", "models/openrouter/owl-alpha/endpoints"),
        ("a/../b", None),
        ("../etc/passwd", None),
        ("a/b/c", None),
        ("a/b?x=1", None),
        ("{run_id}/x", None),
        ("acme", None),
        ("a/b c", None),
    ],
)
def test_listing_path_only_for_plain_author_slug_ids(model_id: str, path: str | None) -> None:
    assert listing_path(model_id) == path


# --------------------------------------------------------------------------------------------------
# reading (MockTransport)


def client_for(handler: object, **settings: object) -> httpx.AsyncClient:
    return build_http_client(
        Settings(**settings),  # type: ignore[arg-type]
        base_url=BASE,
        api_key=KEY,
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


def test_fetch_listing_asks_the_model_path_and_is_quiet_about_failures() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        model = request.url.path.split("/models/")[1].removesuffix("/endpoints")
        if model == "acme/gone:free":
            return httpx.Response(404, json={"error": {"code": 404, "message": "No model found"}})
        if model == "acme/broken:free":
            return httpx.Response(502, text="bad gateway")
        if model == "acme/huge:free":
            return httpx.Response(200, content=b" " * 3_000_000)
        if model == "acme/reset:free":
            raise httpx.ReadError("reset")
        return httpx.Response(200, content=body(endpoint()))

    async def go() -> list[Listing]:
        async with client_for(handler) as client:
            return [
                await fetch_listing(client, m)
                for m in (
                    "acme/ok:free",
                    "acme/gone:free",
                    "acme/broken:free",
                    "acme/huge:free",
                    "acme/reset:free",
                )
            ]

    got = asyncio.run(go())
    assert [g.status for g in got] == [
        ListingStatus.ENDPOINTS,
        ListingStatus.NOT_FOUND,
        ListingStatus.UNREADABLE,
        ListingStatus.UNREADABLE,
        ListingStatus.UNREADABLE,
    ]
    assert seen[0] == "/api/v1/models/acme/ok:free/endpoints"
    assert got[1].http_status == 404 and got[2].http_status == 502


def test_listings_are_paced_by_their_own_limiter_with_few_in_flight() -> None:
    in_flight = {"now": 0, "max": 0}
    starts: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        starts.append(time.monotonic())
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        await asyncio.sleep(0.2)
        in_flight["now"] -= 1
        return httpx.Response(200, content=body(endpoint()))

    async def go() -> list[Listing]:
        async with client_for(handler) as client:
            return await fetch_listings(
                client, [f"acme/m{i}:free" for i in range(6)], requests_per_minute=600, concurrency=2
            )

    got = asyncio.run(go())
    assert [g.model_id for g in got] == [f"acme/m{i}:free" for i in range(6)]
    assert in_flight["max"] <= 2
    assert starts[-1] - starts[0] >= 5 * 0.1 * 0.9  # one start every 60/600 s


def test_fetch_user_models_needs_an_answer_of_the_expected_shape() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"data": [{"id": "a/b:free"}]}),
            httpx.Response(401, json={"error": {"code": 401, "message": "No auth credentials found"}}),
            httpx.Response(404, text="not here"),
            httpx.Response(200, text="<html>"),
        ]
    )

    async def go() -> list[frozenset[str] | None]:
        async with client_for(lambda request: next(answers)) as client:
            return [await fetch_user_models(client) for _ in range(4)]

    assert asyncio.run(go()) == [frozenset({"a/b:free"}), None, None, None]


# --------------------------------------------------------------------------------------------------
# the endpoints table and what it settles


def test_endpoints_frame_rows_and_settlements() -> None:
    listings = [
        Listing(
            "a/ok:free", ListingStatus.ENDPOINTS, parse_listing("x", body(endpoint(), endpoint())).endpoints
        ),
        Listing("a/empty:free", ListingStatus.EMPTY),
        Listing("a/private:free", ListingStatus.ENDPOINTS, parse_listing("x", body(endpoint())).endpoints),
        Listing("a/unknown:free", ListingStatus.NOT_FOUND, http_status=404),
        Listing("a/odd:free", ListingStatus.UNREADABLE),
    ]
    routable = frozenset({"a/ok:free", "a/unknown:free", "a/odd:free"})
    frame = endpoints_frame("r1", listings, routable=routable, fetched_at=T0)
    assert frame.schema == pl.Schema(ENDPOINTS_SCHEMA)
    assert frame.group_by("model_id").len().sort("model_id").rows() == [
        ("a/empty:free", 1),
        ("a/odd:free", 1),
        ("a/ok:free", 2),
        ("a/private:free", 1),
        ("a/unknown:free", 1),
    ]
    assert frame.filter(pl.col("model_id") == "a/empty:free").item(0, "provider") is None
    assert (
        frame.filter(pl.col("model_id") == "a/ok:free").get_column("latency_p50_ms").to_list() == [800.0] * 2
    )
    settled = settlements(frame)
    assert {m: s.failure for m, s in settled.items()} == {
        "a/empty:free": Failure.NO_ENDPOINTS,
        "a/private:free": Failure.PRIVACY_EXCLUDED,
    }
    assert settled["a/empty:free"].evidence == NO_ENDPOINTS_EVIDENCE
    assert listed_providers(frame) == {"a/ok:free": "Chutes", "a/private:free": "Chutes"}
    rep = reported(frame)["a/ok:free"]
    assert rep.latency_p50_ms == 800.0 and rep.uptime_30m == 98.5 and rep.providers == ("Chutes", "Chutes")
    assert settlements(pl.DataFrame(schema=ENDPOINTS_SCHEMA)) == {}


def test_without_listings_a_key_alone_still_settles_models_it_may_not_route() -> None:
    frame = endpoints_frame(
        "r", [], routable=frozenset({"a/x:free"}), fetched_at=T0, model_ids=["a/x:free", "a/y:free"]
    )
    assert {m: s.failure for m, s in settlements(frame).items()} == {"a/y:free": Failure.PRIVACY_EXCLUDED}


# --------------------------------------------------------------------------------------------------
# against the sandbox: the client and the staged behaviours agree


def sandbox_signals(
    scenario: dict[str, object], *, lists: bool = True, user: bool = True
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The free signals the client reads from a sandbox staged with ``scenario``, and its profiles."""
    app = create_app(Scenario.from_mapping(scenario))
    catalog = app.state.sandbox.catalog
    free_ids = [m for m in catalog.free_ids() if not catalog.models[m].router]
    free = pl.DataFrame({"model_id": free_ids})

    async def go() -> pl.DataFrame:
        async with build_http_client(
            Settings(), base_url="http://sandbox/api/v1", api_key=KEY, transport=httpx.ASGITransport(app=app)
        ) as client:
            return await read_free_signals(
                client,
                free,
                list(catalog.models),
                run_id="r",
                settings=Settings(listing_requests_per_minute=100_000),
                lists_endpoints=lists,
                reads_user_models=user,
            )

    return asyncio.run(go()), app.state.sandbox.profiles


def test_the_sandbox_listings_settle_exactly_the_models_staged_without_endpoints_or_excluded() -> None:
    staged = {
        "moonshotai/kimi-k2:free": "no_endpoints",
        "qwen/qwen3-14b:free": "provider_restricted",
        "google/gemma-3-4b-it:free": "privacy",
        "openai/gpt-oss-20b:free": "free_variant_ended",
        "z-ai/glm-4.5-air:free": "upstream_429",
        "qwen/qwen3-4b:free": "provider_502",
    }
    frame, profiles = sandbox_signals({"models": {m: {"behavior": b} for m, b in staged.items()}})
    settled = settlements(frame)
    expected = {
        m: (Failure.NO_ENDPOINTS if p.behavior is Behavior.NO_ENDPOINTS else Failure.PRIVACY_EXCLUDED)
        for m, p in profiles.items()
        if m in set(frame.get_column("model_id"))
        and (p.behavior is Behavior.NO_ENDPOINTS or p.behavior in ROUTING_EXCLUSIONS)
    }
    assert {m: s.failure for m, s in settled.items()} == expected
    assert {"moonshotai/kimi-k2:free", "qwen/qwen3-14b:free", "google/gemma-3-4b-it:free"} <= set(settled)
    # What a listing cannot show costs a chat request: an ended free variant still lists its endpoint.
    assert "openai/gpt-oss-20b:free" not in settled
    rep = reported(frame)
    assert (
        rep["z-ai/glm-4.5-air:free"].uptime_30m is not None and rep["z-ai/glm-4.5-air:free"].uptime_30m > 90
    )
    assert rep["qwen/qwen3-4b:free"].uptime_30m is not None and rep["qwen/qwen3-4b:free"].uptime_30m < 50
    thinker = profiles["openai/gpt-oss-120b:free"]  # a reasoning model: its first token is reasoning
    assert thinker.reasoning_ms > 0
    assert rep["openai/gpt-oss-120b:free"].latency_p50_ms == pytest.approx(
        thinker.ttft_ms - thinker.reasoning_ms
    )


def test_a_source_without_these_endpoints_is_not_asked() -> None:
    frame, _ = sandbox_signals({}, lists=False, user=False)
    assert frame.is_empty() and frame.schema == pl.Schema(ENDPOINTS_SCHEMA)
    only_user, _ = sandbox_signals({}, lists=False, user=True)
    assert set(only_user.get_column("listing").to_list()) == {None}
    assert only_user.get_column("routable").any()


def test_models_user_without_a_key_is_quietly_unknown() -> None:
    app = create_app(Scenario())

    async def go() -> frozenset[str] | None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sandbox/api/v1/"
        ) as client:
            return await fetch_user_models(client)

    assert asyncio.run(go()) is None


# --------------------------------------------------------------------------------------------------
# reported beside measured


def rep(latency: float | None = 800.0, uptime: float | None = 99.0) -> Any:
    from freemodels.listings import Reported

    return Reported(
        latency_p50_ms=latency, uptime_30m=uptime, uptime_1d=None, throughput_p50=None, providers=()
    )


@pytest.mark.parametrize(
    ("reported_", "ttft", "success", "cause", "expected"),
    [
        (rep(), 900.0, 1.0, None, []),  # close enough
        (rep(800.0), 2400.0, 1.0, None, ["TTFT 3.0× the reported"]),
        (rep(3000.0), 1000.0, 1.0, None, ["TTFT 3.0× faster than reported"]),
        (rep(100.0), 300.0, 1.0, None, []),  # 3× but only 0.2 s apart: noise
        (
            rep(uptime=99.6),
            None,
            0.0,
            "Rate limited upstream / no capacity",
            ["reported up (99.6 %), every probe failed: rate limited upstream / no capacity"],
        ),
        (rep(uptime=99.6), None, 0.0, None, []),  # failed for a cause uptime does not measure (wrong answer)
        (rep(uptime=35.0), 500.0, 1.0, None, ["reported down (35 %), answered here"]),
        (rep(None, None), 500.0, 1.0, None, []),
    ],
)
def test_disagreements(
    reported_: Any, ttft: float | None, success: float, cause: str | None, expected: list[str]
) -> None:
    from freemodels.listings import disagreements

    assert (
        disagreements(reported_, measured_ttft_ms=ttft, success_rate=success, transient_cause=cause)
        == expected
    )

"""The sandbox's ASGI app: OpenRouter's API as the recorded traffic shows it, with staged behaviour.

Endpoints (under ``/api/v1``): ``GET /models`` and ``GET /models/count`` (no key needed), ``GET
/models/user`` (bearer key: the models the account may route), ``GET /models/{author}/{slug}/endpoints``
(see :mod:`freemodels.sandbox.endpoints`), ``GET /key`` (also ``/auth/key``), ``POST /chat/completions``
with or without ``stream: true``. Every answer parses with OpenRouter's official SDK (its current
schema), error answers included. ``GET /_sandbox/stats`` is the sandbox's own
introspection for tests (not part of OpenRouter's API).

A chat request goes through the checks in OpenRouter's order: bearer key (401), body (400), model id
(400 "is not a valid model ID" unless listed, or a ``:free`` id whose free variant ended), the account's
free-model limits (429, see :mod:`freemodels.sandbox.limits`), then the model's profile decides the answer
(see :mod:`freemodels.sandbox.profiles` and the scenario keys in :mod:`freemodels.sandbox.scenario`).

The ``models`` fallback list: when a request carries ``models``, OpenRouter routes by that list and not by
``model``, so the sandbox does the same. A list of more than :data:`MODELS_LIMIT` ids fails the whole
request with OpenRouter's live 400 ``'models' array must have 3 items or fewer.`` (message and code only,
plus ``user_id``); a ``models`` value that is not a non-empty list of non-empty strings is a 400 invalid
request (in the sandbox's own wording: no live body for these was found). ``"models": null`` counts as
absent. A valid list is tried in order, each model through the same checks as ``model`` ("Model
Fallbacks": if a model errors, OpenRouter tries the next; any error can trigger it): a model whose answer
is an error status (an unknown id, a routing error, an upstream 429, a 5xx, a shared pool's refusal, a
recorded error) hands the request to the next one after the time its error took, and the answer comes
from the first model that does not fail that way, with the ``model`` that served it. When every model
fails, the last one's error is the answer. A failure inside a 200 answer (an error chunk after the
stream began, a wrong or empty reply) and a broken connection are the answer as they are: the status is
already sent. ``stats.per_model`` counts every model tried, ``stats.fallbacks`` the requests a later
model of the list answered.

The account's free-model limits see a request with ``models`` as one request, counted once when it
reaches its first free model. An account 429 there refuses the request for every free model of the list
(they all share the account's limits) and the walk goes on only to paid ones, so falling back never
avoids an account 429. OpenRouter documents neither point (its fallback page says rate limits trigger
fallback; whether its account 429 does is not reported from live traffic); the sandbox follows what the
limits are: the account's, not a model's.

Timing: every byte is scheduled at an absolute offset from the moment the request arrived (``loop.time()``
deadlines, never accumulated sleeps) and flushed at once. A stream sends nothing (not even headers) before
its first event; keep-alive comments go at ``keepalive_ms``, 2x, ... until the first data chunk; the role-only
delta and the first reasoning delta go at ``ttft_ms - reasoning_ms``, content deltas are spread from
``ttft_ms`` to ``total_ms``, followed at ``total_ms`` by the finish chunk, the usage chunk and ``[DONE]``.
Error behaviours answer at ``ttft_ms`` (``timeout_408`` at ``total_ms``) with their status, unless a
keep-alive went out before: then the status is already 200, and the error arrives in-band (an SSE chunk
with ``error`` and ``finish_reason: "error"``, or ``choices: []`` with ``error_chunk = "empty_choices"``, or
a JSON error body after the whitespace), as OpenRouter does. Non-streaming answers send whitespace
keep-alives (``\\n``) at the same ``keepalive_ms`` steps. A provider with a ``[shared_pool]`` is checked
after the account's limits: a request beyond its ``max_concurrent``, or within ``clear_s`` of the refusal
that saturated it, gets the shared-pool 429 at once.

Faults that need a real socket (``connection_reset``; ``never_answer`` and stalls ending when the server
stops) use the connection control that :mod:`freemodels.sandbox.server` provides; in-process (e.g. through
``httpx.ASGITransport``) a reset raises :class:`ConnectionResetError` and stalls never end.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import string
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from freemodels.sandbox import answers, bodies, wire
from freemodels.sandbox.bodies import ErrorReply
from freemodels.sandbox.catalog import Catalog, SandboxModel, build_catalog, catalog_json
from freemodels.sandbox.endpoints import endpoints_json
from freemodels.sandbox.limits import AccountLimiter, ArrivalWindow
from freemodels.sandbox.profiles import DEFAULT_SEED, FREE_ROUTER_ID, Profile, resolve_profiles
from freemodels.sandbox.replay import Recording, is_data_event, load_recording, sse_events
from freemodels.sandbox.scenario import Behavior, ErrorChunk, Fault, Scenario, SharedPool

_TICK_S = 0.05
_MAX_REASONING_TEXT_TOKENS = 1024
_HUGE_PIECE = ("All work and no play makes a very long reply. " * 1400)[:65_536]
_INVALID_MARK = "@@INVALID-UTF8@@"
_HUGE_MARK = "@@HUGE-BODY@@"
_JSON = "application/json"
_ARRIVED = "freemodels.sandbox.arrived"  # scope key: loop.time() when the request arrived

MODELS_LIMIT = 3
"""Most ids OpenRouter accepts in a request's ``models`` array (primary included), as live traffic shows."""


class ConnectionControl(Protocol):
    """What the server offers for transport faults."""

    def reset(self, client: tuple[str, int] | None) -> bool:
        """Reset (RST) the connection of ``client``; False if it is unknown."""
        ...


@dataclass
class Stats:
    """Counters behind ``GET /_sandbox/stats``."""

    requests_total: int = 0
    chat_requests: int = 0
    per_model: Counter[str] = field(default_factory=Counter)
    rejected_per_min: int = 0
    rejected_per_day: int = 0
    rejected_shared_pool: int = 0
    fallbacks: int = 0
    arrivals: ArrivalWindow = field(default_factory=ArrivalWindow)
    max_in_flight_per_provider: Counter[str] = field(default_factory=Counter)


@dataclass
class PoolState:
    """A provider's shared pool while the sandbox runs: requests in flight, refused until when."""

    pool: SharedPool
    in_flight: int = 0
    refused_until: float = -1.0

    def admit(self, now: float) -> bool:
        """Take one request (True), or refuse it (False): too many in flight, or still refused.

        A refusal while the pool takes requests starts a refused period of ``clear_s``; refusals
        during that period do not extend it.
        """
        if now < self.refused_until:
            return False
        if self.in_flight >= self.pool.max_concurrent:
            self.refused_until = now + self.pool.clear_s
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)


class SandboxState:
    """Everything one sandbox instance knows; lives on ``app.state.sandbox``. Used from the loop thread."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int,
        wall_clock: Callable[[], float],
        connections: ConnectionControl | None,
    ) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if scenario.seed is not None else seed
        self.catalog: Catalog = build_catalog(
            scenario.catalog, today=datetime.fromtimestamp(wall_clock(), UTC).date()
        )
        self.profiles: dict[str, Profile] = resolve_profiles(self.catalog, scenario, self.seed)
        self.limits = scenario.limits
        self.wall = wall_clock
        self.limiter = AccountLimiter(self.limits, now_wall=wall_clock(), now_mono=time.monotonic())
        self.recordings: dict[str, tuple[Recording, ...]] = {
            model_id: tuple(load_recording(path) for path in p.replay)
            for model_id, p in self.profiles.items()
            if p.replay
        }
        self.pools: dict[str, PoolState] = {
            name: PoolState(pool) for name, pool in scenario.shared_pool.items()
        }
        self.connections = connections
        self.closing = threading.Event()
        self.stats = Stats()
        self.model_requests: Counter[str] = Counter()
        self._ids = random.Random(f"{self.seed}:ids")
        self._router = random.Random(f"{self.seed}:router")
        self.user_id = "user_" + _token(random.Random(f"{self.seed}:user"), 27)
        self.shaper = bodies.Shaper(scenario.error_shape, self.user_id)

    def generation_id(self, created: int) -> str:
        return f"gen-{created}-{_token(self._ids, 20)}"

    def pick_free_target(self) -> str | None:
        """A working free model for ``openrouter/free`` (random, seeded)."""
        working = [
            model_id
            for model_id in self.catalog.free_ids()
            if not self.catalog.models[model_id].router
            and self.profiles[model_id].behavior is Behavior.OK
            and self.profiles[model_id].fault is Fault.NONE
            and not self.profiles[model_id].replay
            and self.profiles[model_id].redirect is None
        ]
        return self._router.choice(working) if working else None

    def reset(self, request: Request) -> None:
        """Reset the request's connection (the real server only)."""
        if self.connections is None:
            raise ConnectionResetError("sandbox fault: connection reset (needs the loopback server)")
        self.connections.reset(request.scope.get("client"))  # False: the client already left

    def stats_json(self) -> dict[str, Any]:
        """Counters for tests. ``max_requests_in_any_60s`` covers chat requests to free models (the ones
        the account limits apply to), rejected ones included; ``day_count`` is the quota used today."""
        s = self.stats
        return {
            "requests_total": s.requests_total,
            "chat_requests": s.chat_requests,
            "per_model": dict(s.per_model),
            "max_requests_in_any_60s": s.arrivals.max_in_window,
            "rejected_429_account": s.rejected_per_min + s.rejected_per_day,
            "rejected_429_per_min": s.rejected_per_min,
            "rejected_429_per_day": s.rejected_per_day,
            "rejected_429_shared_pool": s.rejected_shared_pool,
            "fallbacks": s.fallbacks,
            "max_in_flight_per_provider": dict(s.max_in_flight_per_provider),
            "day_count": self.limiter.used_today(self.wall()),
        }


def create_app(
    scenario: Scenario | None = None,
    *,
    seed: int | None = None,
    wall_clock: Callable[[], float] = time.time,
    connections: ConnectionControl | None = None,
) -> Starlette:
    """Build the sandbox app. Seed order: ``scenario.seed``, then ``seed``, then the default seed.

    Raises :class:`~freemodels.errors.ScenarioError` if the scenario names models the catalog lacks.
    """
    state = SandboxState(
        scenario if scenario is not None else Scenario(),
        seed=seed if seed is not None else DEFAULT_SEED,
        wall_clock=wall_clock,
        connections=connections,
    )
    routes = [
        Route("/api/v1/models", _models, methods=["GET"]),
        Route("/api/v1/models/count", _models_count, methods=["GET"]),
        Route("/api/v1/models/user", _models_user, methods=["GET"]),
        Route("/api/v1/models/{author}/{slug}/endpoints", _endpoints, methods=["GET"]),
        Route("/api/v1/key", _key, methods=["GET"]),
        Route("/api/v1/auth/key", _key, methods=["GET"]),
        Route("/api/v1/chat/completions", _chat, methods=["POST"]),
        Route("/_sandbox/stats", _stats, methods=["GET"]),
        Route("/api/v1/_sandbox/stats", _stats, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_CountRequests, state=state)],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.sandbox = state
    return app


class _CountRequests:
    """Counts every HTTP request (for ``requests_total``)."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_ARRIVED] = asyncio.get_running_loop().time()
            self.state.stats.requests_total += 1
        await self.app(scope, receive, send)


def _state(request: Request) -> SandboxState:
    return request.app.state.sandbox  # type: ignore[no-any-return]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = exc.detail if isinstance(exc, HTTPException) else "Internal Server Error"
    return JSONResponse({"error": {"code": status, "message": message}}, status_code=status)


# --------------------------------------------------------------------------------------------------
# GET endpoints


async def _models(request: Request) -> Response:
    params = request.query_params
    try:
        offset = _opt_int(params.get("offset"))
        limit = _opt_int(params.get("limit"))
    except ValueError:
        return _error_response(
            bodies.bad_request("offset and limit must be whole numbers", _state(request).shaper)
        )
    body = catalog_json(
        _state(request).catalog,
        output_modalities=params.get("output_modalities"),
        offset=offset,
        limit=limit,
    )
    return Response(wire.dumps(body), media_type=_JSON, headers=_cors())


async def _models_count(request: Request) -> Response:
    state = _state(request)
    count = len(state.catalog.listing(request.query_params.get("output_modalities")))
    return Response(wire.dumps({"data": {"count": count}}), media_type=_JSON, headers=_cors())


async def _models_user(request: Request) -> Response:
    """The models this account may route: the catalog less those its own settings exclude."""
    state = _state(request)
    refused = _check_auth(request, state)
    if refused is not None:
        return _error_response(refused)
    params = request.query_params
    try:
        offset = _opt_int(params.get("offset"))
        limit = _opt_int(params.get("limit"))
    except ValueError:
        return _error_response(bodies.bad_request("offset and limit must be whole numbers", state.shaper))
    excluded = {m for m, p in state.profiles.items() if p.behavior in bodies.ROUTING_EXCLUSIONS}
    body = catalog_json(
        state.catalog,
        output_modalities=params.get("output_modalities"),
        offset=offset,
        limit=limit,
        exclude=excluded,
    )
    return Response(wire.dumps(body), media_type=_JSON, headers=_cors())


async def _endpoints(request: Request) -> Response:
    state = _state(request)
    author, slug = request.path_params["author"], request.path_params["slug"]
    body = endpoints_json(state.catalog, state.profiles, author, slug)
    if body is None:
        return _error_response(bodies.not_found(f"No model found for {author}/{slug}", state.shaper))
    return Response(wire.dumps(body), media_type=_JSON, headers=_cors())


async def _key(request: Request) -> Response:
    state = _state(request)
    refused = _check_auth(request, state)
    if refused is not None:
        return _error_response(refused)
    limit = state.limits.requests_per_day
    used = state.limiter.used_today(state.wall())
    data = {
        "label": "sandbox key",
        "limit": None,
        "limit_reset": None,
        "limit_remaining": None,
        "include_byok_in_limit": False,
        "usage": 0,
        "usage_daily": 0,
        "usage_weekly": 0,
        "usage_monthly": 0,
        "byok_usage": 0,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 0,
        "byok_usage_monthly": 0,
        "is_free_tier": limit <= bodies.LOW_BALANCE_DAILY_LIMIT,
        "is_management_key": False,
        "is_provisioning_key": False,
        "creator_user_id": state.user_id,
        "expires_at": None,
        "rate_limit": {
            "requests": -1,
            "interval": "10s",
            "note": "This field is deprecated and safe to ignore.",
        },
        "free_model_daily_requests": {
            "limit": limit,
            "remaining": max(0, limit - used),
            "used": used,
        },
        # Required by the current OpenAPI schema (and the official SDK) since 2026.
        "allowed_data_regions": ["global"],
        "budgets": [],
        "effective_budget": None,
        "organization_id": None,
        "workspace_id": None,
    }
    return Response(wire.dumps({"data": data}), media_type=_JSON, headers=_cors())


async def _stats(request: Request) -> Response:
    return JSONResponse(_state(request).stats_json())


# --------------------------------------------------------------------------------------------------
# POST /chat/completions


@dataclass(frozen=True, slots=True)
class _Call:
    """One chat request, after validation."""

    model_id: str
    answer_model: str
    model: SandboxModel | None
    profile: Profile
    behavior: Behavior
    fault: Fault
    replay: Recording | None
    redirect: str | None
    stream: bool
    max_tokens: int | None
    hide_reasoning: bool
    wants_tools: bool
    prompt: str
    prompt_tokens: int
    nth: int
    gen: wire.Generation


async def _chat(request: Request) -> Response:
    arrived = request.scope.get(_ARRIVED)
    t0 = float(arrived) if arrived is not None else asyncio.get_running_loop().time()
    state = _state(request)
    refused = _check_auth(request, state)
    if refused is not None:
        return _error_response(refused)
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _error_response(bodies.bad_request("Invalid JSON in request body", state.shaper))
    if not isinstance(body, dict):
        return _error_response(bodies.bad_request("Request body must be a JSON object", state.shaper))
    requested = _requested_models(body, state.shaper)
    if isinstance(requested, ErrorReply):
        return _error_response(requested)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error_response(
            bodies.bad_request('Input required: specify "prompt" or "messages"', state.shaper)
        )
    state.stats.chat_requests += 1
    walk = _Walk()
    for index, model_id in enumerate(requested):
        last = index == len(requested) - 1
        outcome = _try_model(state, body, model_id, t0, walk)
        if isinstance(outcome, ErrorReply):
            if last:
                return await _answer_later(_error_response(outcome), t0 + walk.spent_ms / 1000)
            continue
        plan, release = outcome
        if plan.status >= 400 and not last:
            # An error status: OpenRouter tries the next model once this one's error came back.
            if release is not None:
                release()
            walk.spent_ms = plan.events[0][0] if plan.events else walk.spent_ms
            continue
        if index > 0:
            state.stats.fallbacks += 1
        return await _execute(plan, t0, request, state, release=release)
    raise AssertionError("unreachable: the last model always answers")  # pragma: no cover


@dataclass
class _Walk:
    """One request's way along its ``models``: time spent on failed models, the account's verdict."""

    spent_ms: float = 0.0  # when the model being tried starts, in ms after the request arrived
    account: ErrorReply | None = None  # the account 429, once refused
    counted: bool = False  # the account's limits have seen this request


def _try_model(
    state: SandboxState, body: dict[str, Any], model_id: str, t0: float, walk: _Walk
) -> ErrorReply | tuple[_Plan, Callable[[], None] | None]:
    """What ``model_id`` answers to this request, starting ``walk.spent_ms`` after arrival: an
    immediate error, or the plan (shifted to that start) with the shared pool slot to release."""
    state.stats.per_model[model_id] += 1
    model = state.catalog.models.get(model_id)
    if model is None and model_id not in state.catalog.ended_free:
        return bodies.model_not_found(model_id, state.shaper)
    free = model.free if model is not None else True
    if free and not walk.counted:
        walk.counted = True
        state.stats.arrivals.add(t0)
        rejection = state.limiter.admit(t0, state.wall())
        if rejection is not None:
            if rejection.kind == "per-min":
                state.stats.rejected_per_min += 1
            else:
                state.stats.rejected_per_day += 1
            walk.account = bodies.account_rate_limit(
                rejection.kind,
                limit=rejection.limit,
                reset_ms=rejection.reset_ms,
                user_id=state.user_id,
                retry_after_s=state.limits.retry_after_s,
            )
    if free and walk.account is not None:
        return walk.account  # the account's limits apply to every free model of the request
    call = _make_call(state, body, model_id, model)
    provider = call.profile.provider
    pool = state.pools.get(provider)
    if pool is None:
        return _shifted(_plan(state, call), walk.spent_ms), None
    if not pool.admit(t0 + walk.spent_ms / 1000):
        # The provider's shared pool refuses at once: too many requests in flight, or not cleared yet.
        state.stats.rejected_shared_pool += 1
        return ErrorReply(429, bodies.shared_pool_429(call.model_id, provider, state.shaper))
    seen = state.stats.max_in_flight_per_provider
    seen[provider] = max(seen[provider], pool.in_flight)
    return _shifted(_plan(state, call), walk.spent_ms), pool.release


def _shifted(plan: _Plan, offset_ms: float) -> _Plan:
    """``plan`` starting ``offset_ms`` later (after the models a fallback walk tried before)."""
    if offset_ms <= 0:
        return plan
    plan.events = [(at + offset_ms, data) for at, data in plan.events]
    plan.after_ms += offset_ms
    return plan


async def _answer_later(response: Response, at: float) -> Response:
    """``response``, sent at ``loop.time()`` ``at`` (after the failed models of a fallback walk)."""
    delay = at - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
    return response


def _requested_models(body: dict[str, Any], shaper: bodies.Shaper) -> list[str] | ErrorReply:
    """The model ids a request asks for, in order (``models`` if given, else ``model``), or its 400."""
    models = body.get("models")
    if models is None:
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            return bodies.bad_request("No models provided", shaper)
        return [model_id]
    if not isinstance(models, list):
        return bodies.bad_request("'models' must be an array of model IDs", shaper)
    if len(models) > MODELS_LIMIT:
        return bodies.too_many_models(MODELS_LIMIT, shaper)
    if not models:
        return bodies.bad_request("'models' array must have at least 1 item.", shaper)
    if not all(isinstance(m, str) and m for m in models):
        return bodies.bad_request("'models' array items must be model IDs (non-empty strings)", shaper)
    return list(models)


def _make_call(state: SandboxState, body: dict[str, Any], model_id: str, model: SandboxModel | None) -> _Call:
    state.model_requests[model_id] += 1
    nth = state.model_requests[model_id]
    profile = state.profiles[model_id]
    behavior, fault = profile.behavior, profile.fault
    recordings = state.recordings.get(model_id, ())
    replay = recordings[min(nth, len(recordings)) - 1] if recordings else None
    redirect = profile.redirect
    healthy = (profile.fail_first and nth > profile.fail_first) or nth <= profile.ok_first
    if healthy:
        behavior, fault, replay, redirect = Behavior.OK, Fault.NONE, None, None
    answer_model = model_id
    if (
        model_id == FREE_ROUTER_ID
        and behavior is Behavior.OK
        and fault is Fault.NONE
        and replay is None
        and redirect is None
    ):
        target = state.pick_free_target()
        if target is None:
            behavior = Behavior.NO_ENDPOINTS
        else:
            answer_model, profile = target, state.profiles[target]
            model = state.catalog.models[target]
    wants_tools = bool(body.get("tools"))
    if (
        wants_tools
        and model is not None
        and not model.supports_tools
        and behavior in _ANSWERING
        and fault is Fault.NONE
    ):
        behavior = Behavior.CAPABILITY
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        max_tokens = None
    reasoning_opt = body.get("reasoning")
    hide = body.get("include_reasoning") is False or (
        isinstance(reasoning_opt, dict) and reasoning_opt.get("exclude") is True
    )
    texts = [_message_text(m) for m in body["messages"]]
    prompt = next(
        (
            _message_text(m)
            for m in reversed(body["messages"])
            if isinstance(m, dict) and m.get("role") == "user"
        ),
        texts[-1],
    )
    created = int(state.wall())
    gen = wire.Generation(
        id=state.generation_id(created), created=created, model=answer_model, provider=profile.provider
    )
    return _Call(
        model_id=model_id,
        answer_model=answer_model,
        model=model,
        profile=profile,
        behavior=behavior,
        fault=fault,
        replay=replay,
        redirect=redirect,
        stream=body.get("stream") is True,
        max_tokens=max_tokens,
        hide_reasoning=hide,
        wants_tools=wants_tools,
        prompt=prompt,
        prompt_tokens=sum(answers.estimate_tokens(t) + 4 for t in texts),
        nth=nth,
        gen=gen,
    )


_ANSWERING = frozenset(
    {
        Behavior.OK,
        Behavior.WRONG_ANSWER,
        Behavior.EMPTY,
        Behavior.REASONING_EXHAUSTED,
        Behavior.REASONING_ANSWER,
        Behavior.MID_STREAM_ERROR,
    }
)


# --------------------------------------------------------------------------------------------------
# plans: what to send when


@dataclass
class _Plan:
    """Bytes to send at offsets (ms from arrival); then end, hold the connection open, or reset it."""

    status: int
    content_type: str
    headers: dict[str, str]
    events: list[tuple[float, bytes]]
    stream: bool = True  # False: one body with Content-Length, sent at the (single) event's time
    after: str = "end"  # end | hold | reset
    after_ms: float = 0.0  # reset time (after == "reset")
    hold_every_ms: int = 0  # while holding, send hold_bytes this often (0: silence)
    hold_bytes: bytes = b""


@dataclass(frozen=True, slots=True)
class _Composed:
    content: str
    reasoning: str
    reasoning_tokens: int
    finish_reason: str

    def completion_tokens(self) -> int:
        return self.reasoning_tokens + answers.estimate_tokens(self.content)


def _plan(state: SandboxState, call: _Call) -> _Plan:
    if call.redirect is not None:
        return _redirect_plan(call)
    if call.replay is not None:
        return _replay_plan(call)
    if call.fault is not Fault.NONE:
        return _fault_plan(state, call)
    if call.behavior in bodies.ERROR_BEHAVIORS:
        return _error_plan(state, call)
    if call.behavior is Behavior.STALL:
        return _stall_plan(call)
    return _answer_plan(state, call)


def _headers(call: _Call) -> dict[str, str]:
    return {**_cors(), "X-Generation-Id": call.gen.id}


def _keepalives(every_ms: int, before_ms: float, payload: bytes) -> list[tuple[float, bytes]]:
    if every_ms <= 0:
        return []
    return [(float(at), payload) for at in range(every_ms, int(before_ms), every_ms) if at < before_ms]


def _compose(state: SandboxState, call: _Call) -> _Composed:
    rng = random.Random(f"{state.seed}:{call.answer_model}:{call.prompt}")
    p = call.profile
    if call.behavior is Behavior.REASONING_EXHAUSTED:
        budget = call.max_tokens or (call.model.max_completion_tokens if call.model else None) or 1024
        text = answers.reasoning_text(min(budget, _MAX_REASONING_TEXT_TOKENS), rng)
        return _Composed("", text, budget, "length")
    if call.behavior is Behavior.EMPTY:
        return _Composed("", "", 0, "stop")  # no content and no reasoning: nothing at all
    if call.behavior is Behavior.REASONING_ANSWER:
        # The whole answer in the reasoning channel: a line of thinking, then the answer itself.
        answer = p.answer if p.answer is not None else answers.correct_answer(call.prompt, rng)
        text = f"{answers.reasoning_text(16, rng)}\n\n{answer}"
        return _Composed("", text, max(p.reasoning_tokens, answers.estimate_tokens(text)), "stop")
    if p.answer is not None:
        content = p.answer
    elif call.behavior is Behavior.WRONG_ANSWER:
        content = answers.wrong_answer(call.prompt, rng)
    else:
        content = answers.correct_answer(call.prompt, rng)
    r_tokens = p.reasoning_tokens if p.reasoning_ms > 0 else 0
    reasoning = answers.reasoning_text(min(r_tokens, _MAX_REASONING_TEXT_TOKENS), rng)
    finish = "stop"
    if call.max_tokens is not None:
        if r_tokens >= call.max_tokens:
            r_tokens = call.max_tokens
            reasoning = answers.truncate_to_tokens(reasoning, r_tokens)
            content, finish = "", "length"
        elif answers.estimate_tokens(content) > call.max_tokens - r_tokens:
            content = answers.truncate_to_tokens(content, call.max_tokens - r_tokens)
            finish = "length"
    return _Composed(content, reasoning, r_tokens, finish)


def _usage(call: _Call, composed: _Composed) -> dict[str, Any]:
    return wire.usage(
        call.prompt_tokens, composed.completion_tokens(), composed.reasoning_tokens, call.profile.cost
    )


def _answer_events(
    call: _Call, composed: _Composed, *, content_limit: int | None = None, content_end: float | None = None
) -> tuple[list[tuple[float, bytes]], list[float]]:
    """Keep-alives, role delta, reasoning and content deltas (last in the list), and the content times.

    Content deltas are spread from ``ttft_ms`` to ``content_end`` (default ``total_ms``).
    """
    p, gen = call.profile, call.gen
    ttft, total = float(p.ttft_ms), float(p.total_ms)
    show_reasoning = bool(composed.reasoning) and not call.hide_reasoning
    r_start = ttft - p.reasoning_ms if p.reasoning_ms > 0 else ttft
    # Reasoning without content (used up max_tokens, or the whole answer) streams until total_ms.
    exhausted = not composed.content
    if exhausted and p.reasoning_ms <= 0:
        r_start = ttft
    first = r_start if show_reasoning else ttft
    events = _keepalives(p.keepalive_ms, first, wire.KEEPALIVE)
    events.append((first, wire.sse(wire.chunk(gen, wire.role_delta()))))
    if show_reasoning:
        pieces = answers.split_pieces(composed.reasoning, 8)
        end = total if exhausted else ttft
        for index, piece in enumerate(pieces):
            if exhausted:
                at = r_start + (end - r_start) * index / max(1, len(pieces) - 1)
            else:
                at = r_start + (end - r_start) * index / len(pieces)
            events.append((at, wire.sse(wire.chunk(gen, wire.reasoning_delta(piece)))))
    pieces = answers.split_pieces(composed.content, 12)
    if content_limit is not None:
        pieces = pieces[:content_limit]
    end = total if content_end is None else content_end
    times = [ttft + (end - ttft) * index / max(1, len(pieces) - 1) for index in range(len(pieces))]
    for at, piece in zip(times, pieces, strict=True):
        events.append((at, wire.sse(wire.chunk(gen, wire.content_delta(piece)))))
    return events, times


def _answer_plan(state: SandboxState, call: _Call) -> _Plan:
    composed = _compose(state, call)
    usage = _usage(call, composed)
    total = float(call.profile.total_ms)
    if call.behavior is Behavior.MID_STREAM_ERROR:
        return _mid_stream_plan(state, call, composed, usage)
    if not call.stream:
        body = wire.completion(
            call.gen,
            # A reasoning model answering in its reasoning channel leaves content null (live reports).
            content=None if call.behavior is Behavior.REASONING_ANSWER else composed.content,
            reasoning=None if call.hide_reasoning else composed.reasoning,
            finish_reason=composed.finish_reason,
            usage_value=usage,
        )
        return _json_plan(call, 200, wire.dumps(body), total)
    events, _ = _answer_events(call, composed)
    gen = call.gen
    finish = wire.chunk(gen, wire.content_delta(""), composed.finish_reason)
    events += [
        (total, wire.sse(finish)),
        (total, wire.sse(_final_usage(call, usage, composed))),
        (total, wire.DONE),
    ]
    return _Plan(200, "text/event-stream", _sse_headers(call), events)


def _final_usage(call: _Call, usage: dict[str, Any], composed: _Composed) -> dict[str, Any]:
    return wire.usage_chunk(call.gen, usage, call.profile.usage_chunk, composed.finish_reason)


def _mid_stream_plan(state: SandboxState, call: _Call, composed: _Composed, usage: dict[str, Any]) -> _Plan:
    total = float(call.profile.total_ms)
    pieces = answers.split_pieces(composed.content, 12)
    partial_count = max(1, len(pieces) // 2)
    message = "Provider disconnected unexpectedly"
    error_object = state.shaper.envelope(502, message, error_type="provider_unavailable")["error"]
    if not call.stream:
        body = wire.completion(
            call.gen,
            content="".join(pieces[:partial_count]),
            reasoning=None,
            finish_reason="error",
            usage_value=usage,
            error=error_object,
        )
        return _json_plan(call, 200, wire.dumps(body), total)
    mid = (float(call.profile.ttft_ms) + total) / 2
    events, _ = _answer_events(call, composed, content_limit=partial_count, content_end=mid)
    error = wire.error_chunk(
        call.gen, error_object, usage, empty_choices=call.profile.error_chunk is ErrorChunk.EMPTY_CHOICES
    )
    events += [(total, wire.sse(error)), (total, wire.DONE)]
    return _Plan(200, "text/event-stream", _sse_headers(call), events)


def _redirect_plan(call: _Call) -> _Plan:
    """``307 Temporary Redirect`` to ``call.redirect`` at ``ttft_ms`` (a method-preserving redirect,
    the kind that would resend the POST body, and with a careless client the key, elsewhere)."""
    assert call.redirect is not None
    headers = {**_headers(call), "Location": call.redirect}
    return _Plan(307, "text/plain", headers, [(float(call.profile.ttft_ms), b"")], stream=False)


def _error_plan(state: SandboxState, call: _Call) -> _Plan:
    reply = _behavior_reply(state, call, call.behavior)
    p = call.profile
    at = float(p.total_ms if call.behavior is Behavior.TIMEOUT_408 else p.ttft_ms)
    if call.stream:
        early = _keepalives(p.keepalive_ms, at, wire.KEEPALIVE)
        if early:
            in_band = _in_band_error(call.gen, reply, call.profile.error_chunk)
            events = [*early, (at, wire.sse(in_band)), (at, wire.DONE)]
            return _Plan(200, "text/event-stream", _sse_headers(call), events)
    return _json_plan(call, reply.status, wire.dumps(reply.body), at, reply.headers)


def _behavior_reply(state: SandboxState, call: _Call, behavior: Behavior) -> ErrorReply:
    return bodies.behavior_error(
        behavior,
        model_id=call.model_id,
        provider=call.profile.provider,
        shaper=state.shaper,
        retry_after_s=call.profile.retry_after_s,
        paid_slug=state.catalog.ended_free.get(call.model_id),
        wants_tools=call.wants_tools,
        prompt=call.prompt,
        wording=call.profile.wording,
        status=call.profile.error_status,
    )


def _in_band_error(gen: wire.Generation, reply: ErrorReply, style: ErrorChunk) -> dict[str, Any]:
    """The error of ``reply`` as an SSE chunk inside a 200 stream (choices as ``style`` says)."""
    error = dict(reply.body["error"])
    chunk = wire.chunk(gen, {"role": "assistant", "content": ""}, "error")
    return {
        "id": gen.id,
        "provider": gen.provider,
        "error": error,
        "model": gen.model,
        "object": "chat.completion.chunk",
        "created": gen.created,
        "choices": [] if style is ErrorChunk.EMPTY_CHOICES else chunk["choices"],
    }


def _json_plan(
    call: _Call, status: int, body: bytes, at: float, extra: dict[str, str] | None = None
) -> _Plan:
    """A JSON answer at ``at``; with keep-alives before it, 200 + whitespace then the body."""
    headers = {**_headers(call), **(extra or {})}
    early = _keepalives(call.profile.keepalive_ms, at, b"\n")
    if early:
        return _Plan(200, _JSON, _headers(call), [*early, (at, body)])
    return _Plan(status, _JSON, headers, [(at, body)], stream=False)


def _stall_plan(call: _Call) -> _Plan:
    p = call.profile
    if call.stream:
        events = _keepalives(p.keepalive_ms, p.ttft_ms, wire.KEEPALIVE)
        events.append((float(p.ttft_ms), wire.sse(wire.chunk(call.gen, wire.role_delta()))))
        return _Plan(
            200, "text/event-stream", _sse_headers(call), events, after="hold",
            hold_every_ms=p.keepalive_ms, hold_bytes=wire.KEEPALIVE,
        )  # fmt: skip
    if p.keepalive_ms > 0:
        return _Plan(
            200, _JSON, _headers(call), [(float(p.keepalive_ms), b"\n")], after="hold",
            hold_every_ms=p.keepalive_ms, hold_bytes=b"\n",
        )  # fmt: skip
    return _Plan(200, _JSON, _headers(call), [], after="hold")


def _fault_plan(state: SandboxState, call: _Call) -> _Plan:
    p, fault = call.profile, call.fault
    ttft, total = float(p.ttft_ms), float(p.total_ms)
    if fault is Fault.NEVER_ANSWER:
        return _Plan(200, _JSON, {}, [], after="hold")
    if fault is Fault.STORM_5XX:
        status = (500, 502, 503, 504)[(call.nth - 1) % 4]
        reply = bodies.storm_5xx(status, call.model_id, p.provider, state.shaper)
        return _Plan(reply.status, _JSON, _headers(call), [(ttft, wire.dumps(reply.body))], stream=False)
    if fault is Fault.STORM_429:
        envelope = bodies.upstream_429(call.model_id, p.provider, state.shaper)
        return _Plan(429, _JSON, _headers(call), [(ttft, wire.dumps(envelope))], stream=False)
    composed = _compose(state, call)
    usage = _usage(call, composed)
    if fault is Fault.CONNECTION_RESET or fault is Fault.STALL_AFTER_TOKENS:
        return _cut_plan(call, composed, usage)
    if fault is Fault.TRUNCATED_JSON:
        if call.stream:
            events = _keepalives(p.keepalive_ms, ttft, wire.KEEPALIVE)
            first_piece = answers.split_pieces(composed.content, 12)[:1] or ["..."]
            whole = wire.sse(wire.chunk(call.gen, wire.content_delta(first_piece[0])))
            events += [
                (ttft, wire.sse(wire.chunk(call.gen, wire.role_delta()))),
                (ttft, whole[: len(whole) // 2] + b"\n\n"),
            ]
            return _Plan(200, "text/event-stream", _sse_headers(call), events)
        body = wire.dumps(
            wire.completion(
                call.gen, content=composed.content, reasoning=None,
                finish_reason=composed.finish_reason, usage_value=usage,
            )
        )  # fmt: skip
        return _Plan(200, _JSON, _headers(call), [(total, body[: len(body) // 2])], stream=False)
    if fault is Fault.HUGE_BODY:
        return _huge_plan(call, usage)
    if fault is Fault.INVALID_UTF8:
        return _invalid_utf8_plan(call, composed, usage)
    raise ValueError(f"unhandled fault {fault.value}")


def _cut_plan(call: _Call, composed: _Composed, usage: dict[str, Any]) -> _Plan:
    """connection_reset / stall_after_tokens: a normal answer cut after N content deltas."""
    p = call.profile
    ttft = float(p.ttft_ms)
    reset = call.fault is Fault.CONNECTION_RESET
    tokens = p.fault_after_tokens if p.fault_after_tokens is not None else (0 if reset else 3)
    if reset and (not call.stream or tokens == 0):
        return _Plan(200, _JSON, {}, [], after="reset", after_ms=ttft)
    if not call.stream:
        body = wire.dumps(
            wire.completion(
                call.gen, content=composed.content, reasoning=None,
                finish_reason=composed.finish_reason, usage_value=usage,
            )
        )  # fmt: skip
        return _Plan(200, _JSON, _headers(call), [(ttft, body[: len(body) // 2])], after="hold")
    events, times = _answer_events(call, composed)
    kept = len(events) - len(times) + min(tokens, len(times))
    strike = times[tokens] if tokens < len(times) else float(p.total_ms)
    return _Plan(
        200, "text/event-stream", _sse_headers(call), events[:kept],
        after="reset" if reset else "hold", after_ms=strike,
    )  # fmt: skip


def _huge_plan(call: _Call, usage: dict[str, Any]) -> _Plan:
    p, gen = call.profile, call.gen
    ttft, total = float(p.ttft_ms), float(p.total_ms)
    count = max(1, -(-p.huge_body_bytes // len(_HUGE_PIECE)))
    if call.stream:
        piece = wire.sse(wire.chunk(gen, wire.content_delta(_HUGE_PIECE)))
        events = _keepalives(p.keepalive_ms, ttft, wire.KEEPALIVE)
        events.append((ttft, wire.sse(wire.chunk(gen, wire.role_delta()))))
        events += [(ttft, piece)] * count
        events += [
            (total, wire.sse(wire.chunk(gen, wire.content_delta(""), "stop"))),
            (total, wire.sse(wire.usage_chunk(gen, usage, p.usage_chunk))),
            (total, wire.DONE),
        ]
        return _Plan(200, "text/event-stream", _sse_headers(call), events)
    body = wire.dumps(
        wire.completion(gen, content=_HUGE_MARK, reasoning=None, finish_reason="stop", usage_value=usage)
    )
    prefix, _, suffix = body.partition(_HUGE_MARK.encode())
    piece = _HUGE_PIECE.encode()
    events = [(ttft, prefix)] + [(ttft, piece)] * count + [(total, suffix)]
    return _Plan(200, _JSON, _headers(call), events)


def _invalid_utf8_plan(call: _Call, composed: _Composed, usage: dict[str, Any]) -> _Plan:
    bad = b"\xff\xfe\xfd"
    if not call.stream:
        body = wire.dumps(
            wire.completion(
                call.gen, content=_INVALID_MARK + composed.content, reasoning=None,
                finish_reason=composed.finish_reason, usage_value=usage,
            )
        ).replace(_INVALID_MARK.encode(), bad)  # fmt: skip
        return _Plan(200, _JSON, _headers(call), [(float(call.profile.total_ms), body)], stream=False)
    events, times = _answer_events(call, composed)
    pieces = answers.split_pieces(composed.content, 12) or [""]
    first = len(events) - len(times)
    at = events[first][0] if times else float(call.profile.ttft_ms)
    poisoned = wire.sse(wire.chunk(call.gen, wire.content_delta(_INVALID_MARK + pieces[0])))
    poisoned = poisoned.replace(_INVALID_MARK.encode(), bad)
    events[first : first + 1] = [(at, poisoned)]
    total = float(call.profile.total_ms)
    events += [
        (total, wire.sse(wire.chunk(call.gen, wire.content_delta(""), composed.finish_reason))),
        (total, wire.sse(_final_usage(call, usage, composed))),
        (total, wire.DONE),
    ]
    return _Plan(200, "text/event-stream", _sse_headers(call), events)


def _replay_plan(call: _Call) -> _Plan:
    recording = call.replay
    assert recording is not None
    p = call.profile
    ttft, total = float(p.ttft_ms), float(p.total_ms)
    headers = recording.extra_headers()
    if not recording.is_sse:
        at = ttft if recording.status >= 400 else total
        return _Plan(recording.status, recording.media_type(), headers, [(at, recording.body)], stream=False)
    events = sse_events(recording.body)
    first_data = next((i for i, e in enumerate(events) if is_data_event(e)), len(events))
    timed: list[tuple[float, bytes]] = []
    for index, event in enumerate(events[:first_data]):
        timed.append((ttft * index / max(1, first_data), event))
    data_events = events[first_data:]
    for index, event in enumerate(data_events):
        timed.append((ttft + (total - ttft) * index / max(1, len(data_events) - 1), event))
    return _Plan(recording.status, recording.media_type(), headers, timed)


# --------------------------------------------------------------------------------------------------
# execution


async def _execute(
    plan: _Plan,
    t0: float,
    request: Request,
    state: SandboxState,
    *,
    release: Callable[[], None] | None = None,
) -> Response:
    """Play ``plan``; ``release`` is called once the answer is over (a shared pool's slot)."""
    handed_over = False
    try:
        response = await _play(plan, t0, request, state)
        if isinstance(response, StreamingResponse) and release is not None:
            response.body_iterator = _released(aiter(response.body_iterator), release)
            handed_over = True
        return response
    finally:
        if release is not None and not handed_over:
            release()


async def _released(body: AsyncIterator[Any], release: Callable[[], None]) -> AsyncIterator[Any]:
    """``body``, then ``release()`` however the stream ends (finished, reset, client gone)."""
    try:
        async for piece in body:
            yield piece
    finally:
        release()


async def _play(plan: _Plan, t0: float, request: Request, state: SandboxState) -> Response:
    if not plan.events:
        if plan.after == "reset" and await _sleep_until(t0 + plan.after_ms / 1000, state):
            state.reset(request)
            return Response(status_code=500)  # never delivered: the connection is gone
        await _hold_silently(request, state)
        if state.closing.is_set():
            state.reset(request)
        return Response(status_code=500)  # never delivered
    if not await _sleep_until(t0 + plan.events[0][0] / 1000, state):
        state.reset(request)
        return Response(status_code=500)
    headers = {**plan.headers, "Content-Type": plan.content_type}
    if not plan.stream:
        return Response(plan.events[0][1], status_code=plan.status, headers=headers)
    return StreamingResponse(_run(plan, t0, request, state), status_code=plan.status, headers=headers)


async def _run(plan: _Plan, t0: float, request: Request, state: SandboxState) -> AsyncIterator[bytes]:
    last = 0.0
    for at, data in plan.events:
        if not await _sleep_until(t0 + at / 1000, state):
            state.reset(request)
            return
        last = at
        yield data
    if plan.after == "reset":
        await _sleep_until(t0 + max(plan.after_ms, last) / 1000, state)
        state.reset(request)
        return
    if plan.after == "hold":
        next_at = last + plan.hold_every_ms
        while True:
            if plan.hold_every_ms > 0:
                if not await _sleep_until(t0 + next_at / 1000, state):
                    break
                yield plan.hold_bytes
                next_at += plan.hold_every_ms
            elif not await _sleep_until(asyncio.get_running_loop().time() + 3600, state):
                break
        state.reset(request)


async def _sleep_until(deadline: float, state: SandboxState) -> bool:
    """Sleep to an absolute ``loop.time()`` deadline; False if the server started closing meanwhile."""
    loop = asyncio.get_running_loop()
    while True:
        if state.closing.is_set():
            return False
        delay = deadline - loop.time()
        if delay <= 0:
            return True
        await asyncio.sleep(min(delay, _TICK_S))


async def _hold_silently(request: Request, state: SandboxState) -> None:
    """Keep the request open without answering until the client leaves or the server closes."""
    while not state.closing.is_set():
        receive = asyncio.ensure_future(request.receive())
        try:
            while not receive.done() and not state.closing.is_set():
                await asyncio.wait({receive}, timeout=_TICK_S)
        finally:
            if not receive.done():
                receive.cancel()
        if receive.done() and not receive.cancelled() and receive.result()["type"] == "http.disconnect":
            return


# --------------------------------------------------------------------------------------------------
# helpers


def _check_auth(request: Request, state: SandboxState) -> ErrorReply | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return bodies.missing_auth()
    pinned = state.limits.api_key
    if pinned is not None and not hmac.compare_digest(token.encode(), pinned.encode()):
        return bodies.unknown_key()
    return None


def _error_response(reply: ErrorReply) -> Response:
    headers = {**_cors(), **reply.headers}
    return Response(wire.dumps(reply.body), status_code=reply.status, media_type=_JSON, headers=headers)


def _cors() -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "X-Generation-Id",
    }


def _sse_headers(call: _Call) -> dict[str, str]:
    return {**_headers(call), "Cache-Control": "no-cache"}


def _message_text(message: object) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return " ".join(str(p.get("text", "")) for p in parts)
    return ""


def _opt_int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


def _token(rng: random.Random, length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choice(alphabet) for _ in range(length))

"""The rate limiter (virtual time) and the plan runner (MockTransport): pacing, daily budget, pauses,
the retry policy, hint order, stopping on the daily quota, isolation of one probe's bug."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freemodels.client import build_http_client
from freemodels.failures import Failure
from freemodels.probe import AttemptOutcome
from freemodels.records import ProbeResult, ProbeSpec
from freemodels.scheduler import PlanOutcome, ProviderPools, RateLimiter, backoff_delay_s, run_plan
from freemodels.settings import Settings
from freemodels.suite import TaskInstance, build_suite

# --- virtual time -------------------------------------------------------------------------------


class VirtualTime:
    """A clock and sleep for the limiter: time only moves when every coroutine is asleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), future))
        await future

    async def run(self, coros: list[Coroutine[Any, Any, Any]]) -> list[Any]:
        tasks = [asyncio.create_task(c) for c in coros]
        while not all(t.done() for t in tasks):
            for _ in range(20):  # let every runnable coroutine reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers:
                wake, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, wake)
                future.set_result(None)
        return [t.result() for t in tasks]


def max_in_window(starts: list[float], window: float = 60.0) -> int:
    starts = sorted(starts)
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@settings(max_examples=150, deadline=None)
@given(
    rpm=st.integers(1, 120),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("acquire"), st.floats(0, 5)),  # then idle for that long
            st.tuples(st.just("pause"), st.floats(0, 90)),
        ),
        min_size=1,
        max_size=150,
    ),
)
def test_never_more_than_r_starts_in_any_60s_window(rpm: int, ops: list[tuple[str, float]]) -> None:
    vt = VirtualTime()
    limiter = RateLimiter(rpm, None, clock=vt.clock, sleep=vt.sleep)  # default margin: 1 s
    starts: list[float] = []

    async def scenario() -> None:
        for op, value in ops:
            if op == "pause":
                limiter.pause_for(value)
                continue
            assert await limiter.acquire()
            starts.append(vt.now)
            await vt.sleep(value)

    asyncio.run(vt.run([scenario()]))
    assert max_in_window(starts) <= rpm
    # The margin also absorbs up to ~1 s of spread between leaving and arriving.
    assert max_in_window(starts, 60.99) <= rpm
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 61 / rpm - 1e-9 for g in gaps)


@settings(max_examples=60, deadline=None)
@given(rpm=st.integers(1, 600), workers=st.integers(1, 30), n=st.integers(1, 120))
def test_concurrent_callers_are_paced_and_take_n_over_r(rpm: int, workers: int, n: int) -> None:
    vt = VirtualTime()
    limiter = RateLimiter(rpm, None, clock=vt.clock, sleep=vt.sleep)  # default 1 s margin
    starts: list[float] = []
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            queue.pop()
            assert await limiter.acquire()
            starts.append(vt.now)
            await vt.sleep(0.5)  # the request itself

    asyncio.run(vt.run([worker() for _ in range(workers)]))
    assert len(starts) == n
    assert max_in_window(starts) <= rpm
    # Even with margin, any window slightly longer than 60 s still holds at most R starts.
    assert max_in_window(starts, 60.9) <= rpm
    interval = 61 / rpm
    if workers * interval >= 0.5:  # enough workers to keep pace: wall time is the bound
        assert starts[-1] == pytest.approx((n - 1) * interval)


def test_daily_budget_and_server_reported_exhaustion() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(600, 5, clock=vt.clock, sleep=vt.sleep)

    async def take(k: int) -> list[bool]:
        return [await limiter.acquire() for _ in range(k)]

    assert asyncio.run(vt.run([take(8)])) == [[True] * 5 + [False] * 3]
    assert limiter.used == 5 and limiter.remaining == 0 and limiter.day_exhausted

    unlimited = RateLimiter(600, None, clock=vt.clock, sleep=vt.sleep)
    assert unlimited.remaining is None and not unlimited.day_exhausted
    unlimited.mark_day_exhausted()
    assert asyncio.run(vt.run([take_from(unlimited)])) == [False]
    assert unlimited.remaining == 0


async def take_from(limiter: RateLimiter) -> bool:
    return await limiter.acquire()


def test_budget_counts_callers_still_waiting() -> None:
    """Waiting callers hold their share of the budget: concurrent acquires never overshoot it."""
    vt = VirtualTime()
    limiter = RateLimiter(60, 3, clock=vt.clock, sleep=vt.sleep)
    results = asyncio.run(vt.run([take_from(limiter) for _ in range(6)]))
    assert sorted(results) == [False] * 3 + [True] * 3
    assert limiter.used == 3


def test_pause_holds_back_callers_already_waiting() -> None:
    vt = VirtualTime()
    limiter = RateLimiter(60, None, clock=vt.clock, sleep=vt.sleep, margin_s=0.0)  # 1 s apart
    starts: list[float] = []

    async def one() -> None:
        assert await limiter.acquire()
        starts.append(vt.now)

    async def pauser() -> None:
        await vt.sleep(1.5)  # after the 2nd start, while others wait for their slots
        limiter.pause_until(10.0)

    asyncio.run(vt.run([pauser(), *(one() for _ in range(5))]))
    assert starts[:2] == [0.0, 1.0]
    assert all(t >= 10.0 for t in starts[2:])
    assert [b - a for a, b in itertools.pairwise(starts[2:])] == [1.0, 1.0]


def test_invalid_limits() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimiter(0, None)
    with pytest.raises(ValueError, match="requests_per_day"):
        RateLimiter(20, -1)


def test_backoff_delay() -> None:
    s = Settings(backoff_base_s=1.0, backoff_max_s=10.0)
    rng = random.Random(1)
    assert backoff_delay_s(1, 3.0, s, rng) == 3.0  # a hint wins as given
    assert backoff_delay_s(1, 0.0, s, rng) == 0.0
    assert backoff_delay_s(1, 11.0, s, rng) is None  # longer than allowed: no retry
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        for _ in range(50):
            assert step / 2 <= backoff_delay_s(attempt, None, s, rng) <= step


# --- run_plan against MockTransport ------------------------------------------------------------

SUITE = {t.name: t for t in build_suite(11)}
BASE = "http://sandbox.test/api/v1"


def plan_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "max_concurrency": 4,
        "max_attempts": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 2.0,
        "probe_deadline_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def specs_for(models: list[str], tasks: tuple[str, ...] = ("arithmetic",)) -> list[ProbeSpec]:
    return [ProbeSpec(model_id=m, family=m.split(":")[0], task=t) for m in models for t in tasks]


def ok_stream(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    task = next(t for t in SUITE.values() if t.prompt == body["messages"][1]["content"])
    chunk = {
        "id": "gen-1",
        "choices": [{"index": 0, "delta": {"content": task.expected}, "finish_reason": "stop"}],
    }
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n",
    )


def error(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: object
) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": status, "message": message, **extra}}, headers=headers
    )


UPSTREAM = "Provider returned error"
PER_DAY = (
    "Rate limit exceeded: free-models-per-day. Add 10 credits to unlock 1000 free model requests per day"
)
PER_MIN = "Rate limit exceeded: free-models-per-min."

AsyncHandler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Server:
    """A scripted server: per-model queues of answers (the last one repeats), with request log."""

    def __init__(
        self, script: dict[str, list[Callable[[httpx.Request], httpx.Response]]], delay_s: float = 0.0
    ):
        self.script = script
        self.delay_s = delay_s
        self.log: list[tuple[float, str]] = []
        self.count: dict[str, int] = defaultdict(int)
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        model = json.loads(request.content)["model"]
        self.log.append((time.monotonic(), model))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            answers = self.script.get(model, [ok_stream])
            index = min(self.count[model], len(answers) - 1)
            self.count[model] += 1
            return answers[index](request)
        finally:
            self.in_flight -= 1


async def run_with(
    server: Server,
    specs: list[ProbeSpec],
    *,
    settings: Settings | None = None,
    limiter: RateLimiter | None = None,
    **kwargs: Any,
) -> PlanOutcome:
    settings = settings or plan_settings()
    limiter = limiter or RateLimiter(60_000, None)
    async with build_http_client(
        settings, base_url=BASE, api_key="k", transport=httpx.MockTransport(server)
    ) as client:
        return await run_plan(client, specs, SUITE, settings, limiter, run_id="run-1", **kwargs)


def test_all_succeed_and_every_attempt_is_reported() -> None:
    server = Server({})
    seen: list[ProbeResult] = []
    specs = specs_for([f"m/{i}:free" for i in range(5)], ("arithmetic", "json_object", "reverse_words"))
    outcome = asyncio.run(run_with(server, specs, on_result=seen.append))
    assert len(outcome.results) == 15 and all(r.passed for r in outcome.results)
    assert seen == outcome.results
    assert outcome.unsent == [] and not outcome.quota_exhausted
    assert {(r.model_id, r.task) for r in outcome.results} == {(s.model_id, s.task) for s in specs}


def test_a_models_array_goes_with_every_attempt_and_each_outcome_reaches_on_attempt() -> None:
    bodies: list[dict[str, Any]] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return error(503, "No instances available")

    server = Server({"m/a:free": [flaky, ok_stream]})
    seen: list[tuple[str, int, bool]] = []

    def on_attempt(spec: ProbeSpec, outcome: AttemptOutcome) -> None:
        seen.append((spec.model_id, outcome.result.attempt, outcome.result.passed))

    outcome = asyncio.run(
        run_with(server, specs_for(["m/a:free"]), models=("m/a:free", "m/b:free"), on_attempt=on_attempt)
    )
    assert bodies[0]["models"] == ["m/a:free", "m/b:free"]
    assert seen == [("m/a:free", 1, False), ("m/a:free", 2, True)]
    assert [r.passed for r in outcome.results] == [False, True]


def test_retries_only_where_the_class_allows() -> None:
    script = {
        "gone:free": [lambda r: error(404, "No endpoints found for gone:free.")],
        "badid": [lambda r: error(400, "badid is not a valid model ID")],
        "private:free": [
            lambda r: error(404, "No endpoints found matching your data policy (Free model publication)")
        ],
        "flaky:free": [lambda r: error(502, UPSTREAM), lambda r: error(502, UPSTREAM), ok_stream],
        "down:free": [lambda r: error(503, "No instances available")],
        "final:free": [
            lambda r: error(503, "busy", availability={"code": "temporarily_unavailable", "retryable": False})
        ],
        "wrong:free": [
            lambda r: httpx.Response(
                200, json={"choices": [{"message": {"content": "7"}, "finish_reason": "stop"}]}
            )
        ],
    }
    server = Server(script)
    outcome = asyncio.run(run_with(server, specs_for(list(script))))
    by_model: dict[str, list[ProbeResult]] = defaultdict(list)
    for r in outcome.results:
        by_model[r.model_id].append(r)
    assert [r.failure for r in by_model["gone:free"]] == [Failure.NO_ENDPOINTS]
    assert [r.failure for r in by_model["badid"]] == [Failure.WRONG_MODEL_ID]
    assert [r.failure for r in by_model["private:free"]] == [Failure.PRIVACY_EXCLUDED]
    assert [r.failure for r in by_model["wrong:free"]] == [Failure.WRONG_ANSWER]
    assert [r.failure for r in by_model["final:free"]] == [Failure.PROVIDER_ERROR]
    flaky = sorted(by_model["flaky:free"], key=lambda r: r.attempt)
    assert [(r.attempt, r.failure) for r in flaky] == [
        (1, Failure.PROVIDER_ERROR),
        (2, Failure.PROVIDER_ERROR),
        (3, None),
    ]
    assert [r.attempt for r in sorted(by_model["down:free"], key=lambda r: r.attempt)] == [1, 2, 3]
    assert dict(server.count) == {
        "gone:free": 1,
        "badid": 1,
        "private:free": 1,
        "flaky:free": 3,
        "down:free": 3,
        "final:free": 1,
        "wrong:free": 1,
    }


def _gap_after_first(server: Server, model: str) -> float:
    times = [t for t, m in server.log if m == model]
    return times[1] - times[0]


def test_hint_order_retry_after_then_availability_then_reset() -> None:
    now_ms = int(time.time() * 1000)
    script = {
        "a:free": [
            lambda r: error(
                429,
                UPSTREAM,
                headers={"Retry-After": "0.3"},
                availability={"code": "capacity_exhausted", "retryable": True, "retry_after": 1.5},
            ),
            ok_stream,
        ],
        "b:free": [
            lambda r: error(
                429,
                UPSTREAM,
                availability={"code": "capacity_exhausted", "retryable": True, "retry_after": 0.4},
                metadata={"headers": {"X-RateLimit-Reset": str(now_ms + 1500)}},
            ),
            ok_stream,
        ],
        "c:free": [
            lambda r: error(
                429,
                UPSTREAM,
                metadata={
                    "provider_name": "X",
                    "headers": {"X-RateLimit-Reset": str(int(time.time() * 1000) + 500)},
                },
            ),
            ok_stream,
        ],
    }
    server = Server(script)
    outcome = asyncio.run(run_with(server, specs_for(list(script))))
    assert all(r.failure is None for r in outcome.results if r.attempt == 2)
    retry_after = {r.model_id: r.retry_after_s for r in outcome.results if r.attempt == 1}
    assert retry_after["a:free"] == 0.3
    assert retry_after["b:free"] == 0.4
    assert retry_after["c:free"] == pytest.approx(0.5, abs=0.05)
    assert 0.28 <= _gap_after_first(server, "a:free") < 1.0
    assert 0.38 <= _gap_after_first(server, "b:free") < 1.2
    assert 0.4 <= _gap_after_first(server, "c:free") < 1.2


def test_hint_longer_than_the_backoff_cap_means_no_retry() -> None:
    script = {"slow:free": [lambda r: error(429, UPSTREAM, headers={"Retry-After": "30"}), ok_stream]}
    server = Server(script)
    outcome = asyncio.run(run_with(server, specs_for(list(script)), settings=plan_settings(backoff_max_s=5)))
    assert [r.failure for r in outcome.results] == [Failure.RATE_LIMIT_UPSTREAM]
    assert outcome.results[0].retry_after_s == 30.0


def test_daily_429_stops_the_plan_and_reports_unsent() -> None:
    count = {"n": 0}

    def maybe_day_limit(request: httpx.Request) -> httpx.Response:
        count["n"] += 1
        return ok_stream(request) if count["n"] <= 3 else error(429, PER_DAY)

    models = [f"m/{i}:free" for i in range(10)]
    server = Server({m: [maybe_day_limit] for m in models})
    limiter = RateLimiter(60_000, None)
    outcome = asyncio.run(
        run_with(server, specs_for(models), settings=plan_settings(max_concurrency=1), limiter=limiter)
    )
    assert [r.failure for r in outcome.results] == [None, None, None, Failure.RATE_LIMIT_ACCOUNT]
    assert outcome.quota_exhausted and limiter.day_exhausted
    assert [s.model_id for s in outcome.unsent] == models[4:]
    assert len(server.log) == 4  # nothing was sent after the daily 429


def test_daily_budget_of_the_limiter_stops_the_plan() -> None:
    models = [f"m/{i}:free" for i in range(10)]
    server = Server({})
    limiter = RateLimiter(60_000, 4)
    outcome = asyncio.run(run_with(server, specs_for(models), limiter=limiter))
    assert len(outcome.results) == 4 and len(outcome.unsent) == 6 and outcome.quota_exhausted
    assert len(server.log) == 4


def test_retries_are_not_counted_as_unsent_when_the_quota_ends() -> None:
    script = {"flaky:free": [lambda r: error(502, UPSTREAM), ok_stream]}
    server = Server(script)
    outcome = asyncio.run(run_with(server, specs_for(list(script)), limiter=RateLimiter(60_000, 1)))
    assert [r.failure for r in outcome.results] == [Failure.PROVIDER_ERROR]
    assert outcome.unsent == [] and outcome.quota_exhausted


def test_minute_429_pauses_every_probe() -> None:
    first = {"done": False}

    def minute_limit_once(request: httpx.Request) -> httpx.Response:
        if not first["done"]:
            first["done"] = True
            return error(429, PER_MIN, headers={"Retry-After": "0.4"})
        return ok_stream(request)

    models = [f"m/{i}:free" for i in range(8)]
    server = Server({m: [minute_limit_once] for m in models})
    settings = plan_settings(max_concurrency=1)
    outcome = asyncio.run(run_with(server, specs_for(models), settings=settings))
    assert sum(r.failure is Failure.RATE_LIMIT_ACCOUNT for r in outcome.results) == 1
    assert all(r.passed for r in outcome.results if r.failure is None) and len(outcome.results) == 9
    t429 = server.log[0][0]
    assert all(t - t429 >= 0.38 for t, _ in server.log[1:])


def test_attempt_numbers_continue_after_a_resume() -> None:
    script = {"flaky:free": [lambda r: error(502, UPSTREAM), ok_stream]}
    outcome = asyncio.run(
        run_with(Server(script), specs_for(list(script)), attempt_offset={("flaky:free", "arithmetic", 0): 2})
    )
    assert [r.attempt for r in outcome.results] == [3, 4]


class Exploding(TaskInstance):
    def grade(self, reply: str | None) -> bool:
        raise RuntimeError("grader bug")


def test_a_bug_in_one_probe_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    suite = dict(SUITE)
    base = SUITE["json_object"]
    suite["json_object"] = Exploding(base.name, base.system, base.prompt, base.expected, base.json_mode)

    async def go() -> PlanOutcome:
        settings = plan_settings()
        async with build_http_client(
            settings, base_url=BASE, api_key="k", transport=httpx.MockTransport(Server({}))
        ) as c:
            return await run_plan(
                c,
                specs_for(["a:free", "b:free"], ("arithmetic", "json_object")),
                suite,
                settings,
                RateLimiter(60_000, None),
                run_id="r",
            )

    outcome = asyncio.run(go())
    broken = [r for r in outcome.results if r.task == "json_object"]
    fine = [r for r in outcome.results if r.task == "arithmetic"]
    assert len(broken) == 2 and all(r.error_code == "internal_error" and not r.passed for r in broken)
    assert all(r.failure is Failure.TRANSPORT_ERROR and r.attempt == 1 for r in broken)  # never retried
    assert len(fine) == 2 and all(r.passed for r in fine)
    assert "grader bug" in caplog.text


def test_an_on_result_error_stops_the_plan() -> None:
    class Full(OSError):
        pass

    def on_result(result: ProbeResult) -> None:
        raise Full("disk full")

    with pytest.raises(Full, match="disk full"):
        asyncio.run(run_with(Server({}), specs_for(["a:free", "b:free"]), on_result=on_result))


def test_unknown_task_is_rejected_up_front() -> None:
    with pytest.raises(ValueError, match="no task instance for: nope"):
        asyncio.run(run_with(Server({}), [ProbeSpec("a:free", "a", "nope")]))


def test_concurrency_cap_and_shared_semaphore() -> None:
    server = Server({}, delay_s=0.05)
    settings = plan_settings(max_concurrency=3)
    models = [f"m/{i}:free" for i in range(12)]

    async def go() -> list[PlanOutcome]:
        sem = asyncio.Semaphore(3)
        limiter = RateLimiter(60_000, None)
        async with build_http_client(
            settings, base_url=BASE, api_key="k", transport=httpx.MockTransport(server)
        ) as c:
            return await asyncio.gather(
                run_plan(c, specs_for(models[:6]), SUITE, settings, limiter, run_id="r", semaphore=sem),
                run_plan(c, specs_for(models[6:]), SUITE, settings, limiter, run_id="r", semaphore=sem),
            )

    outcomes = asyncio.run(go())
    assert sum(len(o.results) for o in outcomes) == 12
    assert server.max_in_flight == 3


def test_priority_order_is_respected() -> None:
    server = Server({})
    specs = [ProbeSpec(f"m/{i}:free", f"m/{i}", "arithmetic", priority=10 - i) for i in range(6)]
    asyncio.run(run_with(server, specs, settings=plan_settings(max_concurrency=1)))
    assert [m for _, m in server.log] == [f"m/{i}:free" for i in reversed(range(6))]


def test_wall_time_follows_the_rate_bound() -> None:
    """N requests at R/min take about N/R minutes when latency needs concurrency to keep pace."""
    rpm, n = 3000, 40  # one start every ~20 ms; each request takes 60 ms
    server = Server({}, delay_s=0.06)
    settings = plan_settings(max_concurrency=8)
    start = time.monotonic()
    outcome = asyncio.run(
        run_with(
            server,
            specs_for([f"m/{i}:free" for i in range(n)]),
            settings=settings,
            limiter=RateLimiter(rpm, None),
        )
    )
    wall = time.monotonic() - start
    assert len(outcome.results) == n and all(r.passed for r in outcome.results)
    starts = [t for t, _ in server.log]
    interval = 61 / rpm
    # Pacing holds on real time too, up to the event loop's wake-up jitter of a few ms.
    assert max_in_window(starts, interval * 10) <= 11
    assert starts[-1] - starts[0] >= (n - 1) * interval - 0.01
    bound = n / rpm * 60
    assert wall < bound * 1.6 + 0.5


# --- shared pools, stale resets, 429s inside a 200, quota accounting -------------------------------

SHARED_POOL_BODY = {
    "error": {
        "message": "Provider returned error",
        "code": 429,
        "metadata": {
            "raw": "m is temporarily rate-limited upstream.",
            "provider_name": "DigitalOcean",
            "is_byok": False,
            "limit_source": "upstream_provider_shared_pool",
            "remedy_hint": "Retry shortly",
        },
    },
    "user_id": "user_x",
}


def test_provider_pools_wait_for_the_clear_then_admit_one_at_a_time() -> None:
    vt = VirtualTime()
    pools = ProviderPools(clock=vt.clock, sleep=vt.sleep)
    pools.learn("a/x:free", "DigitalOcean")
    pools.learn("b/y:free", "DigitalOcean")
    pools.learn("c/z:free", "Chutes")
    log: list[tuple[str, float, float]] = []

    async def attempt(model: str, duration: float) -> None:
        async with pools.slot(model):
            start = vt.now
            await vt.sleep(duration)
            log.append((model, start, vt.now))

    async def scenario() -> None:
        pools.refuse(pools.key_of("a/x:free"), 120.0)
        assert pools.refused == {"DigitalOcean"}
        assert pools.wait_s("DigitalOcean") == 120.0
        await asyncio.gather(
            attempt("a/x:free", 5.0),
            attempt("b/y:free", 5.0),
            attempt("c/z:free", 5.0),
            attempt("a/x:free", 5.0),
        )

    asyncio.run(vt.run([scenario()]))
    other = [entry for entry in log if entry[0] == "c/z:free"]
    assert other == [("c/z:free", 0.0, 5.0)]  # another provider is not held back
    pooled = sorted((start, end) for model, start, end in log if model != "c/z:free")
    assert pooled[0][0] == 120.0  # nothing before the pool clears
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(pooled))  # serial
    assert pools.key_of("unknown/m:free") == "model:unknown/m:free"


def test_a_shared_pool_429_stops_concurrency_to_that_provider_and_retries_after_the_clear() -> None:
    """A pool that refuses concurrent requests and stays refused for a while, like the one observed."""
    clear_s = 0.4
    state = {"in_flight": 0, "refused_until": 0.0}
    log: list[tuple[str, float, float, int]] = []

    async def pool(request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        state["in_flight"] += 1
        try:
            if state["in_flight"] > 1 or now < state["refused_until"]:
                state["refused_until"] = max(state["refused_until"], now + clear_s)
                log.append((json.loads(request.content)["model"], now, now, 429))
                return httpx.Response(429, json=SHARED_POOL_BODY)
            await asyncio.sleep(0.05)
            log.append((json.loads(request.content)["model"], now, time.monotonic(), 200))
            return ok_stream(request)
        finally:
            state["in_flight"] -= 1

    models = ["m/a:free", "m/b:free"]
    specs = specs_for(models, ("arithmetic", "json_object", "reverse_words"))
    settings = plan_settings(shared_pool_clear_s=clear_s, max_attempts=3, backoff_base_s=0.0)
    outcome = asyncio.run(run_with(pool, specs, settings=settings))  # type: ignore[arg-type]

    finals = {(r.model_id, r.task): r for r in sorted(outcome.results, key=lambda r: r.attempt)}
    assert all(r.failure is None for r in finals.values()), [r.failure for r in finals.values()]
    refused = [r for r in outcome.results if r.failure is Failure.RATE_LIMIT_UPSTREAM]
    assert refused and all(r.limit_source == "upstream_provider_shared_pool" for r in refused)
    assert all(r.is_byok is False and r.remedy_hint == "Retry shortly" for r in refused)
    first_refusal = min(t for _, t, _, status in log if status == 429)
    passed = sorted((start, end) for _, start, end, status in log if status == 200 and start > first_refusal)
    # Every retry waited for the pool to clear, and from then on one request at a time.
    assert passed and passed[0][0] >= first_refusal + clear_s - 0.02
    assert all(prev_end <= start + 1e-3 for (_, prev_end), (start, _) in itertools.pairwise(passed))


def test_a_shared_pool_retry_after_is_honoured_over_the_default_clear() -> None:
    script = {
        "m/a:free": [
            lambda r: httpx.Response(429, json=SHARED_POOL_BODY, headers={"Retry-After": "0.3"}),
            ok_stream,
        ]
    }
    server = Server(script)
    settings = plan_settings(shared_pool_clear_s=3600.0)  # would never retry within the test
    outcome = asyncio.run(run_with(server, specs_for(list(script)), settings=settings))
    assert [r.failure for r in sorted(outcome.results, key=lambda r: r.attempt)] == [
        Failure.RATE_LIMIT_UPSTREAM,
        None,
    ]
    assert 0.28 <= _gap_after_first(server, "m/a:free") < 2.0


def test_a_reset_already_past_falls_back_to_backoff_not_immediate_retries() -> None:
    past_ms = str(int((time.time() - 3600) * 1000))
    per_min = {
        "headers": {"X-RateLimit-Reset": past_ms, "X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0"}
    }
    upstream = {
        "provider_name": "X",
        "raw": "rate-limited upstream",
        "headers": {"X-RateLimit-Reset": past_ms},
    }
    script = {
        "acct:free": [
            lambda r: error(429, PER_MIN, headers={"X-RateLimit-Reset": past_ms}, metadata=per_min)
        ],
        "up:free": [lambda r: error(429, UPSTREAM, metadata=upstream)],
    }
    server = Server(script)
    settings = plan_settings(backoff_base_s=0.2, backoff_max_s=2.0)
    outcome = asyncio.run(run_with(server, specs_for(list(script)), settings=settings))
    for model in script:
        attempts = [r for r in outcome.results if r.model_id == model]
        assert len(attempts) == 3 and all(r.retry_after_s is None for r in attempts)
        times = [t for t, m in server.log if m == model]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Equal-jitter backoff: at least half of 0.2 s, then half of 0.4 s; never "retry at once".
        assert gaps[0] >= 0.09 and gaps[1] >= 0.19, (model, gaps)


def test_a_429_inside_a_200_is_retried_like_a_status_429(fixtures_dir: Path) -> None:
    recorded = (
        fixtures_dir / "recorded" / "pydantic__pydantic-ai__test_openrouter_errors_raised@eb479b64.0.json"
    ).read_bytes()
    chunk = {"id": "gen-1", "object": "chat.completion.chunk", "choices": [], **json.loads(recorded)}
    in_stream = b": OPENROUTER PROCESSING\n\ndata: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"
    script = {
        "status:free": [
            lambda r: httpx.Response(429, content=recorded, headers={"content-type": "application/json"})
        ],
        "in-200:free": [
            lambda r: httpx.Response(200, content=recorded, headers={"content-type": "application/json"})
        ],
        "in-stream:free": [
            lambda r: httpx.Response(200, content=in_stream, headers={"content-type": "text/event-stream"})
        ],
    }
    server = Server(script)
    outcome = asyncio.run(run_with(server, specs_for(list(script))))
    by_model: dict[str, list[ProbeResult]] = defaultdict(list)
    for r in outcome.results:
        by_model[r.model_id].append(r)
    for model in script:
        assert [r.failure for r in by_model[model]] == [Failure.RATE_LIMIT_UPSTREAM] * 3, model
    assert dict(server.count) == dict.fromkeys(script, 3)


def test_every_attempt_counts_against_the_daily_budget() -> None:
    """Failed attempts and retries spend the daily quota like any other request."""
    script = {
        "flaky:free": [lambda r: error(502, UPSTREAM), lambda r: error(502, UPSTREAM), ok_stream],
        "gone:free": [lambda r: error(404, "No endpoints found for gone:free.")],
        "ok:free": [ok_stream],
    }
    server = Server(script)
    limiter = RateLimiter(60_000, 100)
    outcome = asyncio.run(run_with(server, specs_for(list(script)), limiter=limiter))
    assert len(outcome.results) == sum(server.count.values()) == 5
    assert limiter.used == 5 and limiter.remaining == 95


def test_a_resumed_probe_gets_only_the_attempts_it_has_left() -> None:
    """A probe checkpointed with one 502 (a retryable class) is sent again on resume, but only up to
    the attempt limit: with 3 allowed and 1 used, two more at most."""
    script = {"flaky:free": [lambda r: error(502, UPSTREAM)]}
    key = ("flaky:free", "arithmetic", 0)
    server = Server(script)
    outcome = asyncio.run(
        run_with(
            server,
            specs_for(list(script)),
            settings=plan_settings(max_attempts=3),
            attempt_offset={key: 1},
            attempts_used={key: 1},
        )
    )
    assert [r.attempt for r in outcome.results] == [2, 3]
    assert server.count["flaky:free"] == 2


def test_what_a_resume_sends_again() -> None:
    from datetime import UTC, datetime

    from freemodels import storage
    from freemodels.records import probes_frame

    def attempt(model: str, n: int, failure: Failure | None) -> ProbeResult:
        return ProbeResult(
            run_id="r", model_id=model, family="f", task="arithmetic", sample=0, attempt=n,
            started_at=datetime(2026, 11, 1, tzinfo=UTC), http_status=None, failure=failure,
            passed=failure is None,
        )  # fmt: skip

    rows = [
        attempt("ok", 1, None),
        attempt("retryable-once", 1, Failure.PROVIDER_ERROR),  # one attempt of three: send again
        attempt("retryable-spent", 1, Failure.PROVIDER_ERROR),
        attempt("retryable-spent", 2, Failure.TIMEOUT),
        attempt("retryable-spent", 3, Failure.PROVIDER_ERROR),  # all three used: final
        attempt("definitive", 1, Failure.WRONG_MODEL_ID),  # a retry cannot help: final
        attempt("account-429", 1, Failure.PROVIDER_ERROR),
        attempt("account-429", 2, Failure.RATE_LIMIT_ACCOUNT),  # the model was not asked: send again
    ]
    probes = probes_frame(rows)
    done = {m for m, _, _ in storage.completed_probe_keys(probes, max_attempts=3)}
    assert done == {"ok", "retryable-spent", "definitive"}
    # Without a limit (older callers) any recorded answer but an account 429 is final.
    assert {m for m, _, _ in storage.completed_probe_keys(probes)} == {
        "ok", "retryable-once", "retryable-spent", "definitive"
    }  # fmt: skip
    used = storage.attempts_used(probes)
    assert used[("account-429", "arithmetic", 0)] == 1 and used[("retryable-spent", "arithmetic", 0)] == 3


# --- deferred retries (retry_transient=False, not_before) ----------------------------------------


def test_without_in_round_retries_a_transient_failure_comes_back_deferred_with_its_wait() -> None:
    script = {
        "busy:free": [lambda r: error(429, UPSTREAM, headers={"Retry-After": "1.5"})],
        "down:free": [lambda r: error(502, UPSTREAM)],
        "gone:free": [lambda r: error(404, "No endpoints found for gone:free.")],
        "fine:free": [ok_stream],
    }
    server = Server(script)
    limiter = RateLimiter(60_000, None)
    before = limiter.now()
    outcome = asyncio.run(run_with(server, specs_for(list(script)), limiter=limiter, retry_transient=False))
    assert dict(server.count) == dict.fromkeys(script, 1)  # nothing retried within the call
    deferred = {d.spec.model_id: d.not_before for d in outcome.deferred}
    assert set(deferred) == {"busy:free", "down:free"}  # never the definitive one or the answer
    assert deferred["busy:free"] >= before + 1.5  # the server's hint, on the limiter's clock
    assert before <= deferred["down:free"] <= limiter.now() + plan_settings().backoff_max_s
    assert outcome.unsent == [] and not outcome.quota_exhausted


def test_a_deferred_retry_waits_for_not_before_and_numbers_its_attempt_on() -> None:
    script = {"flaky:free": [lambda r: error(502, UPSTREAM), ok_stream]}
    server = Server(script)
    limiter = RateLimiter(60_000, None)
    key = ("flaky:free", "arithmetic", 0)
    first = asyncio.run(run_with(server, specs_for(list(script)), limiter=limiter, retry_transient=False))
    (deferred,) = first.deferred
    wait_until = limiter.now() + 0.3
    second = asyncio.run(
        run_with(
            server,
            [deferred.spec],
            limiter=limiter,
            attempt_offset={key: 1},
            attempts_used={key: 1},
            not_before={key: wait_until},
        )
    )
    assert [r.attempt for r in second.results] == [2] and second.results[0].passed
    assert server.log[1][0] - server.log[0][0] >= 0.29


def test_a_deferral_never_exceeds_the_attempts_a_probe_has_left() -> None:
    script = {"down:free": [lambda r: error(502, UPSTREAM)]}
    key = ("down:free", "arithmetic", 0)
    outcome = asyncio.run(
        run_with(Server(script), specs_for(list(script)), retry_transient=False, attempts_used={key: 2})
    )
    assert len(outcome.results) == 1 and outcome.deferred == []  # its third and last attempt


def test_the_accounts_minute_limit_is_still_waited_out_within_the_call() -> None:
    first = {"done": False}

    def minute_limit_once(request: httpx.Request) -> httpx.Response:
        if not first["done"]:
            first["done"] = True
            return error(429, PER_MIN, headers={"Retry-After": "0.2"})
        return ok_stream(request)

    server = Server({"m:free": [minute_limit_once]})
    outcome = asyncio.run(run_with(server, specs_for(["m:free"]), retry_transient=False))
    assert [r.failure for r in outcome.results] == [Failure.RATE_LIMIT_ACCOUNT, None]
    assert outcome.deferred == []

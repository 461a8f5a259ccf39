"""The account-wide rate limiter and the plan runner: the only retry loop of the project.

OpenRouter's free tier allows R requests per minute (20) and D per day (50 or 1000), shared by every
free model of an account. :class:`RateLimiter` spaces request starts evenly, one every
``(60 s + margin) / R``: any R + 1 consecutive starts then span more than 60 s, so no 60-second
window (sliding or fixed) ever holds more than R, even when requests reach the server a little
earlier or later than they left; and N requests take about N / R minutes. It also counts the daily
budget and refuses to start a request once it is spent.

:func:`run_plan` sends a plan's probes concurrently (up to ``settings.max_concurrency`` in flight),
each start paced by the shared limiter, and retries an attempt only when its failure class says a
retry can help (:data:`~freemodels.failures.FAILURE_INFO`) and the server did not mark it
``retryable: false``. The wait before a retry follows the server's hint (``Retry-After``, then
``error.availability.retry_after``, then ``X-RateLimit-Reset``), else exponential backoff with
jitter. An account per-minute 429 pauses the limiter for every probe; an account per-day 429 (or the
end of the daily budget) stops the plan, and the probes never sent come back as ``unsent``.

A provider's shared pool of free capacity can refuse concurrent requests (an upstream 429 whose
``metadata.limit_source`` is ``upstream_provider_shared_pool``) while serial ones pass, and clears
after a while (about two minutes in one survey). After such a refusal the provider's requests go
through :class:`ProviderPools`: none before the pool clears (``Retry-After`` if the answer gives one,
else ``settings.shared_pool_clear_s``), then one at a time for the rest of the run; the refused
attempt is retried once the pool has cleared, not at once. Which provider serves a model is learnt
from its answers (the ``provider`` of a chunk, the ``provider_name`` of an error).

Every attempt counts against the daily budget, whatever it ends in: the limiter counts starts, and
retries and failed attempts are starts like any other (OpenRouter: "failed attempts still count
toward your daily quota").

Attempts line up in the limiter's ``admission`` queue and take a concurrency slot and a start time
one at a time, in plan order, retries behind the first attempts still waiting. The exception is a
retry after a timeout: its attempts are the longest of the run, and queued behind the rest of the plan
they would end the run long after everything else. It takes its slot and start directly, behind at
most one waiting attempt, so a stalling model's attempts follow one another from the start. It lines
up like the others while the daily budget could run short of the plan's remaining first attempts:
untested models come before second tries.

Deferred retries: with ``retry_transient=False`` a failure a retry could help (an upstream 429, a 5xx,
a timeout, ...) is not retried within the call. The probe comes back in :attr:`PlanOutcome.deferred`
with the earliest clock time its retry may start (the wait this loop would have made: the server's
hint, the backoff, or the time a shared pool needs to clear), and a later call retries it with that
time in ``not_before``. Waits, hints and attempt counts stay here; the caller (the adaptive plan of
:mod:`freemodels.rounds`) only decides *when in the run* the retry goes out. The account's own
per-minute limit is not the model's doing and is always waited out and retried within the call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from freemodels.classify import SHARED_POOL
from freemodels.failures import Failure
from freemodels.probe import AttemptOutcome, probe_attempt
from freemodels.records import ProbeResult, ProbeSpec
from freemodels.settings import Settings
from freemodels.suite import TaskInstance

logger = logging.getLogger(__name__)

DEFAULT_MARGIN_S = 1.0
"""Extra seconds per R starts: covers the spread between a request leaving and arriving (+1.7 %)."""


class ProviderPools:
    """Providers whose shared free pool refused a request: no start before it clears, then one at a time.

    ``learn`` records which provider served a model; ``refuse`` marks a provider's pool refused
    until ``clear_s`` seconds from now; ``slot(model_id)`` is held around each attempt to that
    model: for a refused provider it waits until the pool has cleared and lets one attempt in at a
    time, for any other model it returns at once. ``clock`` and ``sleep`` can be replaced to test
    with virtual time. One event loop only.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._provider_of: dict[str, str] = {}
        self._clear_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def learn(self, model_id: str, provider: str | None) -> None:
        """``provider`` served ``model_id`` (ignored when None or empty)."""
        if provider:
            self._provider_of[model_id] = provider

    def key_of(self, model_id: str) -> str:
        """The pool a model's requests go to: its provider if known, else the model itself."""
        return self._provider_of.get(model_id) or f"model:{model_id}"

    def refuse(self, key: str, clear_s: float) -> None:
        """The pool ``key`` refused a request: nothing before ``clear_s`` from now, then one at a time."""
        clear_at = self._clock() + max(0.0, clear_s)
        self._clear_at[key] = max(self._clear_at.get(key, -math.inf), clear_at)
        self._locks.setdefault(key, asyncio.Lock())

    @property
    def refused(self) -> frozenset[str]:
        """The pools that refused a request in this run (each is now served one request at a time)."""
        return frozenset(self._locks)

    def wait_s(self, key: str) -> float:
        """Seconds until the pool ``key`` clears (0 when it has, or never refused)."""
        return max(0.0, self._clear_at.get(key, -math.inf) - self._clock())

    @asynccontextmanager
    async def slot(self, model_id: str) -> AsyncIterator[None]:
        """Hold around one attempt to ``model_id`` (see the class docstring)."""
        key = self.key_of(model_id)
        lock = self._locks.get(key)
        if lock is None:
            yield
            return
        async with lock:
            while (wait := self.wait_s(key)) > 0:
                await self._sleep(wait)
            yield


class RateLimiter:
    """Even pacing of request starts (GCRA without burst) plus a daily request budget.

    ``acquire()`` waits for the next free start slot and returns True, or returns False at once when
    the daily budget is spent (or the server said it is). Slots are handed out atomically (no await
    between reading and advancing the schedule), so any number of concurrent callers are safe on
    one event loop. ``clock`` and ``sleep`` can be replaced to test with virtual time.
    """

    def __init__(
        self,
        requests_per_minute: int,
        requests_per_day: int | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        margin_s: float = DEFAULT_MARGIN_S,
    ) -> None:
        if requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1")
        if requests_per_day is not None and requests_per_day < 0:
            raise ValueError("requests_per_day must be None or at least 0")
        if margin_s < 0:
            raise ValueError("margin_s must not be negative")
        self.requests_per_minute = requests_per_minute
        self.requests_per_day = requests_per_day
        self.interval_s = (60.0 + margin_s) / requests_per_minute
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf  # earliest start of the next slot
        self._paused_until = -math.inf
        self._used = 0  # starts granted
        self._pending = 0  # callers holding a slot they are waiting for
        self._day_exhausted = False
        self.admission = asyncio.Lock()
        """Attempts of every plan that shares this limiter line up here, in order."""
        self.pools = ProviderPools(clock=clock, sleep=sleep)
        """Providers whose shared pool refused a request, shared by every plan of the account."""

    @property
    def used(self) -> int:
        """Requests started through this limiter."""
        return self._used

    def now(self) -> float:
        """The limiter's clock (``time.monotonic`` unless replaced): the time base of ``not_before``."""
        return self._clock()

    async def sleep_until(self, t: float) -> None:
        """Wait until clock time ``t`` (at once when it has passed)."""
        wait = t - self._clock()
        if wait > 0:
            await self._sleep(wait)

    @property
    def remaining(self) -> int | None:
        """Daily budget left (None: unlimited); 0 once the server reported the quota spent."""
        if self._day_exhausted:
            return 0
        if self.requests_per_day is None:
            return None
        return max(0, self.requests_per_day - self._used)

    @property
    def day_exhausted(self) -> bool:
        """True once the budget is spent or the server answered with its daily limit."""
        return self._day_exhausted or (
            self.requests_per_day is not None and self._used >= self.requests_per_day
        )

    def mark_day_exhausted(self) -> None:
        """The server said the daily quota is spent: refuse every further start."""
        self._day_exhausted = True

    def pause_until(self, t: float) -> None:
        """No start before clock time ``t`` (an account 429 pauses every probe)."""
        self._paused_until = max(self._paused_until, t)
        self._next = max(self._next, t)

    def pause_for(self, seconds: float) -> None:
        """No start in the next ``seconds``."""
        self.pause_until(self._clock() + max(0.0, seconds))

    async def acquire(self) -> bool:
        """Wait for a start slot; False (without waiting) when the daily budget is spent."""
        while True:
            if self._day_exhausted:
                return False
            if self.requests_per_day is not None and self._used + self._pending >= self.requests_per_day:
                return False
            now = self._clock()
            slot = max(now, self._next, self._paused_until)
            self._next = slot + self.interval_s
            pause_seen = self._paused_until
            self._pending += 1
            try:
                if slot > now:
                    await self._sleep(slot - now)
            finally:
                self._pending -= 1
            if self._day_exhausted:
                return False
            if self._paused_until > pause_seen and self._paused_until > slot:
                continue  # a pause began while we waited: queue again behind it
            self._used += 1
            return True


ProbeKey = tuple[str, str, int]  # (model_id, task, sample)


@dataclass(frozen=True, slots=True)
class Deferred:
    """A probe whose retry was left for later (``retry_transient=False``)."""

    spec: ProbeSpec
    not_before: float  # earliest start of its retry, on the limiter's clock


@dataclass(frozen=True, slots=True)
class PlanOutcome:
    """What a plan run produced."""

    results: list[ProbeResult] = field(default_factory=list)  # every attempt, in completion order
    unsent: list[ProbeSpec] = field(default_factory=list)  # probes never sent (quota)
    quota_exhausted: bool = False
    deferred: list[Deferred] = field(default_factory=list)  # retries left for a later call


def backoff_delay_s(
    attempt: int, hint_s: float | None, settings: Settings, rng: random.Random
) -> float | None:
    """Seconds to wait before the next attempt, or None when waiting cannot fit.

    A server hint wins as given; a hint longer than ``settings.backoff_max_s`` means no retry within
    this run (retrying earlier than the server allows only wastes quota). Without a hint:
    exponential backoff from ``settings.backoff_base_s``, capped at ``backoff_max_s``, with "equal
    jitter" (a random point in the upper half of the step).
    """
    if hint_s is not None:
        return hint_s if hint_s <= settings.backoff_max_s else None
    step = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** max(0, attempt - 1))
    return rng.uniform(step / 2, step)


async def run_plan(
    client: httpx.AsyncClient,
    specs: Sequence[ProbeSpec],
    tasks: Mapping[str, TaskInstance],
    settings: Settings,
    limiter: RateLimiter,
    *,
    run_id: str,
    on_result: Callable[[ProbeResult], None] | None = None,
    semaphore: asyncio.Semaphore | None = None,
    attempt_offset: Mapping[tuple[str, str, int], int] | None = None,
    attempts_used: Mapping[tuple[str, str, int], int] | None = None,
    cost_guard: bool = True,
    reset_epoch_ms: bool = True,
    rng: random.Random | None = None,
    retry_transient: bool = True,
    not_before: Mapping[ProbeKey, float] | None = None,
    models: Sequence[str] | None = None,
    on_attempt: Callable[[ProbeSpec, AttemptOutcome], None] | None = None,
) -> PlanOutcome:
    """Send every probe of ``specs`` (lowest ``priority`` first) within the limiter's limits.

    ``semaphore`` caps probes in flight (share one between concurrent plans of a run; default:
    ``settings.max_concurrency`` for this plan alone). ``attempt_offset`` maps (model, task,
    sample) to attempts already recorded by an earlier, interrupted run, so attempt numbers go on
    from there; ``attempts_used`` to those of them that reached the model, so a resumed probe gets
    only the attempts it has left (at least one). ``reset_epoch_ms`` says whether the source's
    ``X-RateLimit-Reset`` is OpenRouter's epoch milliseconds (see :mod:`freemodels.source`).
    ``on_result`` receives every attempt as it completes; an exception it raises stops
    the plan. A bug inside one probe is logged and recorded as that probe's failure
    (``error_code="internal_error"``) without stopping the others. ``retry_transient=False`` leaves
    the retries a failure allows for a later call (:attr:`PlanOutcome.deferred`); ``not_before``
    maps probes to the earliest clock time (:meth:`RateLimiter.now`) their first attempt here may
    start (see the module docstring). ``models`` sends OpenRouter's fallback array with every
    attempt (the drill of the rotation); ``on_attempt`` receives every attempt's whole outcome with
    its spec (what the result does not keep, such as the model that served).
    """
    missing = sorted({spec.task for spec in specs} - set(tasks))
    if missing:
        raise ValueError(f"no task instance for: {', '.join(missing)}")
    ordered = sorted(specs, key=lambda spec: spec.priority)
    sem = semaphore if semaphore is not None else asyncio.Semaphore(settings.max_concurrency)
    offsets = attempt_offset or {}
    used = attempts_used or {}
    rand = rng if rng is not None else random.Random()
    results: list[ProbeResult] = []
    unsent: list[ProbeSpec] = []
    deferred: list[Deferred] = []
    waits = not_before or {}
    stop = asyncio.Event()
    unstarted = len(ordered)  # first attempts of this plan not started yet (or given up)

    def record(result: ProbeResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    async def take_start() -> bool:
        """A concurrency slot, then a start from the limiter; False (slot kept): stopped or no budget."""
        await sem.acquire()
        try:
            return not stop.is_set() and await limiter.acquire()
        except BaseException:
            sem.release()
            raise

    @asynccontextmanager
    async def start(first: bool, ahead: bool) -> AsyncIterator[bool]:
        """Hold a slot for one attempt; yields whether it may be sent (see the module docstring)."""
        nonlocal unstarted
        remaining = limiter.remaining
        if ahead and (remaining is None or remaining > unstarted):
            granted = await take_start()
        else:
            async with limiter.admission:
                granted = await take_start()
        if first:
            unstarted -= 1
        try:
            yield granted
        finally:
            sem.release()

    pools = limiter.pools

    async def run_spec(spec: ProbeSpec) -> None:
        key = (spec.model_id, spec.task, spec.sample)
        base = offsets.get(key, 0)
        allowed = max(1, settings.max_attempts - used.get(key, 0))
        ahead = False
        if key in waits:
            await limiter.sleep_until(waits[key])
        for n in range(1, allowed + 1):
            async with pools.slot(spec.model_id), start(n == 1, ahead) as granted:
                if not granted:
                    stop.set()
                    if n == 1:
                        unsent.append(spec)
                    return
                outcome = await _attempt_isolated(
                    client,
                    run_id=run_id,
                    spec=spec,
                    task=tasks[spec.task],
                    settings=settings,
                    attempt=base + n,
                    cost_guard=cost_guard,
                    reset_epoch_ms=reset_epoch_ms,
                    models=models,
                )
            record(outcome.result)
            if on_attempt is not None:
                on_attempt(spec, outcome)
            envelope = outcome.envelope
            pools.learn(
                spec.model_id,
                (envelope.provider_name if envelope is not None else None) or outcome.result.provider,
            )
            if outcome.limit_scope == "day":
                limiter.mark_day_exhausted()
                stop.set()
                return
            if outcome.result.failure is None or not outcome.retryable:
                return
            ahead = outcome.result.failure is Failure.TIMEOUT
            hint = outcome.result.retry_after_s
            delay = backoff_delay_s(n, hint, settings, rand)
            if envelope is not None and envelope.limit_source == SHARED_POOL:
                # The provider's shared pool refused: retry once it has cleared, one at a time.
                pool = pools.key_of(spec.model_id)
                pools.refuse(pool, hint if hint is not None else settings.shared_pool_clear_s)
                delay = pools.wait_s(pool)
            if outcome.limit_scope == "minute":
                # The account's own minute limit: nobody may start until it resets (the server's
                # word when it gave one, even if that is too long for this probe to retry).
                limiter.pause_for(hint if hint is not None else delay or 0.0)
            if delay is None or n == allowed:
                return
            if not retry_transient and outcome.limit_scope is None:
                deferred.append(Deferred(spec, limiter.now() + delay))
                return
            if await _wait_or_stop(stop, delay):
                return

    try:
        async with asyncio.TaskGroup() as group:
            for spec in ordered:
                group.create_task(run_spec(spec))
    except BaseExceptionGroup as failed:
        # Only on_result (the caller's callback) can raise here; hand its error back unwrapped.
        if len(failed.exceptions) == 1:
            raise failed.exceptions[0] from None
        raise
    return PlanOutcome(results=results, unsent=unsent, quota_exhausted=stop.is_set(), deferred=deferred)


async def _wait_or_stop(stop: asyncio.Event, delay: float) -> bool:
    """Sleep ``delay`` seconds; True if the plan was stopped meanwhile."""
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def _attempt_isolated(
    client: httpx.AsyncClient,
    *,
    run_id: str,
    spec: ProbeSpec,
    task: TaskInstance,
    settings: Settings,
    attempt: int,
    cost_guard: bool,
    reset_epoch_ms: bool = True,
    models: Sequence[str] | None = None,
) -> AttemptOutcome:
    """One attempt; an unexpected exception (a bug) becomes a recorded failure of this probe only.

    :func:`~freemodels.probe.probe_attempt` already turns everything a server can do into a
    classified result. What is left is a defect in this program: it is logged with its traceback
    and recorded with ``error_code="internal_error"``, so it is visible in the data instead of
    cancelling every other probe of the run.
    """
    started_at = datetime.now(UTC)
    (value,) = await asyncio.gather(
        probe_attempt(
            client,
            run_id=run_id,
            spec=spec,
            task=task,
            settings=settings,
            attempt=attempt,
            cost_guard=cost_guard,
            reset_epoch_ms=reset_epoch_ms,
            models=models,
        ),
        return_exceptions=True,
    )
    if isinstance(value, AttemptOutcome):
        return value
    if isinstance(value, asyncio.CancelledError):
        raise value
    logger.error("internal error while probing %s (%s): %r", spec.model_id, spec.task, value, exc_info=value)
    result = ProbeResult(
        run_id=run_id,
        model_id=spec.model_id,
        family=spec.family,
        task=spec.task,
        sample=spec.sample,
        attempt=attempt,
        started_at=started_at,
        http_status=None,
        failure=Failure.TRANSPORT_ERROR,
        passed=False,
        error_code="internal_error",
        message=f"internal error: {type(value).__name__}"[:200],
    )
    return AttemptOutcome(result=result, envelope=None, retryable=False, limit_scope=None)

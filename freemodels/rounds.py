"""The adaptive plan: which probes go out next, decided round by round as the answers arrive.

A free account has 50 requests a day and 20 a minute, shared by every free model; the standard suite
asks each model three tasks. Sending whole suites model after model leaves half the free models
without a verdict. The plan here spends the budget where it tells the most:

1. **Screening.** One probe per model first: :data:`~freemodels.suite.SCREENING_TASK`, sample 0,
   family-first (every family's newest model, then every family's second, ...; families by name).
   Models settled without a chat request (the free signals: an endpoints listing without endpoints,
   a model the account's ``/models/user`` leaves out) are not screened.
2. **Definitive stop.** A failure whose class settles the model (wrong id, no endpoints, free variant
   ended, the account's privacy settings, allowed providers or listed apps, capability, credits,
   auth, moderation: :data:`~freemodels.failures.SETTLING`) ends the model after that one request.
3. **Deferred retry.** While the budget is short (it cannot pay one more request for every probe
   still wanted), a transient failure (upstream 429, 5xx, timeout, empty reply, ...) is not retried at
   once: screening goes on, and the model gets its second look in a *retries* round after every model
   was screened. That settles its verdict; a third attempt, if its class allows one, waits until the
   deepening is done.
4. **Deepening.** The remaining tasks and samples go first to the models that can still enter the
   rotation (every answer so far passed), fastest first (median total time of their answers), spread
   over families and providers (a model from a family *and* a provider not yet among the deepened
   models first, then a new family, then a new provider, as the rotation itself picks its chain);
   models answering only in the reasoning channel after those answering in ``content``. Then the
   models that failed a task. While the budget is short a deepening round takes ``batch`` models
   with their whole remaining suite, so a candidate that fails is replaced by the next in the
   following round. Then the retries still allowed (the third attempt of a transient failure),
   and last the remaining tasks of models that never answered.
5. With a budget that covers every probe still wanted, nothing is deferred: every model gets the
   whole suite with the retries the scheduler allows, as a full run does (a model settled after one
   request keeps the verdict the full run would give it).

A round is a batch of probes that goes out together (through :func:`freemodels.scheduler.run_plan`,
the one retry loop); the next round is decided when it has ended. Which attempts happened is all the
plan needs to know, so a resumed run rebuilds it from its checkpoints and continues the rounds:
:meth:`RoundPlanner.observe` takes the attempts of the earlier process like new ones.

Pure: no I/O, no clock (``not_before`` values are the executor's clock, passed through).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import polars as pl

from freemodels.failures import FAILURE_INFO, SETTLING, Failure
from freemodels.records import ProbeResult, ProbeSpec

ProbeKey = tuple[str, str, int]  # (model_id, task, sample)


ACCOUNT_LIMIT_STALLED = (
    "The account's own request limit refused probes on every attempt allowed, after waiting for its "
    "reset: they were left for --resume instead of spending more requests on refusals."
)
"""The run note of a run that left probes to the account's own limit
(:attr:`RoundPlanner.left_to_account_limit`)."""


@dataclass(frozen=True, slots=True)
class LeftUntested:
    """Why a run left models for later, in words for the console and the reports."""

    short: str  # "quota", "budget", "account limit"
    by: str  # completes "left untested by ..."
    because: str  # completes "Left untested because ..."
    resume_when: str  # completes "continue with discovery run --resume ID ..."


def left_untested(notes: Sequence[str], budget: int | None, quota_after: int | None) -> LeftUntested:
    """Why a run's probing stopped with models left (the one rule for every label that says it): the
    account's limit ended the rounds (its note), else the run's own ``--budget`` while the daily
    quota still had requests, else the daily quota."""
    if ACCOUNT_LIMIT_STALLED in notes:
        return LeftUntested(
            "account limit",
            "the account's own limit",
            "the account's own request limit refused their probes on every attempt allowed",
            "when the account's limit allows requests again",
        )
    if budget is not None and (quota_after is None or quota_after > 0):
        return LeftUntested(
            "budget",
            "the run's budget",
            f"the run's budget of {budget} requests was spent",
            "with a budget that allows more (`--budget N`, or none)",
        )
    return LeftUntested(
        "quota", "the daily quota", "the daily request quota ran out", "when the quota resets (00:00 UTC)"
    )


class Phase(StrEnum):
    """What a round is for."""

    SCREENING = "screening"
    RETRIES = "retries"
    DEEPENING = "deepening"


@dataclass(frozen=True, slots=True)
class PlanModel:
    """A free model as the plan sees it."""

    model_id: str
    family: str
    created: int | None = None
    provider: str | None = None  # from the endpoints listing; answers name it too


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the plan needs of one recorded attempt (see :meth:`Attempt.of`)."""

    model_id: str
    task: str
    sample: int
    failure: Failure | None
    passed: bool = False
    total_ms: float | None = None
    provider: str | None = None
    in_reasoning: bool = False

    @classmethod
    def of(cls, result: ProbeResult) -> Attempt:
        return cls(
            model_id=result.model_id,
            task=result.task,
            sample=result.sample,
            failure=result.failure,
            passed=result.passed,
            total_ms=result.total_ms,
            provider=result.provider,
            in_reasoning=result.answer_channel == "reasoning",
        )


def attempts_from_frame(probes: pl.DataFrame) -> list[Attempt]:
    """The attempts of a probes table (checkpoints of an earlier process), in attempt order."""
    if probes.is_empty():
        return []
    found: list[Attempt] = []
    rows = probes.sort(["model_id", "task", "sample", "attempt"]).select(
        "model_id", "task", "sample", "failure", "passed", "total_ms", "provider", "answer_channel"
    )
    for model_id, task, sample, failure, passed, total_ms, provider, channel in rows.iter_rows():
        try:
            kind = Failure(failure) if failure is not None else None
        except ValueError:
            kind = Failure.TRANSPORT_ERROR if not passed else None  # a class this program does not know
        found.append(
            Attempt(
                model_id=model_id,
                task=task,
                sample=int(sample),
                failure=kind,
                passed=bool(passed),
                total_ms=total_ms,
                provider=provider,
                in_reasoning=channel == "reasoning",
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class Round:
    """One batch of probes to send together."""

    number: int
    phase: Phase
    specs: tuple[ProbeSpec, ...]
    retry_transient: bool  # the scheduler may retry a transient failure within the round
    not_before: Mapping[ProbeKey, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``round-2-retries``: project text only, safe as a Prefect task-run name."""
        return f"round-{self.number}-{self.phase.value}"

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(spec.model_id for spec in self.specs))


@dataclass(slots=True)
class _Probe:
    asked: int = 0  # attempts that reached the model (the account's own 429s left out)
    failure: Failure | None = None  # of the latest asked attempt
    passed: bool = False
    total_ms: float | None = None
    in_reasoning: bool = False


def _retryable(failure: Failure) -> bool:
    return FAILURE_INFO[failure].retryable


class RoundPlanner:
    """Decides the rounds of one run (see the module docstring).

    ``models`` are the run's free models; ``settled`` maps models settled without a chat request to
    their class (they are never probed; leave it empty to probe everything). ``tasks`` is the suite in
    order, ``screening_task`` one of them. ``max_attempts`` is the scheduler's limit per probe;
    ``batch`` the number of models a short-budget deepening round takes.
    """

    def __init__(
        self,
        models: Sequence[PlanModel],
        tasks: Sequence[str],
        *,
        screening_task: str,
        samples: int = 1,
        max_attempts: int = 3,
        batch: int = 3,
        settled: Mapping[str, Failure] | None = None,
        history: Iterable[Attempt] = (),
    ) -> None:
        if screening_task not in tasks:
            raise ValueError(f"screening task {screening_task!r} is not in the suite")
        if samples < 1 or max_attempts < 1 or batch < 1:
            raise ValueError("samples, max_attempts and batch must be at least 1")
        self.tasks = tuple(tasks)
        self.screening_task = screening_task
        self.samples = samples
        self.max_attempts = max_attempts
        self.batch = batch
        self.settled: dict[str, Failure] = dict(settled or {})
        self._models = {m.model_id: m for m in models}
        self._order = _family_first(models)
        self._probes: dict[ProbeKey, _Probe] = {}
        self._provider: dict[str, str] = {m.model_id: m.provider for m in models if m.provider}
        self._definitive: dict[str, Failure] = {}
        self._deferred: dict[ProbeKey, float | None] = {}  # retry wanted later (None: no wait known)
        self._blocked: set[ProbeKey] = set()  # retryable, but not again in this run
        self._limited: dict[ProbeKey, int] = {}  # the account's 429s per probe, in this process
        self._round_asked = 0  # attempts of the current round that reached a model
        self._round_limited = 0  # attempts of the current round the account's limit refused
        self.stalled = False  # a whole round met only the account's limit: the rounds end here
        self._round_keys: set[ProbeKey] = set()
        self.rounds = 0
        self.requests = 0  # attempts observed, the account's 429s included (each cost a request)
        self.retries = 0  # attempts after the first of their probe
        self._seen: set[ProbeKey] = set()
        self._judged: set[str] = set()  # models judged so far (see judged())
        for attempt in history:
            self.observe(attempt)
        self._limited.clear()  # an earlier process's account 429s do not hold this one back
        self._round_asked = self._round_limited = 0
        # An earlier process left these waiting for a retry: the plan decides when.
        for key, probe in self._probes.items():
            if self._state(key, probe) == "retry":
                self._deferred.setdefault(key, None)

    # --- what happened ---------------------------------------------------------------------------

    def observe(self, attempt: Attempt | ProbeResult) -> None:
        """Record one attempt (in the order they completed)."""
        if isinstance(attempt, ProbeResult):
            attempt = Attempt.of(attempt)
        if attempt.model_id not in self._models:
            return
        key = (attempt.model_id, attempt.task, attempt.sample)
        self.requests += 1
        if key in self._seen:
            self.retries += 1
        self._seen.add(key)
        if attempt.failure is Failure.RATE_LIMIT_ACCOUNT:
            # The account's limit: the model was never asked. The scheduler already waited for the
            # limit's reset between these attempts; a probe that met it max_attempts times in this
            # process is left for a later run (--resume) instead of being planned again and again.
            self._limited[key] = self._limited.get(key, 0) + 1
            self._round_limited += 1
            return
        self._round_asked += 1
        probe = self._probes.setdefault(key, _Probe())
        probe.asked += 1
        probe.failure = attempt.failure
        probe.passed = attempt.passed
        probe.total_ms = attempt.total_ms
        probe.in_reasoning = attempt.in_reasoning
        if attempt.provider:
            self._provider[attempt.model_id] = attempt.provider
        if attempt.failure in SETTLING:
            self._definitive.setdefault(attempt.model_id, attempt.failure)
        self._deferred.pop(key, None)

    def end_round(self, deferred: Mapping[ProbeKey, float]) -> None:
        """The round sent last has ended; ``deferred`` are the retries the executor left for later
        (with their earliest start). A probe of that round still waiting for a retry but not among
        them is not retried again in this run (the server asked for a longer wait than a run makes,
        or the budget ended). A round whose every attempt met the account's own limit ends the rounds
        (:attr:`stalled`): the scheduler already waited for the limit's reset, so the rest waits for a
        later run (``--resume``) instead of spending the day's requests on more refusals."""
        if self._round_limited and not self._round_asked:
            self.stalled = True
        self._round_asked = self._round_limited = 0
        for key in self._round_keys:
            probe = self._probes.get(key)
            if probe is None or self._state(key, probe) != "retry":
                continue
            if key in deferred:
                self._deferred[key] = deferred[key]
            else:
                self._deferred.pop(key, None)
                self._blocked.add(key)
        self._round_keys = set()

    # --- views -------------------------------------------------------------------------------------

    def _state(self, key: ProbeKey, probe: _Probe | None) -> str:
        """``pending`` (never asked), ``final``, ``retry`` (a retryable failure with attempts left) or
        ``blocked`` (one the executor would not retry in this run: see :meth:`end_round`; or one that
        met the account's own limit ``max_attempts`` times in this process)."""
        if probe is None or probe.asked == 0:
            return "blocked" if self._limited.get(key, 0) >= self.max_attempts else "pending"
        if probe.failure is None or not _retryable(probe.failure) or probe.asked >= self.max_attempts:
            return "final"
        return "blocked" if key in self._blocked else "retry"

    def _keys(self, model_id: str) -> list[ProbeKey]:
        return [(model_id, t, s) for s in range(self.samples) for t in self.tasks]

    def _closed(self, model_id: str) -> bool:
        """Settled (free signals or a settling answer): nothing more is sent to it."""
        return model_id in self.settled or model_id in self._definitive

    def _asked_keys(self, model_id: str) -> list[tuple[ProbeKey, _Probe]]:
        return [(k, p) for k in self._keys(model_id) if (p := self._probes.get(k)) is not None and p.asked]

    def _answered(self, model_id: str) -> bool:
        """Some probe got the model's own answer (passed or not), not only a transient failure."""
        return any(p.failure is None or not _retryable(p.failure) for _, p in self._asked_keys(model_id))

    def _candidate(self, model_id: str) -> bool:
        """Answered and no probe failed for good so far: it can still enter the rotation."""
        asked = self._asked_keys(model_id)
        return self._answered(model_id) and all(p.passed for k, p in asked if self._state(k, p) == "final")

    def judged(self, model_id: str) -> bool:
        """Has a verdict: settled, answered, or failed transiently and had its second look. Once
        judged, always judged: a later probe of the suite failing once does not take the verdict
        back (the progress line's count never goes down)."""
        if model_id in self._judged:
            return True
        found = self._closed(model_id) or self._answered(model_id)
        if not found:
            asked = self._asked_keys(model_id)
            found = bool(asked) and all(p.asked >= 2 or self._state(k, p) != "retry" for k, p in asked)
        if found:
            self._judged.add(model_id)
        return found

    @property
    def judged_models(self) -> list[str]:
        return [m for m in self._order if self.judged(m)]

    def wanted(self, model_id: str) -> list[ProbeKey]:
        """Probes of ``model_id`` still to send (pending, or waiting for a retry)."""
        if self._closed(model_id):
            return []
        return [
            k for k in self._keys(model_id) if self._state(k, self._probes.get(k)) in ("pending", "retry")
        ]

    def need(self) -> int:
        """Requests that would give every probe still wanted one more attempt."""
        return sum(len(self.wanted(m)) for m in self._order)

    @property
    def left_to_account_limit(self) -> bool:
        """Probes were given up in this process because the account's own limit refused every attempt
        (or a round met nothing but that limit): a later run can send them."""
        return self.stalled or any(
            n >= self.max_attempts and k not in self._probes and not self._closed(k[0])
            for k, n in self._limited.items()
        )

    def models_left(self) -> list[str]:
        """Models with probes still to send (a later run, or ``--resume``, can continue them): wanted
        ones, and those the account's own limit kept from the model in this process."""
        return [
            m
            for m in self._order
            if self.wanted(m)
            or (
                not self._closed(m)
                and any(
                    self._limited.get(k, 0) >= self.max_attempts and k not in self._probes
                    for k in self._keys(m)
                )
            )
        ]

    def unjudged(self) -> list[str]:
        return [m for m in self._order if not self.judged(m)]

    def planned(self, budget_left: int | None) -> int:
        """Requests the rest of the run will send at most: what is wanted, within the budget."""
        need = self.need()
        return need if budget_left is None else min(need, max(0, budget_left))

    def speed_ms(self, model_id: str) -> float | None:
        """Median total time of the model's answers (None before it answered)."""
        times = [
            p.total_ms
            for _, p in self._asked_keys(model_id)
            if p.total_ms is not None and (p.failure is None or not _retryable(p.failure))
        ]
        return statistics.median(times) if times else None

    # --- the next round ------------------------------------------------------------------------

    def next_round(self, budget_left: int | None) -> Round | None:
        """The next batch to send with ``budget_left`` requests left (None: no daily limit), or None
        when nothing is left to send or no budget remains."""
        if self.stalled or (budget_left is not None and budget_left <= 0):
            return None
        short = budget_left is not None and budget_left < self.need()
        limit = budget_left if budget_left is not None else None

        unscreened = [
            m
            for m in self._order
            if not self._closed(m)
            and not self._asked_keys(m)
            and self._state(self._screening_key(m), None) == "pending"
        ]
        if unscreened:
            keys = [self._screening_key(m) for m in unscreened]
            return self._make(Phase.SCREENING, _cut(keys, limit), retry_transient=not short)

        second_look: dict[str, ProbeKey] = {}  # one probe per model: its first one waiting
        for m in self._order:
            if self._closed(m) or self.judged(m):
                continue
            waiting = [k for k in self.wanted(m) if k in self._deferred]
            if waiting:
                second_look[m] = waiting[0]
        if second_look:
            keys = list(second_look.values())
            return self._make(Phase.RETRIES, _cut(keys, limit), retry_transient=not short)

        answered, transient_only = self._deepening_groups()
        if not short:  # everything fits: one round for every model's remaining suite
            answered, transient_only = [*answered, *transient_only], []
        if answered:
            keys = self._fill(answered, limit, short=short)
            if keys:
                return self._make(Phase.DEEPENING, keys, retry_transient=True)

        later = [k for m in self._order for k in self.wanted(m) if k in self._deferred]
        if later:
            return self._make(Phase.RETRIES, _cut(later, limit), retry_transient=True)

        if transient_only:
            keys = self._fill(transient_only, limit, short=short)
            if keys:
                return self._make(Phase.DEEPENING, keys, retry_transient=True)
        return None

    def _screening_key(self, model_id: str) -> ProbeKey:
        return (model_id, self.screening_task, 0)

    def _deepening_groups(
        self,
    ) -> tuple[list[tuple[str, list[ProbeKey]]], list[tuple[str, list[ProbeKey]]]]:
        """Models with probes never sent, in deepening order (see the module docstring): those that
        answered (rotation candidates first), and those that only ever failed transiently."""

        def pending(m: str) -> list[ProbeKey]:
            return [k for k in self.wanted(m) if self._state(k, self._probes.get(k)) == "pending"]

        open_models = [m for m in self._order if not self._closed(m) and pending(m)]
        candidates = [m for m in open_models if self._candidate(m)]
        failed_a_task = [m for m in open_models if self._answered(m) and m not in candidates]
        transient_only = [m for m in open_models if not self._answered(m)]
        deepened = [m for m in self._order if not self._closed(m) and self._candidate(m) and not pending(m)]
        answered = [*self._spread(candidates, already=deepened), *self._spread(failed_a_task, already=[])]
        return [(m, pending(m)) for m in answered], [(m, pending(m)) for m in transient_only]

    def _spread(self, models: Sequence[str], *, already: Sequence[str]) -> list[str]:
        """``models`` fastest first, in content before in reasoning, then spread over families and
        providers (the rotation's own preference order), counting ``already`` as taken."""

        def in_reasoning(m: str) -> bool:
            return any(p.in_reasoning for _, p in self._asked_keys(m))

        def speed(m: str) -> tuple[float, str]:
            value = self.speed_ms(m)
            return (value if value is not None else float("inf"), m)

        families = {self._models[m].family for m in already}
        providers = {p for m in already if (p := self._provider.get(m))}
        picked: list[str] = []
        for group in ([m for m in models if not in_reasoning(m)], [m for m in models if in_reasoning(m)]):
            remaining = sorted(group, key=speed)
            while remaining:
                pick = _next_pick(remaining, families, providers, self._models, self._provider)
                remaining.remove(pick)
                picked.append(pick)
                families.add(self._models[pick].family)
                if (provider := self._provider.get(pick)) is not None:
                    providers.add(provider)
        return picked

    def _fill(
        self, groups: Sequence[tuple[str, list[ProbeKey]]], limit: int | None, *, short: bool
    ) -> list[ProbeKey]:
        """The deepening round: whole remaining suites in order, ``batch`` models while short."""
        if not short:
            return _cut([k for _, keys in groups for k in keys], limit)
        chosen: list[ProbeKey] = []
        models = 0
        for _, keys in groups:
            if models >= self.batch:
                break
            if limit is not None and len(chosen) + len(keys) > limit:
                continue
            chosen.extend(keys)
            models += 1
        if not chosen and groups:  # nothing whole fits: part of the best one's suite
            chosen = _cut(groups[0][1], limit)
        return chosen

    def _make(self, phase: Phase, keys: Sequence[ProbeKey], *, retry_transient: bool) -> Round:
        self.rounds += 1
        specs = tuple(
            ProbeSpec(model_id=m, family=self._models[m].family, task=t, sample=s, priority=i)
            for i, (m, t, s) in enumerate(keys)
        )
        waits = {k: w for k in keys if (w := self._deferred.get(k)) is not None}
        self._round_keys = set(keys)
        return Round(self.rounds, phase, specs, retry_transient, waits)


def _cut(keys: Sequence[ProbeKey], limit: int | None) -> list[ProbeKey]:
    return list(keys) if limit is None else list(keys[:limit])


def _next_pick(
    remaining: Sequence[str],
    families: set[str],
    providers: set[str],
    models: Mapping[str, PlanModel],
    provider_of: Mapping[str, str],
) -> str:
    """The first of ``remaining`` from a new family and a new provider, else a new family, else a
    new provider, else the first (an unknown provider never counts as a repeat)."""

    def new_family(m: str) -> bool:
        return models[m].family not in families

    def new_provider(m: str) -> bool:
        provider = provider_of.get(m)
        return provider is None or provider not in providers

    for prefer in (lambda m: new_family(m) and new_provider(m), new_family, new_provider):
        for m in remaining:
            if prefer(m):
                return m
    return remaining[0]


def _family_first(models: Sequence[PlanModel]) -> list[str]:
    """Every family's newest model, then every family's second newest, ... (families by name)."""
    by_family: dict[str, list[PlanModel]] = {}
    for m in models:
        by_family.setdefault(m.family, []).append(m)
    for members in by_family.values():
        members.sort(key=lambda m: (-(m.created if m.created is not None else -(2**62)), m.model_id))
    order: list[str] = []
    depth = max((len(v) for v in by_family.values()), default=0)
    for i in range(depth):
        for family in sorted(by_family):
            if i < len(by_family[family]):
                order.append(by_family[family][i].model_id)
    return order


def plan_models(free: pl.DataFrame, providers: Mapping[str, str] | None = None) -> list[PlanModel]:
    """The free models of a run (``free`` has ``model_id``, ``family``, ``created``) for the plan."""
    return [
        PlanModel(model_id=m, family=f or m, created=c, provider=(providers or {}).get(m))
        for m, f, c in free.select("model_id", "family", "created").iter_rows()
    ]


# --- what a run spent, from its probes table (for the reports) ----------------------------------


def spend_by_phase(probes: pl.DataFrame, screening_task: str | None = None) -> dict[str, int]:
    """How the requests of a run were spent, from its attempts: ``screening`` (the first attempt of
    each model's first probe), ``deepening`` (the first attempt of every other probe) and ``retries``
    (every later attempt, those the account's own limit refused included). Ties in start time put
    ``screening_task`` first."""
    spent = {"screening": 0, "deepening": 0, "retries": 0}
    if probes.is_empty():
        return spent
    key = ["model_id", "task", "sample"]
    firsts = (
        probes.sort([*key, "attempt"])
        .group_by(key, maintain_order=True)
        .agg(pl.col("started_at").first(), pl.len().alias("attempts"))
        .with_columns((pl.col("task") != (screening_task or "")).alias("_later"))
        .sort(["model_id", "started_at", "_later", "task", "sample"], nulls_last=True)
    )
    screened = firsts.group_by("model_id", maintain_order=True).head(1).height
    spent["screening"] = screened
    spent["deepening"] = firsts.height - screened
    spent["retries"] = int(firsts.get_column("attempts").sum()) - firsts.height
    return spent


def probes_done(probes: pl.DataFrame) -> dict[str, int]:
    """Model id -> its probes (model, task, sample) with at least one attempt."""
    if probes.is_empty():
        return {}
    counted = probes.select("model_id", "task", "sample").unique().group_by("model_id").len()
    return {m: int(n) for m, n in counted.iter_rows()}

"""The adaptive plan (freemodels.rounds): screening, definitive stop, deferred retry, deepening order,
full-budget equivalence and resume, against a simulated executor that behaves as the scheduler does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freemodels.failures import FAILURE_INFO, SETTLING, Failure
from freemodels.records import ProbeResult, probes_frame
from freemodels.rounds import Attempt, Phase, PlanModel, Round, RoundPlanner, attempts_from_frame
from tasks.analyze_failures import analyze

TASKS = ("arithmetic", "json_object", "reverse_words")
SCREEN = "json_object"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Behaviour:
    """How a simulated model answers: ``kind`` ok | wrong | settle | transient."""

    kind: str = "ok"
    speed_ms: float = 1000.0
    failure: Failure | None = None
    fails_first: int = 10**6  # transient: attempts that fail before it answers
    wrong_tasks: frozenset[str] = frozenset()  # ok: tasks it gets wrong
    in_reasoning: bool = False
    provider: str | None = None


def ok(speed_ms: float = 1000.0, **kw: object) -> Behaviour:
    return Behaviour("ok", speed_ms, **kw)  # type: ignore[arg-type]


@dataclass
class Sim:
    """Sends rounds as run_plan does: in-round retries when allowed, else the retry is deferred."""

    behaviours: Mapping[str, Behaviour]
    budget: int | None
    max_attempts: int = 3
    asked: dict[tuple[str, str, int], int] = field(default_factory=dict)
    log: list[tuple[int, str, str, str, int]] = field(
        default_factory=list
    )  # round, phase, model, task, attempt
    results: list[ProbeResult] = field(default_factory=list)

    def attempt(self, plan: RoundPlanner, rnd: Round, key: tuple[str, str, int]) -> Failure | None:
        model_id, task, sample = key
        b = self.behaviours[model_id]
        n = self.asked.get(key, 0) + 1
        self.asked[key] = n
        if self.budget is not None:
            self.budget -= 1
        failure: Failure | None
        if b.kind == "settle" or (b.kind == "transient" and n <= b.fails_first):
            failure = b.failure
        elif b.kind == "wrong" or task in b.wrong_tasks:
            failure = Failure.WRONG_ANSWER
        else:
            failure = None
        answered = failure is None or failure is Failure.WRONG_ANSWER
        result = ProbeResult(
            run_id="r",
            model_id=model_id,
            family=model_id.split("/")[0],
            task=task,
            sample=sample,
            attempt=n,
            started_at=T0,
            http_status=200 if answered else 503,
            failure=failure,
            passed=failure is None,
            total_ms=b.speed_ms if answered else None,
            ttft_any_ms=b.speed_ms / 2 if answered else None,
            provider=b.provider,
            answer_channel=("reasoning" if b.in_reasoning else "content") if answered else None,
        )
        self.results.append(result)
        self.log.append((rnd.number, rnd.phase.value, model_id, task, n))
        plan.observe(result)
        return failure

    def run(self, plan: RoundPlanner, *, max_rounds: int = 200) -> list[Round]:
        rounds = []
        for _ in range(max_rounds):
            rnd = plan.next_round(self.budget)
            if rnd is None:
                return rounds
            rounds.append(rnd)
            deferred: dict[tuple[str, str, int], float] = {}
            for spec in rnd.specs:
                key = (spec.model_id, spec.task, spec.sample)
                while self.budget is None or self.budget > 0:
                    failure = self.attempt(plan, rnd, key)
                    if failure is None or not FAILURE_INFO[failure].retryable:
                        break
                    if self.asked[key] >= self.max_attempts:
                        break
                    if not rnd.retry_transient:
                        deferred[key] = float(self.asked[key])
                        break
            plan.end_round(deferred)
        raise AssertionError("the plan did not end")

    def requests_of(self, model_id: str) -> int:
        return sum(1 for *_, m, _t, _n in self.log if m == model_id)


def models(behaviours: Mapping[str, Behaviour]) -> list[PlanModel]:
    return [
        PlanModel(m, m.split("/")[0], created=i, provider=b.provider)
        for i, (m, b) in enumerate(behaviours.items())
    ]


def planner(behaviours: Mapping[str, Behaviour], **kw: object) -> RoundPlanner:
    return RoundPlanner(models(behaviours), TASKS, screening_task=SCREEN, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# screening


def test_screening_sends_one_probe_per_model_family_first_and_skips_the_settled() -> None:
    b = {
        "a/new:free": ok(),
        "a/old:free": ok(),
        "b/only:free": ok(),
        "c/gone:free": ok(),
    }
    plan = RoundPlanner(
        [
            PlanModel("a/new:free", "a", created=20),
            PlanModel("a/old:free", "a", created=10),
            PlanModel("b/only:free", "b", created=5),
            PlanModel("c/gone:free", "c", created=30),
        ],
        TASKS,
        screening_task=SCREEN,
        settled={"c/gone:free": Failure.NO_ENDPOINTS},
    )
    first = plan.next_round(50)
    assert first is not None and first.phase is Phase.SCREENING and first.name == "round-1-screening"
    assert [(s.model_id, s.task, s.sample) for s in first.specs] == [
        ("a/new:free", SCREEN, 0),  # every family's newest first
        ("b/only:free", SCREEN, 0),
        ("a/old:free", SCREEN, 0),
    ]
    assert [s.priority for s in first.specs] == [0, 1, 2]
    sim = Sim(b, budget=50)
    sim.run(plan)
    assert sim.requests_of("c/gone:free") == 0  # settled by its listing: never asked
    assert plan.judged("c/gone:free")


def test_screening_is_cut_to_the_budget_and_the_rest_stay_untested() -> None:
    b = {f"f{i}/m:free": ok() for i in range(10)}
    plan = planner(b)
    sim = Sim(b, budget=4)
    rounds = sim.run(plan)
    assert [r.phase for r in rounds] == [Phase.SCREENING]
    assert len(rounds[0].specs) == 4
    assert len(plan.judged_models) == 4 and len(plan.unjudged()) == 6
    assert plan.next_round(0) is None


def test_every_model_is_screened_before_any_deepening_or_retry() -> None:
    b = {f"f{i}/m:free": ok(300 + i) for i in range(8)}
    b["f0/m:free"] = Behaviour("transient", failure=Failure.PROVIDER_ERROR)
    sim = Sim(b, budget=20)
    sim.run(planner(b))
    first_other = next(i for i, (_, phase, *_) in enumerate(sim.log) if phase != "screening")
    screened = {m for _, phase, m, *_ in sim.log[:first_other]}
    assert screened == set(b)
    assert all(task == SCREEN for _, _, _, task, _ in sim.log[:first_other])


# --------------------------------------------------------------------------------------------------
# definitive stop


def test_the_classes_that_settle_a_model_are_the_definitive_ones() -> None:
    assert frozenset(SETTLING) == {
        Failure.WRONG_MODEL_ID,
        Failure.NO_ENDPOINTS,
        Failure.FREE_VARIANT_ENDED,
        Failure.PRIVACY_EXCLUDED,
        Failure.PROVIDER_RESTRICTED,
        Failure.APP_RESTRICTED,
        Failure.CAPABILITY_UNSUPPORTED,
        Failure.CREDITS_REQUIRED,
        Failure.AUTH,
        Failure.MODERATION,
    }
    assert not any(FAILURE_INFO[f].retryable for f in SETTLING)  # a retry could not help either


@pytest.mark.parametrize("failure", sorted(SETTLING))
@pytest.mark.parametrize("budget", [20, None])
def test_a_settling_failure_ends_the_model_after_one_request(failure: Failure, budget: int | None) -> None:
    assert not FAILURE_INFO[failure].retryable
    b = {"a/dead:free": Behaviour("settle", failure=failure), "b/fine:free": ok(), "c/fine:free": ok()}
    plan = planner(b)
    sim = Sim(b, budget=budget)
    sim.run(plan)
    assert sim.requests_of("a/dead:free") == 1
    assert plan.judged("a/dead:free") and plan.wanted("a/dead:free") == []
    assert sim.requests_of("b/fine:free") == len(TASKS)  # the budget went to the others


def test_a_wrong_answer_does_not_settle_the_model() -> None:
    b = {"a/weak:free": Behaviour("wrong"), "b/fine:free": ok()}
    sim = Sim(b, budget=None)
    sim.run(planner(b))
    assert sim.requests_of("a/weak:free") == len(TASKS)  # a full run still gets every task


# --------------------------------------------------------------------------------------------------
# deferred retry


def test_a_transient_failure_is_retried_after_screening_not_at_once_while_the_budget_is_short() -> None:
    b = {f"f{i}/m:free": ok() for i in range(6)}
    flaky = "f0/m:free"  # screened first
    b[flaky] = Behaviour("transient", failure=Failure.RATE_LIMIT_UPSTREAM, fails_first=1)
    plan = planner(b)
    sim = Sim(b, budget=12)  # 18 probes wanted: short
    rounds = sim.run(plan)
    assert rounds[0].phase is Phase.SCREENING and not rounds[0].retry_transient
    assert rounds[1].phase is Phase.RETRIES and rounds[1].models == (flaky,)
    assert rounds[1].not_before == {(flaky, SCREEN, 0): 1.0}  # the executor's wait, passed back
    flaky_attempts = [(rnd, n) for rnd, _, m, task, n in sim.log if m == flaky and task == SCREEN]
    assert flaky_attempts == [(1, 1), (2, 2)]  # second attempt in round 2, after every model's first
    screening = [m for rnd, _phase, m, _task, _n in sim.log if rnd == 1]
    assert len(screening) == len(b) and screening.count(flaky) == 1


def test_after_its_second_look_a_model_is_judged_and_its_third_attempt_waits_for_the_deepening() -> None:
    b = {
        "a/m:free": ok(),
        "b/m:free": Behaviour("transient", failure=Failure.PROVIDER_ERROR, fails_first=2),
        **{f"s{i}/m:free": Behaviour("settle", failure=Failure.NO_ENDPOINTS) for i in range(4)},
    }
    plan = planner(b)
    sim = Sim(b, budget=10)  # 18 probes wanted: short until the end
    rounds = sim.run(plan)
    assert [(r.phase.value, r.models) for r in rounds] == [
        ("screening", tuple(sorted(b, key=lambda m: m.split("/")[0]))),
        ("retries", ("b/m:free",)),  # second look: judged after it, though it failed again
        ("deepening", ("a/m:free",)),
        ("retries", ("b/m:free",)),  # third attempt: only once the answered models are deepened
    ]
    assert not rounds[1].retry_transient
    assert [n for _, _, m, _, n in sim.log if m == "b/m:free"] == [1, 2, 3]
    assert plan.judged("b/m:free")


def test_with_an_ample_budget_the_scheduler_retries_within_the_round() -> None:
    b = {"a/m:free": Behaviour("transient", failure=Failure.TIMEOUT, fails_first=1), "b/m:free": ok()}
    plan = planner(b)
    first = plan.next_round(1000)
    assert first is not None and first.retry_transient


def test_a_retry_the_executor_did_not_defer_is_not_sent_again_in_this_run() -> None:
    b = {"a/m:free": Behaviour("transient", failure=Failure.RATE_LIMIT_UPSTREAM), "b/m:free": ok()}
    plan = planner(b)
    rnd = plan.next_round(3)
    assert rnd is not None and not rnd.retry_transient
    for spec in rnd.specs:
        failure = Failure.RATE_LIMIT_UPSTREAM if spec.model_id == "a/m:free" else None
        plan.observe(Attempt(spec.model_id, spec.task, 0, failure, passed=failure is None, total_ms=100.0))
    plan.end_round({})  # e.g. the server asked for a wait longer than a run makes
    assert plan.judged("a/m:free")
    assert all(k[0] != "a/m:free" or k[1] != SCREEN for k in plan.wanted("a/m:free"))


def test_the_accounts_own_429_is_not_an_attempt_of_the_model() -> None:
    b = {"a/m:free": ok()}
    plan = planner(b)
    plan.observe(Attempt("a/m:free", SCREEN, 0, Failure.RATE_LIMIT_ACCOUNT))
    assert not plan.judged("a/m:free")
    rnd = plan.next_round(10)
    assert rnd is not None and rnd.phase is Phase.SCREENING and rnd.models == ("a/m:free",)
    assert plan.requests == 1 and plan.retries == 0


def test_a_probe_the_accounts_limit_refused_every_attempt_is_not_planned_again_in_this_run() -> None:
    """The account's 429 on every attempt the scheduler allows (it waited for the limit's reset in
    between): the probe is left for --resume, and the rounds end instead of asking again and again."""
    b = {"a/m:free": ok(), "b/n:free": ok()}
    plan = planner(b, max_attempts=2)
    rnd = plan.next_round(100)
    assert rnd is not None and rnd.phase is Phase.SCREENING
    for spec in rnd.specs:
        for _ in range(2):
            plan.observe(Attempt(spec.model_id, spec.task, spec.sample, Failure.RATE_LIMIT_ACCOUNT))
    plan.end_round({})
    assert plan.next_round(100) is None and plan.stalled and plan.left_to_account_limit
    assert plan.unjudged() == ["a/m:free", "b/n:free"]
    assert plan.models_left() == ["a/m:free", "b/n:free"]  # left for --resume, not forgotten
    assert plan.requests == 4
    # A later process (--resume) plans them again: the earlier account 429s do not hold it back.
    history = [Attempt(m, SCREEN, 0, Failure.RATE_LIMIT_ACCOUNT) for m in b for _ in range(2)]
    resumed = planner(b, max_attempts=2, history=history)
    again = resumed.next_round(100)
    assert again is not None and set(again.models) == set(b)
    # One account 429 of two allowed: the probe is still planned.
    once = planner(b, max_attempts=2)
    once.observe(Attempt("a/m:free", SCREEN, 0, Failure.RATE_LIMIT_ACCOUNT))
    nxt = once.next_round(100)
    assert nxt is not None and "a/m:free" in nxt.models
    assert not once.left_to_account_limit and not resumed.left_to_account_limit


# --------------------------------------------------------------------------------------------------
# deepening order


def test_deepening_goes_to_rotation_candidates_fastest_first_spread_over_families_and_providers() -> None:
    b = {
        "a/fast:free": ok(100, provider="P1"),
        "a/fast2:free": ok(110, provider="P2"),  # same family as the fastest
        "b/mid:free": ok(200, provider="P1"),  # same provider as the fastest
        "c/slow:free": ok(900, provider="P3"),  # new family and provider
        "d/think:free": ok(50, provider="P4", in_reasoning=True),  # fastest, but answers in reasoning
        "e/wrong:free": Behaviour("wrong", speed_ms=10, provider="P5"),  # failed a task
    }
    plan = planner(b, batch=10)
    sim = Sim(b, budget=40)
    rounds = sim.run(plan)
    deepening = next(r for r in rounds if r.phase is Phase.DEEPENING)
    order = list(deepening.models)
    assert order == [
        "a/fast:free",
        "c/slow:free",
        "b/mid:free",
        "a/fast2:free",
        "d/think:free",
        "e/wrong:free",
    ]
    assert [s.task for s in deepening.specs[:2]] == ["arithmetic", "reverse_words"]  # the rest of the suite


def test_a_short_budget_deepens_whole_suites_a_batch_at_a_time_and_replaces_a_candidate_that_fails() -> None:
    b = {f"f{i}/m:free": ok(100 * (i + 1)) for i in range(6)}
    b["f0/m:free"] = ok(100, wrong_tasks=frozenset({"arithmetic"}))  # fastest, fails its second task
    plan = planner(b, batch=2)
    sim = Sim(b, budget=6 + 8)
    rounds = sim.run(plan)
    deepening = [r for r in rounds if r.phase is Phase.DEEPENING]
    assert [r.models for r in deepening] == [("f0/m:free", "f1/m:free"), ("f2/m:free", "f3/m:free")]
    full = [m for m in b if all(sim.asked.get((m, t, 0)) for t in TASKS)]
    assert full == ["f0/m:free", "f1/m:free", "f2/m:free", "f3/m:free"]


def test_deepening_comes_back_to_models_that_only_failed_transiently_last() -> None:
    b = {
        "a/m:free": ok(),
        "b/m:free": Behaviour("transient", failure=Failure.PROVIDER_ERROR, fails_first=3),
        "c/m:free": Behaviour("wrong"),
    }
    plan = planner(b)
    for model_id in b:  # screening done: a answered, c answered wrongly, b failed twice
        failure = {"a/m:free": None, "c/m:free": Failure.WRONG_ANSWER}.get(model_id, Failure.PROVIDER_ERROR)
        plan.observe(Attempt(model_id, SCREEN, 0, failure, passed=failure is None, total_ms=10.0))
    plan.observe(Attempt("b/m:free", SCREEN, 0, Failure.PROVIDER_ERROR))
    plan.end_round({})
    short = plan.next_round(4)  # 6 probes wanted
    assert short is not None and short.phase is Phase.DEEPENING
    assert short.models == ("a/m:free", "c/m:free")  # not the model that never answered
    ample = plan.next_round(100)
    assert ample is not None and ample.phase is Phase.DEEPENING
    assert ample.models == ("a/m:free", "c/m:free", "b/m:free")  # the model that never answered last


# --------------------------------------------------------------------------------------------------
# full-budget equivalence (property)


def static_full_run(behaviours: Mapping[str, Behaviour], max_attempts: int = 3) -> list[ProbeResult]:
    """Every task of every model, each retried at once up to max_attempts: a run with no plan."""
    sim = Sim(behaviours, budget=None, max_attempts=max_attempts)
    plan = planner(behaviours)  # only used to receive the attempts
    rnd = Round(1, Phase.SCREENING, (), retry_transient=True)
    for model_id in behaviours:
        for task in TASKS:
            key = (model_id, task, 0)
            while True:
                failure = sim.attempt(plan, rnd, key)
                if failure is None or not FAILURE_INFO[failure].retryable or sim.asked[key] >= max_attempts:
                    break
    return sim.results


def verdicts(results: Sequence[ProbeResult], behaviours: Mapping[str, Behaviour]) -> dict[str, tuple]:
    free = pl.DataFrame(
        {
            "model_id": list(behaviours),
            "family": [m.split("/")[0] for m in behaviours],
            "supports_reasoning": [False] * len(behaviours),
        }
    )
    frame = analyze(probes_frame(list(results)), free, run_id="r", untested=list(behaviours))
    return {
        row["model_id"]: (row["verdict"], row["root_cause"], row["tasks_passed"], row["p50_total_ms"])
        for row in frame.iter_rows(named=True)
    }


FAILURES = st.sampled_from([f for f in Failure if f is not Failure.RATE_LIMIT_ACCOUNT])
BEHAVIOURS = st.one_of(
    st.builds(
        Behaviour,
        kind=st.just("ok"),
        speed_ms=st.floats(50, 9000),
        wrong_tasks=st.frozensets(st.sampled_from(TASKS), max_size=2),
        provider=st.sampled_from([None, "P1", "P2"]),
    ),
    st.builds(Behaviour, kind=st.just("wrong"), speed_ms=st.floats(50, 9000)),
    st.builds(Behaviour, kind=st.just("settle"), failure=st.sampled_from(sorted(SETTLING))),
    st.builds(
        Behaviour,
        kind=st.just("transient"),
        failure=st.sampled_from(
            [f for f in Failure if FAILURE_INFO[f].retryable and f is not Failure.RATE_LIMIT_ACCOUNT]
        ),
        fails_first=st.integers(0, 4),
        speed_ms=st.floats(50, 9000),
    ),
)


@st.composite
def populations(draw: st.DrawFn) -> dict[str, Behaviour]:
    count = draw(st.integers(1, 9))
    families = draw(st.lists(st.sampled_from("abcd"), min_size=count, max_size=count))
    return {f"{fam}/m{i}:free": draw(BEHAVIOURS) for i, fam in enumerate(families)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(populations(), st.sampled_from([None, 1000]))
def test_with_a_budget_that_covers_everything_the_verdicts_equal_a_full_run(
    behaviours: dict[str, Behaviour], budget: int | None
) -> None:
    full = verdicts(static_full_run(behaviours), behaviours)
    sim = Sim(behaviours, budget=budget)
    plan = planner(behaviours)
    sim.run(plan)
    adaptive = verdicts(sim.results, behaviours)
    for model_id, b in behaviours.items():
        if b.kind == "settle":
            assert adaptive[model_id][:2] == full[model_id][:2]  # failing, same root cause
            assert sim.requests_of(model_id) == 1
        else:
            assert adaptive[model_id] == full[model_id], model_id
            assert sorted(k for k in sim.asked if k[0] == model_id) == [
                (model_id, t, 0) for t in sorted(TASKS)
            ]
    assert plan.models_left() == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(populations(), st.integers(0, 40))
def test_any_budget_is_kept_every_settled_model_costs_one_request_and_the_plan_ends(
    behaviours: dict[str, Behaviour], budget: int
) -> None:
    sim = Sim(behaviours, budget=budget)
    plan = planner(behaviours)
    sim.run(plan)
    assert len(sim.log) <= budget
    for model_id, b in behaviours.items():
        if b.kind == "settle":
            assert sim.requests_of(model_id) <= 1
    assert all(n <= 3 for n in sim.asked.values())
    if budget >= 2 * len(behaviours):  # a screening and a second look for every model
        assert plan.unjudged() == []


# --------------------------------------------------------------------------------------------------
# resume


def test_a_plan_rebuilt_from_the_checkpoints_continues_the_rounds_without_repeating_a_probe() -> None:
    b = {f"f{i}/m:free": ok(100 + i) for i in range(6)}
    b["f5/m:free"] = Behaviour("transient", failure=Failure.PROVIDER_ERROR, fails_first=1)
    day1 = Sim(b, budget=7)
    day1.run(planner(b))
    history = attempts_from_frame(probes_frame(day1.results))
    resumed = planner(b, history=history)
    assert resumed.requests == len(day1.results)
    assert resumed.judged_models == planner(b, history=history).judged_models
    assert len(resumed.judged_models) == 6 and resumed.models_left()  # screened on day 1, suites left
    day2 = Sim(b, budget=50)
    day2.asked = dict(day1.asked)
    day2.run(resumed)
    sent_twice = [k for k in day2.asked if day2.asked[k] > 1 and k[0] != "f5/m:free"]
    assert sent_twice == []  # a final probe is never sent again
    assert resumed.models_left() == []
    assert all(day2.asked[(m, t, 0)] >= 1 for m in b for t in TASKS)


def test_attempts_from_a_probes_table_keep_the_order_and_what_the_plan_needs() -> None:
    rows = [
        ProbeResult(
            "r", "a/m", "a", SCREEN, 0, 2, T0, 200, None, True, total_ms=5.0, answer_channel="reasoning"
        ),
        ProbeResult("r", "a/m", "a", SCREEN, 0, 1, T0, 503, Failure.PROVIDER_ERROR, False),
    ]
    got = attempts_from_frame(probes_frame(rows))
    assert [a.failure for a in got] == [Failure.PROVIDER_ERROR, None]
    assert got[1].in_reasoning and got[1].total_ms == 5.0
    assert attempts_from_frame(probes_frame([])) == []


# --------------------------------------------------------------------------------------------------
# what a run spent (reports)


def test_spend_by_phase_counts_screening_deepening_and_retries_from_the_attempts() -> None:
    from datetime import timedelta

    from freemodels.rounds import probes_done, spend_by_phase

    def attempt(model: str, task: str, n: int, at: int, failure: Failure | None = None) -> ProbeResult:
        return ProbeResult(
            "r", model, "f", task, 0, n, T0 + timedelta(seconds=at), 200, failure, failure is None
        )

    rows = [
        attempt("a/m", SCREEN, 1, 0, Failure.PROVIDER_ERROR),  # screening
        attempt("b/m", SCREEN, 1, 1),  # screening
        attempt("a/m", SCREEN, 2, 5),  # retry
        attempt("b/m", "arithmetic", 1, 6, Failure.RATE_LIMIT_ACCOUNT),  # deepening (refused by the account)
        attempt("b/m", "arithmetic", 2, 7),  # retry
        attempt("b/m", "reverse_words", 1, 7),  # deepening
        attempt("c/m", "arithmetic", 1, 3),  # a model whose first probe was not the screening task
        attempt("c/m", SCREEN, 1, 3),  # same start: the screening task counts as its first
    ]
    assert spend_by_phase(probes_frame(rows), SCREEN) == {"screening": 3, "deepening": 3, "retries": 2}
    assert sum(spend_by_phase(probes_frame(rows), SCREEN).values()) == len(rows)
    assert spend_by_phase(probes_frame([]), SCREEN) == {"screening": 0, "deepening": 0, "retries": 0}
    assert probes_done(probes_frame(rows)) == {"a/m": 1, "b/m": 3, "c/m": 2}


def test_a_judged_model_stays_judged_when_a_later_probe_fails_once() -> None:
    """The progress line counts judged models: the count never goes down."""
    b = {"a/m:free": ok()}
    plan = planner(b)
    plan.observe(Attempt("a/m:free", SCREEN, 0, Failure.PROVIDER_ERROR))
    plan.observe(Attempt("a/m:free", SCREEN, 0, Failure.PROVIDER_ERROR))
    assert plan.judged("a/m:free")  # a transient failure, and its second look
    other = next(t for t in TASKS if t != SCREEN)
    plan.observe(Attempt("a/m:free", other, 0, Failure.PROVIDER_ERROR))  # a deepening probe fails once
    assert plan.judged("a/m:free") and plan.judged_models == ["a/m:free"]


def test_why_models_were_left_untested_is_one_rule() -> None:
    from freemodels.rounds import ACCOUNT_LIMIT_STALLED, left_untested

    assert left_untested([], None, 0).short == "quota"
    assert left_untested([], None, None).short == "quota"
    assert left_untested([], 40, 0).short == "quota"  # the budget was not what stopped it
    assert left_untested([], 40, 930).short == "budget"
    assert left_untested([], 40, None).short == "budget"
    assert left_untested(["other", ACCOUNT_LIMIT_STALLED], 40, 930).short == "account limit"

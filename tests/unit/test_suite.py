"""The standard suite: per-run prompt values, deterministic graders, output never executed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freemodels.suite import SUITE_VERSION, TASKS, build_suite, solve


def test_three_tasks_in_fixed_order() -> None:
    suite = build_suite(1)
    assert tuple(t.name for t in suite) == TASKS == ("arithmetic", "json_object", "reverse_words")
    assert SUITE_VERSION


def test_prompts_vary_per_seed_and_repeat_per_seed() -> None:
    assert build_suite(1) == build_suite(1)
    prompts = {tuple(t.prompt for t in build_suite(seed)) for seed in range(20)}
    assert len(prompts) == 20


@given(st.integers(min_value=0, max_value=2**48))
def test_solver_answers_pass_every_grader(seed: int) -> None:
    for task in build_suite(seed):
        assert task.grade(solve(task.prompt)), task.name


@pytest.mark.parametrize(
    ("name", "reply", "ok"),
    [
        ("arithmetic", "{expected}", True),
        ("arithmetic", " {expected}. ", True),
        ("arithmetic", "The answer is {expected}", False),
        ("arithmetic", "", False),
        ("json_object", "```json\n{expected}\n```", True),
        ("json_object", "{expected_str_code}", False),
        ("json_object", "[1, 2]", False),
        ("json_object", "not json", False),
        ("reverse_words", "{expected}", True),
        ("reverse_words", "{expected_upper}", False),
    ],
)
def test_graders(name: str, reply: str, ok: bool) -> None:
    task = next(t for t in build_suite(42) if t.name == name)
    expected = task.expected
    extra = {}
    if name == "json_object":
        value = json.loads(expected)
        extra["expected_str_code"] = json.dumps({"city": value["city"], "code": str(value["code"])})
    text = reply.format(expected=expected, expected_upper=expected.upper(), **extra)
    assert task.grade(text) is ok


def test_grade_none_is_false() -> None:
    assert build_suite(3)[0].grade(None) is False


def test_model_output_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('pathlib').Path({str(marker)!r}).write_text('x')",
        f'{{"city": __import__("pathlib").Path({str(marker)!r}).write_text("x"), "code": 1}}',
        "{{7*7}} ${7*7} `touch " + str(marker) + "`",
    ]
    for task in build_suite(5):
        for payload in payloads:
            assert task.grade(payload) is False
    assert not marker.exists()


def test_solve_ignores_other_prompts() -> None:
    assert solve("Tell me a joke") is None

"""Model output is data, never code: the graders read replies as text.

Any reply gets a yes or no without an exception. A reply that would produce the right answer only if
something evaluated it (an expression, a call, a template) is graded as the text it is: wrong. A reply
that would leave a trace if executed leaves none.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from freemodels.suite import TASKS, build_suite, solve

SEEDS = st.integers(min_value=0, max_value=2**48)


@settings(max_examples=300, deadline=None)
@given(SEEDS, st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
@example(0, "[" * 100_000)
@example(0, '{"city": "Osaka", "code": ' + "9" * 10_000 + "}")
@example(0, '{"city": "Osaka", "code": 1e400}')
@example(0, "```json\n" + "{" * 50_000)
@example(0, "\x00\ufeff\u202e")
def test_any_reply_is_graded_without_an_exception(seed: int, reply: str) -> None:
    for task in build_suite(seed):
        assert task.grade(reply) in (True, False)
        assert task.grade(None) is False


def _evaluating_forms(expected: str) -> list[str]:
    """Replies that equal ``expected`` only once something evaluates them."""
    number = int(expected) if expected.isdigit() else None
    forms = [
        f"{{{{ {expected!r} }}}}",  # a Jinja expression
        f"${{{expected}}}",  # a shell/JS template
        f"eval({expected!r})",
        f"str({expected!r})",
        f"__import__('builtins').str({expected!r})",
    ]
    if number is not None:
        forms += [f"{number - 1} + 1", f"{number} * 1", f"int('{number}')", f"0x{number:x}", f"{number}.0e0"]
    return forms


@settings(max_examples=100, deadline=None)
@given(SEEDS)
def test_replies_that_need_evaluation_are_wrong(seed: int) -> None:
    for task in build_suite(seed):
        answer = solve(task.prompt)
        assert answer is not None and task.grade(answer)
        for form in _evaluating_forms(answer if task.name != "json_object" else task.expected):
            assert not task.grade(form), (task.name, form)


def test_code_in_a_reply_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payloads = [
        f"__import__('pathlib').Path({str(marker)!r}).write_text('x')",
        f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        json.dumps({"city": f"__import__('os').system('touch {marker}')", "code": 1}),
        f'{{"__class__": "os.system", "args": ["touch {marker}"]}}',
    ]
    for task in build_suite(7):
        for payload in payloads:
            assert task.grade(payload) is False
            assert task.grade(f"```\n{payload}\n```") is False
    assert not marker.exists()


@pytest.mark.parametrize("name", TASKS)
def test_the_canonical_answer_still_passes_in_the_usual_wrappings(name: str) -> None:
    task = next(t for t in build_suite(99) if t.name == name)
    answer = solve(task.prompt)
    assert answer is not None
    for wrapped in (answer, f"  {answer}\n", f"```\n{answer}\n```", f"```json\n{answer}\n```"):
        assert task.grade(wrapped), wrapped

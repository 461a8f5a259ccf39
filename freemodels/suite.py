"""The standard suite: three short tasks with deterministic graders.

Prompt values vary per run (they are drawn from the run's seed), so no response cache can answer a probe,
while the same seed always gives the same prompts, so a run can be resumed and re-graded.

Graders only read model output as text: nothing a model returns is ever executed or evaluated.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

SUITE_VERSION = "std-3.1"

TASKS: tuple[str, ...] = ("arithmetic", "json_object", "reverse_words")

SCREENING_TASK = "json_object"
"""The task an adaptive plan sends every model first (see :mod:`freemodels.rounds`): it asks for an exact
format and exact values at once, so it is the one a weak model fails first, and a model that passes it
qualifies for the ``json`` rotation too. None of the tasks needs a capability beyond plain chat."""

_WORDS = (
    "amber",
    "birch",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "glade",
    "harbor",
    "island",
    "juniper",
    "kestrel",
    "lagoon",
    "meadow",
    "nectar",
    "orchid",
    "prairie",
    "quartz",
    "ridge",
    "summit",
    "tundra",
    "umber",
    "valley",
    "willow",
    "yonder",
    "zephyr",
)
_CITIES = ("Lisbon", "Nairobi", "Osaka", "Quito", "Tallinn", "Hobart", "Bergen", "Cusco", "Accra")


@dataclass(frozen=True, slots=True)
class TaskInstance:
    """One task of the suite with this run's values."""

    name: str
    system: str
    prompt: str
    expected: str  # the canonical correct answer (as text)
    json_mode: bool = False

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.prompt},
        ]

    def grade(self, reply: str | None) -> bool:
        """True if ``reply`` answers the task. Never executes the reply."""
        if reply is None:
            return False
        return _GRADERS[self.name](reply, self)

    def grade_reasoning(self, reasoning: str | None) -> bool:
        """True if an answer given only in the reasoning channel answers the task.

        The reasoning text is graded as a reply: as a whole, else its last paragraph, else its last
        non-empty line (a model that thinks aloud and then states the answer ends with it). Never
        executes the text.
        """
        if reasoning is None or not reasoning.strip():
            return False
        text = reasoning.strip()
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        lines = [line for line in text.splitlines() if line.strip()]
        candidates = dict.fromkeys(
            [text, paragraphs[-1] if paragraphs else text, lines[-1] if lines else text]
        )
        return any(self.grade(candidate) for candidate in candidates)


_SYSTEM = "You are a precise assistant. Follow the output format exactly and add nothing else."


def build_suite(seed: int) -> tuple[TaskInstance, ...]:
    """The three tasks with values drawn from ``seed``."""
    rng = random.Random(seed)
    a, b = rng.randint(1000, 9999), rng.randint(1000, 9999)
    city = rng.choice(_CITIES)
    code = rng.randint(100, 999)
    words = rng.sample(_WORDS, 4)
    return (
        TaskInstance(
            name="arithmetic",
            system=_SYSTEM,
            prompt=f"What is {a} + {b}? Reply with only the number.",
            expected=str(a + b),
        ),
        TaskInstance(
            name="json_object",
            system=_SYSTEM,
            prompt=(
                f'Return a JSON object with the key "city" set to "{city}" and the key "code" set '
                f"to the integer {code}. Reply with the JSON object only."
            ),
            expected=json.dumps({"city": city, "code": code}),
            json_mode=True,
        ),
        TaskInstance(
            name="reverse_words",
            system=_SYSTEM,
            prompt=(
                "Reverse the order of these words and write them in lowercase, separated by single "
                f"spaces: {' '.join(w.upper() for w in words)}. Reply with only the words."
            ),
            expected=" ".join(reversed(words)),
        ),
    )


def _strip(reply: str) -> str:
    text = reply.strip()
    fence = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", text, re.DOTALL)
    if fence:
        text = fence.group(1).strip()
    return text


def _grade_arithmetic(reply: str, task: TaskInstance) -> bool:
    text = _strip(reply).rstrip(".").replace(",", "").strip()
    return text == task.expected


def _grade_json(reply: str, task: TaskInstance) -> bool:
    text = _strip(reply)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    expected = json.loads(task.expected)
    if not isinstance(value, dict):
        return False
    return (
        value.get("city") == expected["city"]
        and value.get("code") == expected["code"]
        and (type(value.get("code")) is int)
    )


def _grade_reverse(reply: str, task: TaskInstance) -> bool:
    text = _strip(reply).rstrip(".").strip()
    return " ".join(text.split()) == task.expected


_GRADERS: dict[str, Callable[[str, TaskInstance], bool]] = {
    "arithmetic": _grade_arithmetic,
    "json_object": _grade_json,
    "reverse_words": _grade_reverse,
}


def solve(prompt: str) -> str | None:
    """The correct answer to a suite prompt, or None if ``prompt`` is not one of the suite's.

    Used by the sandbox to play a model that answers correctly; it parses the prompt text only.
    """
    if m := re.search(r"What is (\d+) \+ (\d+)\?", prompt):
        return str(int(m.group(1)) + int(m.group(2)))
    if m := re.search(r'"city" set to "([^"]+)" and the key "code" set to the integer (\d+)', prompt):
        return json.dumps({"city": m.group(1), "code": int(m.group(2))})
    if m := re.search(r"separated by single spaces: ([A-Z ]+)\.", prompt):
        return " ".join(reversed(m.group(1).lower().split()))
    return None

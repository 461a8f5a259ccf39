"""What the simulated models say: correct answers, plausible wrong ones, filler, reasoning text.

Correct answers come from :func:`freemodels.suite.solve`; prompts outside the suite get filler text. Token
counts are estimated at four characters per token, which is close enough for usage accounting.
"""

from __future__ import annotations

import json
import random

from freemodels.suite import solve

CHARS_PER_TOKEN = 4

_FILLER = (
    "Here is a short answer to your question.",
    "The main point is that the details depend on the context you are working in.",
    "In most cases the simplest approach is also the most reliable one.",
    "A good first step is to state the goal clearly and check the assumptions.",
    "If you share more details, I can give a more specific answer.",
    "This is a common question, and the usual answer is to start small and iterate.",
    "There are a few trade-offs to keep in mind, mainly speed, cost and accuracy.",
)
_REASONING = (
    "Let me think about what is being asked.",
    "The user wants a precise answer in a fixed format.",
    "I should check the values in the prompt carefully.",
    "Let me verify the result once more before answering.",
    "The format rules say to reply with the answer only.",
    "I will double-check each step to avoid a mistake.",
)
_OTHER_CITIES = ("Lima", "Oslo", "Porto", "Dakar", "Hanoi")


def estimate_tokens(text: str) -> int:
    """Rough token count of ``text`` (0 for empty text)."""
    return 0 if not text else max(1, round(len(text) / CHARS_PER_TOKEN))


def correct_answer(prompt: str, rng: random.Random) -> str:
    """The right answer to a suite prompt, or filler for anything else."""
    solved = solve(prompt)
    return solved if solved is not None else filler(rng)


def wrong_answer(prompt: str, rng: random.Random) -> str:
    """A plausible answer that the suite's graders reject (filler for non-suite prompts)."""
    solved = solve(prompt)
    if solved is None:
        return filler(rng)
    if solved.isdigit():
        return str(int(solved) + rng.choice((-100, -10, -1, 1, 10, 100)))
    if solved.startswith("{"):
        value = json.loads(solved)
        variant = rng.randrange(3)
        if variant == 0:
            value["code"] = int(value["code"]) + rng.choice((1, 7, 10))
        elif variant == 1:
            value["code"] = str(value["code"])
        else:
            value["city"] = rng.choice([c for c in _OTHER_CITIES if c != value["city"]])
        return json.dumps(value)
    words = solved.split()
    return " ".join(reversed(words)) if len(words) > 1 else solved.upper()


def filler(rng: random.Random, sentences: int = 2) -> str:
    """A few generic sentences."""
    return " ".join(rng.sample(_FILLER, k=min(sentences, len(_FILLER))))


def reasoning_text(tokens: int, rng: random.Random) -> str:
    """Thinking text of about ``tokens`` tokens."""
    if tokens <= 0:
        return ""
    parts: list[str] = []
    length = 0
    target = tokens * CHARS_PER_TOKEN
    while length < target:
        sentence = rng.choice(_REASONING)
        parts.append(sentence)
        length += len(sentence) + 1
    return " ".join(parts)[:target]


def truncate_to_tokens(text: str, tokens: int) -> str:
    """The prefix of ``text`` that fits in ``tokens`` tokens."""
    return text[: max(0, tokens) * CHARS_PER_TOKEN]


def split_pieces(text: str, max_pieces: int = 12) -> list[str]:
    """Split ``text`` into streaming deltas of roughly one token each, at most ``max_pieces``."""
    if not text:
        return []
    count = max(1, min(max_pieces, -(-len(text) // CHARS_PER_TOKEN)))
    if count == 1 and len(text) > 1:
        count = 2
    size, extra = divmod(len(text), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return [p for p in pieces if p]

"""The page ``docs/classifier-verdicts.md``: the classifier's verdict on every real error body.

Two sources: every recorded OpenRouter response that is an error (``../shared/fixtures/openrouter/recorded``,
status other than 200 or flagged ``error``: the class each must get is stated in
``tests/unit/test_classify_recorded.py``), and the live bodies quoted from production reports
(``tests/live_bodies.py``). Each is classified the way a probe reads it, and the page shows its class and
the remedy, with ``N of N`` classified as expected.

Regenerate after a change to the classifier, the taxonomy or the fixtures::

    uv run python -m tests.verdicts

``tests/unit/test_classifier_verdicts.py`` fails while the committed page differs from what this prints.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from freemodels.classify import parse_error_envelope
from freemodels.failures import FAILURE_INFO, Failure
from freemodels.mdsafe import md_cell, md_code
from freemodels.probe import StreamState
from freemodels.sse import SSEEvent, parse_all
from tests.conftest import REPO_ROOT, SHARED_FIXTURES
from tests.live_bodies import LIVE_CASES, LiveCase
from tests.unit.test_classify_live import classify_case
from tests.unit.test_classify_recorded import _expected, classify_recorded

PAGE = REPO_ROOT / "docs" / "classifier-verdicts.md"
MESSAGE_CHARS = 140


@dataclass(frozen=True, slots=True)
class Verdict:
    """One error body, what the classifier says about it, and what it should say."""

    source: str
    status: int
    message: str
    got: Failure | None
    expected: Failure | None

    @property
    def right(self) -> bool:
        return self.got is self.expected


def _message_of(body: bytes, kind: str) -> str:
    """The error's own words (message, then the provider's raw text) of a recorded body."""
    envelope = None
    if kind == "sse":
        state = StreamState(t0_ns=0)
        for i, item in enumerate(parse_all(body)):
            if isinstance(item, SSEEvent) and not item.is_done:
                state.feed_chunk(json.loads(item.data), i)
        envelope = state.envelope
    else:
        envelope = parse_error_envelope(body)
    if envelope is None:
        return ""
    text = envelope.message or ""
    if envelope.raw and envelope.raw not in text:
        text = f"{text}: {envelope.raw}" if text else envelope.raw
    return text


def _recorded_source(repo: str, file: str) -> str:
    """``owner/repo: test name@commit.n.json``, the test name shortened in the middle if long."""
    name = file.split("__", 2)[-1]
    test, at, tail = name.rpartition("@")
    if len(test) > 64:
        test = test[:40] + "…" + test[-20:]
    return f"{repo}: {test}{at}{tail}"


def recorded_verdicts(fixtures: Path = SHARED_FIXTURES) -> list[Verdict]:
    """Every recorded error response, classified (status, then file name)."""
    folder = fixtures / "recorded"
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    errors = [e for e in index if e["status"] != 200 or "error" in e["flags"]]
    verdicts = []
    for entry in sorted(errors, key=lambda e: (e["status"], e["file"])):
        body = (folder / entry["file"]).read_bytes()
        verdicts.append(
            Verdict(
                source=_recorded_source(entry["repo"], entry["file"]),
                status=entry["status"],
                message=_message_of(body, entry["kind"]),
                got=classify_recorded(folder, entry),
                expected=_expected(entry["file"]),
            )
        )
    return verdicts


def live_verdicts(cases: tuple[LiveCase, ...] = LIVE_CASES) -> list[Verdict]:
    """Every live body, classified (in the order of ``tests/live_bodies.py``)."""
    verdicts = []
    for case in cases:
        error = case.body.get("error") if isinstance(case.body.get("error"), dict) else {}
        message = str(error.get("message") or "")
        raw = (error.get("metadata") or {}).get("raw")
        if isinstance(raw, str) and raw not in message:
            message = f"{message}: {raw}"
        verdicts.append(
            Verdict(
                source=f"{case.name} — {case.source}",
                status=case.status,
                message=message + (" (error chunk inside a 200 stream)" if case.stream else ""),
                got=classify_case(case),
                expected=case.expected,
            )
        )
    return verdicts


def _class_cell(failure: Failure | None) -> str:
    return "no failure" if failure is None else f"{FAILURE_INFO[failure].title} ({md_code(failure.value)})"


def _rows(verdicts: list[Verdict]) -> list[str]:
    lines = ["| # | Source | HTTP | Message | Class | As expected |", "|--:|---|--:|---|---|---|"]
    for number, v in enumerate(verdicts, start=1):
        check = "yes" if v.right else f"**no**, expected {_class_cell(v.expected)}"
        lines.append(
            f"| {number} | {md_cell(v.source)} | {v.status} | {md_cell(v.message, MESSAGE_CHARS)} "
            f"| {_class_cell(v.got)} | {check} |"
        )
    return lines


def render_page(recorded: list[Verdict], live: list[Verdict]) -> str:
    """The whole page (pure)."""
    every = recorded + live
    right = sum(v.right for v in every)
    counts = Counter(v.got for v in every)
    lines = [
        "# The classifier on every real error body",
        "",
        "<!-- Generated by `uv run python -m tests.verdicts`; do not edit by hand. -->",
        "",
        "What the failure classifier (`freemodels/classify.py`) says about every real OpenRouter error body "
        "the project has: the error responses other projects recorded from OpenRouter "
        "(`../shared/fixtures/openrouter/recorded`, statuses other than 200 and 200 answers that carry an "
        "error) and the bodies that reports of live traffic quote (`tests/live_bodies.py`: only `message`, "
        "`code` and `user_id`, the 2026 wordings, errors inside a 200). Each is read the way a probe reads "
        "it; the class it should get is stated in the tests (`tests/unit/test_classify_recorded.py`, "
        "`tests/live_bodies.py`).",
        "",
        f"**{right} of {len(every)}** error bodies get the class they should: "
        f"{sum(v.right for v in recorded)} of {len(recorded)} recorded responses and "
        f"{sum(v.right for v in live)} of {len(live)} live bodies.",
        "",
        "## By class",
        "",
        "| Class | Bodies | Retry can help | Remedy |",
        "|---|--:|---|---|",
    ]
    for failure in Failure:
        if counts[failure]:
            info = FAILURE_INFO[failure]
            retry = "yes" if info.retryable else "no"
            lines.append(f"| {_class_cell(failure)} | {counts[failure]} | {retry} | {info.remedy} |")
    if counts[None]:
        lines.append(f"| no failure | {counts[None]} | — | — |")
    lines += ["", f"## Recorded responses ({len(recorded)})", "", *_rows(recorded)]
    lines += ["", f"## Live bodies ({len(live)})", "", *_rows(live), ""]
    return "\n".join(lines)


def build_page(fixtures: Path = SHARED_FIXTURES) -> str:
    """The page for the fixtures at ``fixtures`` and the live bodies."""
    return render_page(recorded_verdicts(fixtures), live_verdicts())


def main() -> int:
    if not (SHARED_FIXTURES / "recorded" / "index.json").is_file():
        print(f"no recorded fixtures at {SHARED_FIXTURES}", file=sys.stderr)
        return 1
    PAGE.write_text(build_page(), encoding="utf-8", newline="\n")
    print(PAGE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

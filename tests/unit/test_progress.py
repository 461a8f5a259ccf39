"""The progress line while probing: its text, live on a terminal, a log line every few seconds else."""

from __future__ import annotations

import asyncio

import pytest

from freemodels.progress import ProgressReporter, Snapshot, duration, eta_s, progress_line


def snap(**kw: object) -> Snapshot:
    values: dict[str, object] = {
        "sent": 23,
        "planned": 50,
        "judged": 21,
        "models": 29,
        "retries": 2,
        "quota_left": 27,
        "eta_s": 72.0,
        "round_name": "round-3-deepening",
    }
    values.update(kw)
    return Snapshot(**values)  # type: ignore[arg-type]


def test_the_line_says_requests_of_planned_judged_models_retries_quota_and_time_left() -> None:
    assert progress_line(snap()) == (
        "requests 23/50 · judged 21/29 models · 2 retries · quota 27 left · ~1m12s to go · round 3 deepening"
    )
    assert progress_line(snap(retries=1, quota_left=None, eta_s=None, round_name=None)) == (
        "requests 23/50 · judged 21/29 models · 1 retry · no daily limit"
    )
    assert progress_line(snap(sent=60, planned=50)).startswith("requests 60/60")  # never "60/50"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.2, "1s"), (59, "59s"), (60, "1m00s"), (185, "3m05s"), (3720, "1h02m")]
)
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_eta_follows_the_pacing() -> None:
    assert eta_s(10, 3.05) == pytest.approx(30.5)
    assert eta_s(-3, 3.0) == 0


def test_on_a_terminal_the_line_is_redrawn_in_place_and_cleared_for_log_lines() -> None:
    written: list[str] = []
    logged: list[str] = []
    reporter = ProgressReporter(snap, live=True, write=written.append, log=logged.append)
    reporter.show()
    reporter.clear()
    reporter.clear()  # nothing shown: nothing to clear
    assert written == ["\r\x1b[2K" + progress_line(snap()), "\r\x1b[2K"]
    assert logged == []


def test_elsewhere_a_line_is_logged_every_few_seconds_and_once_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged: list[str] = []
    state = {"sent": 0}

    def snapshot() -> Snapshot:
        return snap(sent=state["sent"])

    reporter = ProgressReporter(
        snapshot, live=False, write=lambda text: None, log=logged.append, every_s=0.05
    )

    async def run() -> None:
        async with reporter.running():
            for sent in range(1, 4):
                state["sent"] = sent
                await asyncio.sleep(0.08)
            state["sent"] = 9

    asyncio.run(run())
    assert 3 <= len(logged) <= 5
    assert logged[-1].startswith("requests 9/50")
    assert len(set(logged)) == len(logged)  # an unchanged line is not logged again


def test_an_interrupt_still_propagates_through_the_reporter() -> None:
    reporter = ProgressReporter(
        snap, live=False, write=lambda text: None, log=lambda line: None, every_s=0.01
    )

    async def run() -> None:
        async with reporter.running():
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())

"""Progress while a run probes: one line a person can read at a glance.

``requests 23/50 · judged 21/29 models · 2 retries · quota 27 left · ~1m12s to go · round 3 deepening``

On a terminal the line is redrawn in place (``\\r``) twice a second; anywhere else (a log file, the
Prefect UI, a pipe) it is logged every ``every_s`` seconds. :func:`progress_line` is pure; the
:class:`ProgressReporter` only decides when to show it. The line holds counts and project words only,
never server text, so it is safe to log as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

LIVE_EVERY_S = 0.5
_CLEAR = "\r\x1b[2K"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Where probing stands."""

    sent: int  # requests this run has sent
    planned: int  # requests it will have sent when done (sent plus what the plan and budget allow)
    judged: int  # models with a verdict
    models: int  # free models of the run
    retries: int  # attempts after the first of their probe
    quota_left: int | None  # requests the daily budget still allows (None: no daily limit)
    eta_s: float | None  # seconds to the end at the current pace (None: unknown)
    round_name: str | None = None  # the round being sent


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``1h02m``."""
    total = max(0, math.ceil(seconds))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{total % 3600 // 60:02d}m"


def progress_line(s: Snapshot) -> str:
    """The progress line of a snapshot (see the module docstring)."""
    parts = [
        f"requests {s.sent}/{max(s.planned, s.sent)}",
        f"judged {s.judged}/{s.models} models",
        f"{s.retries} {'retry' if s.retries == 1 else 'retries'}",
        "no daily limit" if s.quota_left is None else f"quota {s.quota_left} left",
    ]
    if s.eta_s is not None:
        parts.append(f"~{duration(s.eta_s)} to go")
    if s.round_name:
        parts.append(s.round_name.replace("-", " "))
    return " · ".join(parts)


def eta_s(remaining: int, interval_s: float) -> float:
    """Seconds to send ``remaining`` requests paced one every ``interval_s`` seconds."""
    return max(0, remaining) * max(0.0, interval_s)


class ProgressReporter:
    """Shows :func:`progress_line` of ``snapshot()``: live on a terminal, else logged every ``every_s``."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        *,
        live: bool,
        write: Callable[[str], None],
        log: Callable[[str], None],
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self.live = live
        self._write = write
        self._log = log
        self.every_s = every_s
        self._clock = clock
        self._shown = False
        self._last_logged: str | None = None
        self.round_name: str | None = None
        """The round being sent, for the snapshot to show (set by whoever sends the rounds)."""

    def show(self) -> None:
        """Show the current line now."""
        line = progress_line(self._snapshot())
        if self.live:
            self._write(_CLEAR + line)
            self._shown = True
        elif line != self._last_logged:
            self._log(line)
            self._last_logged = line

    def clear(self) -> None:
        """Take the live line off the terminal (before a log line is printed)."""
        if self.live and self._shown:
            self._write(_CLEAR)
            self._shown = False

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(LIVE_EVERY_S if self.live else self.every_s)
            self.show()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProgressReporter]:
        """Show the line until the block ends; the last state is logged (or left on the terminal)."""
        ticker = asyncio.create_task(self._tick())
        try:
            yield self
        finally:
            ticker.cancel()
            await asyncio.wait([ticker])  # never raises: an interrupt of the run still propagates
            if self.live:
                self.show()
                self._write("\n")
                self._shown = False
            else:
                self.show()

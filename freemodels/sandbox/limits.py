"""The account's free-model limits: a sliding 60 s window and a daily quota (UTC day), account-wide.

Counted: chat requests to free models (``:free`` ids and zero-priced models, routers included) that pass
authentication and name a model OpenRouter knows, whatever the model then answers (errors, an upstream
429, a refusal by a provider's shared pool). OpenRouter's own help centre says "Failed attempts still count
toward your daily quota" (openrouter.zendesk.com, article 39501163636379), so by default requests refused
by these limits themselves count too (``limits.count_rejected``, default true); the page does not say
which failures it means, and ``count_rejected = false`` stages the narrower reading.

A request with a ``models`` fallback array is one request to these limits, counted once when it reaches
its first free model; a refusal refuses it for every free model of the array (they share the account's
limits), so falling back never avoids an account 429 (see :mod:`freemodels.sandbox.app`).

``limits.requests_this_minute`` stages other traffic of the account: that many requests already sit in
the minute window when the sandbox starts, and leave it ``limits.minute_clears_in_s`` seconds later.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from freemodels.sandbox.scenario import Limits

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request is refused: ``per-min`` or ``per-day``, with the reset time in epoch ms."""

    kind: str
    limit: int
    reset_ms: int


class AccountLimiter:
    """Sliding-window and daily counters. Monotonic time drives the window; wall time the UTC day."""

    def __init__(self, limits: Limits, *, now_wall: float, now_mono: float | None = None) -> None:
        self._limits = limits
        start = time.monotonic() if now_mono is None else now_mono
        # Other traffic of the account: in the window now, gone ``minute_clears_in_s`` from now.
        arrived = start - WINDOW_S + limits.minute_clears_in_s
        self._window: deque[float] = deque([arrived] * limits.requests_this_minute)
        self._day = _utc_day(now_wall)
        self._day_count = limits.requests_used_today

    def admit(self, now_mono: float, now_wall: float) -> Rejection | None:
        """Count this request if allowed; return the rejection otherwise."""
        self._roll_day(now_wall)
        self._prune(now_mono)
        rejection: Rejection | None = None
        if self._day_count >= self._limits.requests_per_day:
            rejection = Rejection("per-day", self._limits.requests_per_day, _next_midnight_ms(now_wall))
        elif len(self._window) >= self._limits.requests_per_minute:
            wait_s = self._window[0] + WINDOW_S - now_mono
            reset_ms = int((now_wall + max(0.0, wait_s)) * 1000)
            rejection = Rejection("per-min", self._limits.requests_per_minute, reset_ms)
        if rejection is None or self._limits.count_rejected:
            self._window.append(now_mono)
            self._day_count += 1
        return rejection

    def used_today(self, now_wall: float) -> int:
        """Requests counted in the current UTC day."""
        self._roll_day(now_wall)
        return self._day_count

    def _roll_day(self, now_wall: float) -> None:
        day = _utc_day(now_wall)
        if day != self._day:
            self._day = day
            self._day_count = 0

    def _prune(self, now_mono: float) -> None:
        while self._window and self._window[0] <= now_mono - WINDOW_S:
            self._window.popleft()


class ArrivalWindow:
    """Most requests seen in any 60 s span (to check that a client kept to its rate)."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self.max_in_window = 0

    def add(self, now_mono: float) -> None:
        self._times.append(now_mono)
        while self._times and self._times[0] <= now_mono - WINDOW_S:
            self._times.popleft()
        self.max_in_window = max(self.max_in_window, len(self._times))


def _utc_day(now_wall: float) -> str:
    return datetime.fromtimestamp(now_wall, UTC).date().isoformat()


def _next_midnight_ms(now_wall: float) -> int:
    today = datetime.fromtimestamp(now_wall, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today + timedelta(days=1)).timestamp() * 1000)

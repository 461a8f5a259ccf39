"""Availability over time: from the catalog snapshots of runs and watches, which models were free when.

The input is one row per model and observed day (:func:`freemodels.storage.availability_days`): a day is
*observed* when at least one snapshot (a run or a watch of the source) read the catalog that day, and a
model is *free* on an observed day when one of that day's snapshots listed it as free. A model without a
row on an observed day was not free that day (not listed, or listed with a price). Days without any
snapshot are unknown: they count neither way, so a machine that was off for a week does not make every
model look lost.

Per model (:func:`summarize`): the first and last observed day it was free, the days it was free over the
last 90 and 365 days (with how many days were observed in each window), and the last day its state
changed (it became free, or stopped being free). Everything here is pure: frames and dates in, frozen
records out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import pairwise

import polars as pl

WINDOWS: tuple[int, int] = (90, 365)
"""The windows, in days, over which days free are counted (the last N days up to the report's day)."""

BECAME_FREE = "became free"
STOPPED_FREE = "no longer free"

AVAILABILITY_DAYS_SCHEMA: dict[str, pl.DataType] = {
    "model_id": pl.String(),
    "day": pl.Date(),
    "free": pl.Boolean(),
}


@dataclass(frozen=True, slots=True)
class ModelAvailability:
    """One model's free days, as the snapshots saw them."""

    model_id: str
    free_now: bool  # free on the last observed day
    first_free: date | None
    last_free: date | None
    days_free_90: int
    days_free_365: int
    changed_on: date | None  # the last observed day its state differed from the observed day before
    change: str | None  # BECAME_FREE | STOPPED_FREE
    changes: int  # how many times its state changed over the observed days


@dataclass(frozen=True, slots=True)
class DayCount:
    """How many models were free on one observed day."""

    day: date
    free: int


@dataclass(frozen=True, slots=True)
class Availability:
    """The whole picture up to ``until``."""

    until: date
    observed: tuple[date, ...]  # observed days, oldest first
    observed_90: int
    observed_365: int
    models: tuple[ModelAvailability, ...]  # free now first, then most days free, then by id
    per_day: tuple[DayCount, ...]  # one per observed day

    @property
    def snapshots_span(self) -> tuple[date, date] | None:
        return (self.observed[0], self.observed[-1]) if self.observed else None


def _in_window(day: date, until: date, days: int) -> bool:
    return until - timedelta(days=days - 1) <= day <= until


def summarize(days: pl.DataFrame, observed: Sequence[date], until: date) -> Availability:
    """The availability of every model ever seen free, up to ``until`` (inclusive).

    ``days`` has :data:`AVAILABILITY_DAYS_SCHEMA` (duplicates of a model and day are merged: free if
    any says so); ``observed`` the observed days (any order; those after ``until`` are ignored).
    """
    seen = sorted({d for d in observed if d <= until})
    free_days: dict[str, set[date]] = {}
    for model_id, day, free in days.select("model_id", "day", "free").iter_rows():
        if free and day <= until:
            free_days.setdefault(model_id, set()).add(day)
    last = seen[-1] if seen else None
    models: list[ModelAvailability] = []
    for model_id, free in free_days.items():
        states = [(d, d in free) for d in seen]
        changed_on: date | None = None
        change: str | None = None
        count = 0
        for (_, before), (day, after) in pairwise(states):
            if before != after:
                count += 1
                changed_on, change = day, BECAME_FREE if after else STOPPED_FREE
        models.append(
            ModelAvailability(
                model_id=model_id,
                free_now=last is not None and last in free,
                first_free=min(free),
                last_free=max(free),
                days_free_90=sum(1 for d in free if _in_window(d, until, WINDOWS[0])),
                days_free_365=sum(1 for d in free if _in_window(d, until, WINDOWS[1])),
                changed_on=changed_on,
                change=change,
                changes=count,
            )
        )
    models.sort(key=lambda m: (not m.free_now, -m.days_free_365, m.model_id))
    per_day = tuple(DayCount(d, sum(1 for f in free_days.values() if d in f)) for d in seen)
    return Availability(
        until=until,
        observed=tuple(seen),
        observed_90=sum(1 for d in seen if _in_window(d, until, WINDOWS[0])),
        observed_365=sum(1 for d in seen if _in_window(d, until, WINDOWS[1])),
        models=tuple(models),
        per_day=per_day,
    )


def as_context(availability: Availability | None, *, limit: int = 60) -> dict[str, object]:
    """Plain values for the reports' "Free models over time" section (dates as ISO text; at most
    ``limit`` models, free now first)."""
    if availability is None or not availability.observed:
        return {"observed": 0, "models": [], "total": 0, "first": None, "last": None}

    def iso(day: date | None) -> str | None:
        return day.isoformat() if day is not None else None

    return {
        "observed": len(availability.observed),
        "first": iso(availability.observed[0]),
        "last": iso(availability.observed[-1]),
        "observed_90": availability.observed_90,
        "observed_365": availability.observed_365,
        "total": len(availability.models),
        "free_now": sum(1 for m in availability.models if m.free_now),
        "models": [
            {
                "model_id": m.model_id,
                "free_now": m.free_now,
                "first_free": iso(m.first_free),
                "last_free": iso(m.last_free),
                "days_free_90": m.days_free_90,
                "days_free_365": m.days_free_365,
                "changed_on": iso(m.changed_on),
                "change": m.change,
            }
            for m in availability.models[:limit]
        ],
    }

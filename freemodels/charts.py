"""SVG charts for the reports, drawn with matplotlib.

Why matplotlib: it runs offline with no browser, no JavaScript and no binary beyond its wheel, it is
already in the dependency tree, and its SVG backend writes byte-identical files for identical input once
the element-id salt and the date metadata are fixed (both are, below), so generated charts can be
committed and snapshot-tested. Plotly/Altair need a browser engine (kaleido/vl-convert) for static SVG.

Every chart is drawn on a fresh :class:`~matplotlib.figure.Figure` (no pyplot, no global figure state)
under a local ``rc_context``. Text is written as SVG ``<text>`` (escaped by matplotlib, no glyph paths),
and math-text parsing is off, so a model id with ``$`` signs is drawn as it is. Data elements carry SVG
ids (``latency-p50-<i>``, ``outcome-<i>``, ``trend-free``, ``trend-working``, ``availability-free``)
so tests can find them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import matplotlib as mpl

mpl.use("Agg")

from matplotlib.figure import Figure  # after choosing the backend
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

from freemodels.mdsafe import neutralise

_RC: dict[str, Any] = {
    "svg.hashsalt": "free-model-discovery",
    "svg.fonttype": "none",
    "text.parse_math": False,
    "text.usetex": False,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "path.simplify": False,
}
_METADATA = {"Date": None, "Creator": None}
# Colour per tier position, fastest first (colour-blind safe, Okabe-Ito); the last is "other".
_TIER_COLOURS = ("#009E73", "#56B4E9", "#E69F00", "#D55E00", "#999999")
_MAX_LABEL = 48
_MAX_DATE_TICKS = 12
# Tick positions of the logarithmic time axis, in seconds, labelled in plain text (no math text).
_SECOND_TICKS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
_CHAR_WIDTH_IN = 0.075  # average width of one 9 pt DejaVu Sans character


@dataclass(frozen=True, slots=True)
class LatencyBar:
    """One working model in the latency chart."""

    label: str
    tier: str
    p50_ms: float
    p90_ms: float | None = None


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One run in the trend chart."""

    label: str  # e.g. the run's date
    free: int
    working: int


@contextmanager
def _style() -> Iterator[None]:
    with mpl.rc_context(_RC):  # type: ignore[arg-type]  # matplotlib types keys as a Literal
        yield


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=_METADATA)
    return buffer.getvalue()


def _short(label: str) -> str:
    text = neutralise(" ".join(label.split()))
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def _note(fig: Figure, note: str | None) -> None:
    """A warning (e.g. sandbox data) in the top right corner."""
    if note:
        top = 1 - 0.1 / fig.get_figheight()
        fig.text(0.99, top, note, fontsize=8, color="#B00020", ha="right", va="top")


def _fixed_figure(n_rows: int, labels: Sequence[str]) -> Figure:
    """A figure for a horizontal bar chart with fixed margins.

    Margins are computed from the row count and the longest label instead of a layout engine: layout
    engines measure every tick label several times, which dominates the cost of a 100-row chart.
    """
    row_in, top_in, bottom_in, width_in = 0.22, 0.5, 0.6, 8.0
    height_in = top_in + bottom_in + row_in * max(n_rows, 1)
    longest = max((len(_short(label)) for label in labels), default=0)
    left_in = min(0.3 + _CHAR_WIDTH_IN * longest, 4.0)
    fig = Figure(figsize=(width_in, height_in))
    fig.subplots_adjust(
        left=left_in / width_in,
        right=0.97,
        top=1 - top_in / height_in,
        bottom=bottom_in / height_in,
    )
    return fig


def _titles(fig: Figure, title: str, xlabel: str) -> None:
    """Title and x-axis label as figure text (axis labels would re-measure every tick label)."""
    height_in = fig.get_figheight()
    fig.text(0.01, 1 - 0.1 / height_in, title, ha="left", va="top", fontsize=10)
    fig.text(0.5, 0.08 / height_in, xlabel, ha="center", va="bottom", fontsize=8)


def _empty(fig: Figure, message: str) -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)


def latency_svg(
    bars: Sequence[LatencyBar],
    *,
    tiers: Sequence[str],
    thresholds_ms: Sequence[float] = (),
    note: str | None = None,
) -> str:
    """Horizontal bars of P50 total latency per model with a whisker to P90, coloured by tier.

    ``tiers`` gives the tier order (fastest first) for colours and grouping; ``thresholds_ms`` draws the
    tier bounds as dotted lines. The time axis is logarithmic so sub-second and minute-long models fit.
    """
    order = {name: i for i, name in enumerate(tiers)}
    rows = sorted(bars, key=lambda b: (order.get(b.tier, len(tiers)), b.p50_ms, b.label))
    with _style():
        fig = _fixed_figure(len(rows), [b.label for b in rows])
        if not rows:
            _empty(fig, "No working model was tiered in this run.")
            _note(fig, note)
            return _svg(fig)
        ax = fig.add_subplot()
        positions = list(range(len(rows)))[::-1]
        seconds = [b.p50_ms / 1000 for b in rows]
        colours = [_TIER_COLOURS[min(order.get(b.tier, len(tiers)), 4)] for b in rows]
        for i, bar in enumerate(ax.barh(positions, seconds, color=colours, height=0.65)):
            bar.set_gid(f"latency-p50-{i}")
        p90 = [max((b.p90_ms or b.p50_ms) - b.p50_ms, 0.0) / 1000 for b in rows]
        ax.errorbar(
            seconds,
            positions,
            xerr=[[0.0] * len(rows), p90],
            fmt="none",
            ecolor="#333333",
            elinewidth=0.8,
            capsize=2,
            gid="latency-p90",
        )
        ax.set_yticks(positions, [_short(b.label) for b in rows])
        ax.set_ylim(-0.7, len(rows) - 0.3)
        ax.set_xscale("log")
        smallest = min(seconds)
        largest = max(s + w for s, w in zip(seconds, p90, strict=True))
        low, high = max(smallest / 2, 0.05), max(largest * 1.5, 20.0)
        ax.set_xlim(low, high)
        ticks = [t for t in _SECOND_TICKS if low <= t <= high]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.set_xticks(ticks, [f"{t:g} s" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        for bound in thresholds_ms:
            ax.axvline(bound / 1000, color="#777777", linestyle=":", linewidth=0.8)
        handles = [
            Patch(color=_TIER_COLOURS[min(i, 4)], label=name)
            for i, name in enumerate(tiers)
            if any(b.tier == name for b in rows)
        ]
        ax.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)
        _titles(fig, "Latency per working model, by tier", "seconds (bar: P50 total, whisker: P90)")
        _note(fig, note)
        return _svg(fig)


def failures_svg(counts: Sequence[tuple[str, int]], *, passed: int, note: str | None = None) -> str:
    """Horizontal bars: final probe outcomes, ``passed`` first, then one bar per failure class."""
    rows = [("passed", passed), *[(label, n) for label, n in counts if n > 0]]
    with _style():
        fig = _fixed_figure(len(rows), [label for label, _ in rows])
        if sum(n for _, n in rows) == 0:
            _empty(fig, "No probe was sent in this run.")
            _note(fig, note)
            return _svg(fig)
        ax = fig.add_subplot()
        positions = list(range(len(rows)))[::-1]
        colours = ["#009E73"] + ["#D55E00"] * (len(rows) - 1)
        widths = [n for _, n in rows]
        for i, bar in enumerate(ax.barh(positions, widths, color=colours, height=0.65)):
            bar.set_gid(f"outcome-{i}")
        ax.set_yticks(positions, [_short(label) for label, _ in rows])
        for y, (_, n) in zip(positions, rows, strict=True):
            ax.annotate(str(n), (n, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        _titles(fig, "Probe outcomes: passed and failures by class", "final probe attempts")
        _note(fig, note)
        return _svg(fig)


def trend_svg(points: Sequence[TrendPoint], *, note: str | None = None) -> str:
    """Free and working model counts across runs (one point per run, oldest first)."""
    with _style():
        fig = Figure(figsize=(8.0, 3.2))
        fig.subplots_adjust(left=0.08, right=0.98, top=0.84, bottom=0.24)
        if not points:
            _empty(fig, "No runs yet.")
            _note(fig, note)
            return _svg(fig)
        ax = fig.add_subplot()
        xs = list(range(len(points)))
        marker = "o" if len(points) <= 24 else None
        ax.plot(xs, [p.free for p in points], marker=marker, label="free", gid="trend-free")
        ax.plot(xs, [p.working for p in points], marker=marker, label="working", gid="trend-working")
        step = max(1, math.ceil(len(points) / _MAX_DATE_TICKS))
        ticks = xs[::step]
        ax.set_xticks(ticks, [points[i].label for i in ticks], rotation=30, ha="right")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("models")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=8, frameon=False)
        fig.text(0.01, 0.97, "Free and working models per run", ha="left", va="top", fontsize=10)
        _note(fig, note)
        return _svg(fig)


@dataclass(frozen=True, slots=True)
class DayPoint:
    """One observed day in the availability chart."""

    day: date
    free: int  # models free that day


def availability_svg(points: Sequence[DayPoint], *, note: str | None = None) -> str:
    """Free models over time, one step per day from the first observed day to the last; days
    without a snapshot are left as gaps (``availability-free``)."""
    with _style():
        fig = Figure(figsize=(8.0, 3.2))
        fig.subplots_adjust(left=0.08, right=0.98, top=0.84, bottom=0.24)
        if not points:
            _empty(fig, "No catalog snapshot yet.")
            _note(fig, note)
            return _svg(fig)
        ax = fig.add_subplot()
        ordered = sorted(points, key=lambda p: p.day)
        first = ordered[0].day
        span = (ordered[-1].day - first).days + 1
        values = [math.nan] * span
        for p in ordered:
            values[(p.day - first).days] = p.free
        xs = list(range(span))
        marker = "o" if span <= 45 else None
        ax.step(xs, values, where="mid", marker=marker, markersize=3, gid="availability-free")
        step = max(1, math.ceil(span / _MAX_DATE_TICKS))
        ticks = xs[::step]
        labels = [(first + timedelta(days=i)).isoformat() for i in ticks]
        ax.set_xticks(ticks, labels, rotation=30, ha="right")
        ax.set_xlim(-0.5, span - 0.5)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("free models")
        fig.text(0.01, 0.97, "Free models over time (per day)", ha="left", va="top", fontsize=10)
        _note(fig, note)
        return _svg(fig)

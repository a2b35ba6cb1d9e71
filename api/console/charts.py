"""Charts as geometry for server-rendered SVG: no chart library, nothing to load at run time.

Each function turns figures into shapes (positions, sizes, a CSS class, and the label that the
shape's SVG <title> shows on hover and a screen reader reads). The templates (`_charts.html`)
draw them; the stylesheet colours them by class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from api.console.timeline import BACKOFF, RunTimeline, format_duration

WIDTH = 960
LABEL_WIDTH = 210
RIGHT_PAD = 24
PLOT_WIDTH = WIDTH - LABEL_WIDTH - RIGHT_PAD
MIN_BAR = 3.0
VALUE_TEXT = 200  # room right of a horizontal bar for its value


@dataclass(frozen=True, slots=True)
class Shape:
    x: float
    y: float
    width: float
    height: float
    css: str
    label: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    title: str  # the accessible name of the whole chart
    height: int
    shapes: list[Shape] = field(default_factory=list)
    rows: list[Tick] = field(default_factory=list)  # row labels: y position and text
    ticks: list[Tick] = field(default_factory=list)  # the axis
    markers: list[Shape] = field(default_factory=list)
    width: int = WIDTH
    label_width: int = LABEL_WIDTH


# --- one run of one request ------------------------------------------------------------------

LANE, BAR, AXIS = 26, 16, 28


def timeline_chart(run: RunTimeline, now: datetime) -> Chart:
    t0 = run.start
    ends = [b.end or now for b in run.bars] + [m.at for m in run.markers]
    t1 = max([run.end or now, *ends]) if run.end is None else max([run.end, *ends])
    span = max((t1 - t0).total_seconds(), 0.001)

    def x(at: datetime) -> float:
        return LABEL_WIDTH + (at - t0).total_seconds() / span * PLOT_WIDTH

    done = run.completed_steps()
    chart = Chart(title=f"Timeline of run {run.run}: {done} step{'s' * (done != 1)} completed, "
                        f"{run.outcome.lower()}",
                  height=AXIS + LANE * max(len(run.lanes), 1) + 8)
    for index, lane in enumerate(run.lanes):
        chart.rows.append(Tick(AXIS + index * LANE + LANE / 2, lane))
    for bar in run.bars:
        top = AXIS + run.lanes.index(bar.lane) * LANE + (LANE - BAR) / 2
        left = x(bar.start)
        width = max(x(bar.end or now) - left, MIN_BAR)
        css = "backoff" if bar.kind == BACKOFF else bar.outcome.replace(",", "").replace(" ", "-")
        chart.shapes.append(Shape(left, top, width, BAR, css, bar.label(now)))
    for i in range(5):
        chart.ticks.append(Tick(LABEL_WIDTH + PLOT_WIDTH * i / 4,
                                format_duration(timedelta(seconds=span * i / 4))))
    for marker in run.markers:
        chart.markers.append(Shape(x(marker.at), AXIS - 4, 0, chart.height - AXIS, "marker",
                                   marker.label))
    return chart


# --- the overview ----------------------------------------------------------------------------


def nice_top(value: float, *, whole: bool = False) -> float:
    """The axis' end: four equal ticks of 1, 2, 2.5 or 5 times a power of ten (whole ones for
    counts), at least `value`."""
    step = max(value / 4, 1.0 if whole else 1e-9)
    magnitude = 10 ** math.floor(math.log10(step))
    for factor in (1, 2, 2.5, 5, 10):
        if whole and factor * magnitude != int(factor * magnitude):
            continue
        if factor * magnitude >= step - 1e-12:
            return 4 * factor * magnitude
    return 4 * step


def horizontal_bars(title: str, items: Sequence[tuple[str, float, str, str]],
                    maximum: float | None = None, *, whole: bool = False) -> Chart:
    """One bar per item: (row label, value, value as text, CSS class)."""
    top = maximum or nice_top(max([0.0, *(value for _, value, _, _ in items)]) or 1.0,
                              whole=whole)
    chart = Chart(title=title, height=AXIS + LANE * max(len(items), 1) + 8)
    for index, (label, value, text, css) in enumerate(items):
        y = AXIS + index * LANE
        chart.rows.append(Tick(y + LANE / 2, label))
        chart.shapes.append(Shape(LABEL_WIDTH, y + (LANE - BAR) / 2,
                                  max(value / top * (PLOT_WIDTH - VALUE_TEXT),
                                      MIN_BAR if value else 0),
                                  BAR, css, f"{label}: {text}"))
    for i in range(5):
        chart.ticks.append(Tick(LABEL_WIDTH + (PLOT_WIDTH - VALUE_TEXT) * i / 4,
                                _number(top * i / 4)))
    return chart


def per_minute(title: str, now: datetime, counts: Sequence[tuple[datetime, str, int]],
               workflows: Sequence[str]) -> Chart:
    """Requests created per minute over the last hour, stacked by workflow."""
    height = 200
    plot_top, plot_bottom = AXIS, height - 24
    end = now.replace(second=0, microsecond=0)
    minutes = [end - timedelta(minutes=59 - i) for i in range(60)]
    per = {(m, w): n for m, w, n in counts}
    totals = [sum(per.get((m, w), 0) for w in workflows) for m in minutes]
    top = nice_top(max([*totals, 1]), whole=True)
    slot = (WIDTH - 60 - RIGHT_PAD) / 60
    chart = Chart(title=title, height=height, label_width=60)
    for i, minute in enumerate(minutes):
        base = float(plot_bottom)
        for workflow in workflows:
            n = per.get((minute, workflow), 0)
            if not n:
                continue
            h = n / top * (plot_bottom - plot_top)
            base -= h
            chart.shapes.append(Shape(60 + i * slot + 1, base, max(slot - 2, 1), h,
                                      f"wf-{workflow}",
                                      f"{minute:%H:%M} UTC, {workflow}: {n} "
                                      f"request{'s' * (n != 1)}"))
    for i in range(0, 61, 15):
        chart.ticks.append(Tick(60 + i * slot, "now" if i == 60 else f"-{60 - i} min"))
    for i in range(5):
        chart.rows.append(Tick(plot_bottom - (plot_bottom - plot_top) * i / 4,
                               _number(top * i / 4)))
    return chart


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"

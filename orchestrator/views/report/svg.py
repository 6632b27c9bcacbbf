"""The report's drawings, as inline SVG built from the report data (no script, no font, no
image fetched): the window against its deadline, the timelines, the cold patches.

Every drawing shares one geometry: a label column on the left, then a plot
area :data:`PLOT_W` wide starting at :data:`X0`, one row :data:`ROW_H` high per
thing drawn. Each row is a ``<g class="row" data-row="KIND">`` holding its
label, so a reader (or a test) finds the rows without knowing coordinates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.runner.journal import iso_ms
from orchestrator.runner.runs import epoch
from orchestrator.views.figures import instant, latency, seconds
from orchestrator.views.report.data import number
from orchestrator.views.report.markup import Markup, el, join

WIDTH = 1100
X0 = 300
PLOT_W = 760
ROW_H = 22
BAR_H = 12
AXIS_H = 24
LABEL_CHARS = 44


def svg(kind: str, height: float, *children: Any, title: str = "") -> Markup:
    """An ``<svg class="KIND">`` of the report's width, ``height`` high, titled for readers."""
    return el("svg", {"class": kind, "xmlns": "http://www.w3.org/2000/svg",
                      "width": WIDTH, "height": round(height), "role": "img",
                      "viewBox": f"0 0 {WIDTH} {round(height)}"},
              el("title", None, title) if title else None, *children)


def text(x: float, y: float, content: Any, css: str = "", anchor: str = "start") -> Markup:
    """A line of text at (x, y); ``anchor`` start, middle or end."""
    return el("text", {"x": float(x), "y": float(y), "class": css or None,
                       "text-anchor": None if anchor == "start" else anchor}, content)


def rect(css: str, x: float, y: float, width: float, height: float, tip: str = "") -> Markup:
    """A rectangle with a tooltip (its ``<title>``) when ``tip`` is given."""
    attrs = {"class": css, "x": float(x), "y": float(y), "width": float(max(width, 0.0)),
             "height": float(height)}
    return el("rect", attrs, el("title", None, tip)) if tip else el("rect", attrs)


def vline(css: str, x: float, top: float, bottom: float, tip: str = "") -> Markup:
    """A vertical line from ``top`` to ``bottom`` at ``x``."""
    attrs = {"class": css, "x1": float(x), "x2": float(x), "y1": float(top), "y2": float(bottom)}
    return el("line", attrs, el("title", None, tip)) if tip else el("line", attrs)


def row(kind: str, index: int, label: str, *children: Any, top: float = AXIS_H,
        tip: str = "") -> Markup:
    """Row ``index`` (from 0, under the axis): a label (cut to fit, whole in its tooltip)."""
    y = top + index * ROW_H
    shown = label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "\u2026"
    return el("g", {"class": "row", "data-row": kind},
              el("text", {"class": "label", "x": 4.0, "y": float(y + ROW_H / 2 + 4)},
                 shown, el("title", None, tip or label)),
              *children)


def bar_top(index: int, top: float = AXIS_H, height: float = BAR_H) -> float:
    """The y of a bar ``height`` high centred in row ``index``."""
    return top + index * ROW_H + (ROW_H - height) / 2


@dataclass(frozen=True)
class Scale:
    """A linear map from ``lo``..``hi`` (seconds, or epoch instants) to the plot's x."""

    lo: float
    hi: float

    def x(self, value: float) -> float:
        """The x of ``value``, held inside the plot."""
        share = (value - self.lo) / (self.hi - self.lo)
        return X0 + PLOT_W * min(1.0, max(0.0, share))

    def span(self, start: float, end: float, least: float = 0.0) -> tuple[float, float]:
        """(x, width) of ``start``..``end``, at least ``least`` wide (a short thing stays seen)."""
        left = self.x(start)
        return left, max(self.x(end) - left, least)

    def ticks(self, label: Any, count: int = 5) -> Markup:
        """``count`` labelled ticks along the top, first flush left and last flush right."""
        parts = []
        for i in range(count):
            value = self.lo + (self.hi - self.lo) * i / (count - 1)
            x = X0 + PLOT_W * i / (count - 1)
            anchor = "start" if i == 0 else "end" if i == count - 1 else "middle"
            parts.append(vline("tick", x, AXIS_H - 6, AXIS_H))
            parts.append(text(x, AXIS_H - 9, label(value), "tick", anchor))
        return join(parts)


def offset(value: float) -> str:
    """Seconds from a reference instant, signed: ``0``, ``+12 ms``, ``-2.2 ms``, ``+1.043 s``."""
    if value == 0:
        return "0"
    return ("-" if value < 0 else "+") + latency(abs(value))


def duration(value: float) -> str:
    """An axis's seconds: ``0``, ``12 ms``, ``1.043 s``."""
    return "0" if value == 0 else latency(value)


def value_text(x: float, width: float, y: float, content: str) -> Markup:
    """A bar's figure: right of the bar, or inside its end when the plot has no room left."""
    if x + width + 6 + 7 * len(content) <= WIDTH:
        return text(x + width + 6, y, content, "value")
    return text(x + width - 6, y, content, "value inbar", "end")


# --- the window against the deadline -----------------------------------------------------


def window_chart(window: Mapping[str, Any], last: float | None) -> Markup | None:
    """The window to scale against its budget: 0 is the opening, the deadline is at budget.

    Rows: the budget (``rect.budget`` up to the deadline), the window
    (``rect.window`` up to the closing; ``over`` past the deadline;
    ``unclosed`` up to ``last``, the last instant known, when it never closed)
    and the estimate (``rect.estimate``) when one was recorded. None when
    there is neither a budget nor a window to draw.
    """
    opened = epoch(window.get("opened"))
    closed = epoch(window.get("closed"))
    budget, outage = number(window.get("budget_s")), number(window.get("outage_s"))
    estimated = number(window.get("estimated_s"))
    unclosed = None
    if opened is not None and closed is None and last is not None and last > opened:
        unclosed = last - opened
    figures = [v for v in (budget, outage, estimated, unclosed) if v is not None and v > 0]
    if not figures:
        return None
    scale = Scale(0.0, max(figures) * (1.0 if budget is not None and budget >= max(figures)
                                       else 1.05))
    rows: list[Markup] = []
    if budget is not None:
        x, width = scale.span(0.0, budget)
        rows.append(row("budget", len(rows), "budget", rect("budget", x, bar_top(0), width, BAR_H,
                                                               f"budget {seconds(budget)}"),
                        text(x + 4, bar_top(0) + BAR_H - 2, f"budget {seconds(budget)}",
                             "inbar")))
    index = len(rows)
    if opened is None:
        rows.append(row("window", index, "window", text(X0, bar_top(index) + BAR_H - 2,
                                                        "no window opened", "note")))
    elif outage is not None or unclosed is not None:
        length = outage if outage is not None else unclosed or 0.0
        css = ("window unclosed" if outage is None
               else "window over" if window.get("over_budget") else "window")
        x, width = scale.span(0.0, length)
        if outage is None:
            said = f"never closed: open {latency(length)} at least"
        elif budget:
            said = f"{latency(length)}: {length / budget:.1%} of the budget"
        else:
            said = latency(length)
        rows.append(row("window", index, "window (journal)",
                        rect(css, x, bar_top(index), width, BAR_H,
                             f"opened {instant(opened)}, closed {instant(closed)}"),
                        value_text(x, width, bar_top(index) + BAR_H - 2, said)))
    if estimated is not None:
        index = len(rows)
        x, width = scale.span(0.0, estimated)
        rows.append(row("estimate", index, "estimate (rehearsals)",
                        rect("estimate", x, bar_top(index), width, BAR_H,
                             f"estimated {seconds(estimated)}"),
                        value_text(x, width, bar_top(index) + BAR_H - 2, seconds(estimated))))
    bottom = AXIS_H + len(rows) * ROW_H
    marks = []
    if budget is not None:
        deadline = scale.x(budget)
        marks.append(vline("deadline", deadline, AXIS_H - 4, bottom,
                           f"deadline {instant(window.get('deadline'))}"))
    return svg("window-chart", bottom + 6, scale.ticks(offset), *rows, *marks,
               title="the window drawn to scale against the deadline")


# --- timelines -----------------------------------------------------------------------


def timeline(data: Mapping[str, Any], bounds: tuple[float, float], *, zoom: bool) -> Markup:
    """The probe's row and one row per step on a time axis spanning ``bounds`` (epoch).

    The window is shaded behind every row (``rect.win``), the deadline drawn
    when it falls inside; the probe row marks its outages (``rect.down``).
    The axis reads UTC times, or, when ``zoom``, seconds from the opening.
    """
    scale = Scale(*bounds)
    window = data["window"]
    opened, closed = epoch(window.get("opened")), epoch(window.get("closed"))
    steps = [step for step in data["steps"] if _visible(step, bounds)]
    bottom = AXIS_H + (1 + len(steps)) * ROW_H
    back: list[Markup] = []
    if opened is not None:
        x, width = scale.span(opened, closed if closed is not None else bounds[1], 1.0)
        back.append(rect("win", x, AXIS_H, width, bottom - AXIS_H,
                         f"window: opened {instant(opened)}, closed {instant(closed)}"))
    deadline = epoch(window.get("deadline"))
    if deadline is not None and bounds[0] <= deadline <= bounds[1]:
        back.append(vline("deadline", scale.x(deadline), AXIS_H, bottom,
                          f"deadline {instant(deadline)}"))
    rows = [_probe_row(data.get("probe") or {}, scale, bounds)]
    rows += [_step_row(step, i + 1, scale, bounds) for i, step in enumerate(steps)]
    if zoom and opened is not None:
        def label(value: float) -> str:
            return offset(value - opened)
    else:
        def label(value: float) -> str:
            return iso_ms(value)[11:23]
    caption = text(4, AXIS_H - 9, ("from the opening" if zoom and opened is not None else "UTC")
                   + f" ({latency(bounds[1] - bounds[0])} shown)", "tick")
    return svg("timeline zoom" if zoom else "timeline", bottom + 4, caption,
               scale.ticks(label), *back, *rows,
               title="the window, zoomed" if zoom else "the whole run")


def _visible(step: Mapping[str, Any], bounds: tuple[float, float]) -> bool:
    started = epoch(step.get("started"))
    if started is None:
        return False
    duration = number(step.get("duration_s"))
    ended = started + duration if duration is not None else bounds[1]
    return ended >= bounds[0] and started <= bounds[1]


def _probe_row(probe: Mapping[str, Any], scale: Scale, bounds: tuple[float, float]) -> Markup:
    parts: list[Markup] = []
    first, last = epoch(probe.get("first")), epoch(probe.get("last"))
    if first is not None and last is not None:
        x, width = scale.span(max(first, bounds[0]), min(last, bounds[1]))
        if first <= bounds[1] and last >= bounds[0]:
            parts.append(rect("probe", x, bar_top(0, height=4), width, 4,
                              f"probe: requests from {instant(first)} to {instant(last)}"))
    outages = probe.get("outages")
    for outage in outages if isinstance(outages, list) else []:
        start = epoch(outage.get("start")) if isinstance(outage, Mapping) else None
        if start is None:
            continue
        end = epoch(outage.get("end")) or last or bounds[1]
        if end < bounds[0] or start > bounds[1]:
            continue
        x, width = scale.span(max(start, bounds[0]), min(end, bounds[1]), 2.0)
        parts.append(rect("down", x, bar_top(0, height=ROW_H - 4), width, ROW_H - 4,
                          f"probe: users got errors from {instant(start)} to {instant(end)}"))
    return row("probe", 0, "probe (users)", *parts)


def _step_row(step: Mapping[str, Any], index: int, scale: Scale,
              bounds: tuple[float, float]) -> Markup:
    started = epoch(step.get("started"))
    started = bounds[0] if started is None else started
    duration = number(step.get("duration_s"))
    ended = started + duration if duration is not None else bounds[1]
    outcome = str(step.get("outcome"))
    css = "bar " + (outcome if outcome in ("failed", "unfinished") else "ok")
    label = " ".join(str(part) for part in (step.get("name"), step.get("host")) if part)
    tip = (f"{label} ({step.get('stage') or '-'}): {outcome}, "
           f"{seconds(duration)} from {instant(started)}")
    x, width = scale.span(max(started, bounds[0]), min(ended, bounds[1]), 2.0)
    return row("step", index, label, rect(css, x, bar_top(index), width, BAR_H, tip), tip=tip)


# --- cold patches -------------------------------------------------------------------------

_FIGURES = (("estimated_s", "estimated"), ("rehearsed_s", "rehearsed"), ("actual_s", "actual"))


def patches_chart(patches: Sequence[Mapping[str, Any]]) -> Markup | None:
    """Per cold patch, three bars on one scale: estimated, rehearsed, actual seconds.

    None when no patch has a figure.
    """
    figures = [number(p.get(key)) for p in patches for key, _ in _FIGURES]
    known = [f for f in figures if f is not None and f > 0]
    if not known:
        return None
    scale = Scale(0.0, max(known) * 1.15)
    rows = []
    for index, patch in enumerate(patches):
        top = AXIS_H + index * 2 * ROW_H
        bars: list[Markup] = []
        for slot, (key, name) in enumerate(_FIGURES):
            value = number(patch.get(key))
            y = top + 6 + slot * 11
            if value is None:
                bars.append(text(X0 + 2, y + 8, f"{name}: not recorded", "note small"))
                continue
            x, width = scale.span(0.0, value, 1.0)
            bars.append(rect(f"fig {name}", x, y, width, 8, f"{name} {seconds(value)}"))
            bars.append(text(x + width + 4, y + 8, f"{name} {seconds(value)}", "small"))
        rows.append(row("patch", index * 2, str(patch.get("name")), *bars))
    height = AXIS_H + len(patches) * 2 * ROW_H + 6
    return svg("patches-chart", height, scale.ticks(duration), *rows,
               title="cold patches: estimated, rehearsed and actual seconds")


def points(values: Iterable[tuple[float, float]]) -> str:
    """SVG ``points`` text from (x, y) pairs."""
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in values)


__all__ = ["PLOT_W", "ROW_H", "WIDTH", "X0", "Scale", "bar_top", "duration", "offset",
           "patches_chart", "points", "rect", "row", "svg", "text", "timeline", "vline",
           "window_chart"]

"""The trend page (``report --trend FILE``): every run's outage and estimate against its budget.

Runs read left to right, oldest first: one bar per run for the outage the
journal measured, a mark for the estimate the rehearsals gave, a dashed
mark for the budget. When every outage and estimate is small beside the
budget, a second chart scaled to them shows the drift the first flattens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.views.figures import instant, seconds
from orchestrator.views.report.markup import Markup, el, fill, join, resource
from orchestrator.views.report.svg import WIDTH, duration, points, rect, svg, text, vline

LEFT = 70
RIGHT = WIDTH - 20
TOP = 16
HEIGHT = 200
SLOT_MAX = 60.0
ZOOM_BELOW = 0.1
"""Draw the zoomed chart when the largest outage or estimate is under this share of the top."""


def render_trend(data: Mapping[str, Any]) -> str:
    """One self-contained HTML page of :func:`~orchestrator.views.report.data.trend_data`."""
    lines = data["runs"]
    current = data.get("current")
    charts: list[Any] = []
    top = _top(lines, budgets=True)
    if top is None:
        charts.append(el("p", {"class": "note"}, "no outage, estimate or budget recorded"))
    else:
        charts.append(trend_chart(lines, top, current, "against the budget"))
        seen = _top(lines, budgets=False)
        if seen is not None and seen < ZOOM_BELOW * top:
            charts += [el("h2", None, "Zoomed to the outages and estimates"),
                       trend_chart(lines, seen, current, "zoomed")]
    return fill("trend.html", css=Markup(resource("report.css")),
                count=join([f"{len(lines)} run{'' if len(lines) == 1 else 's'}"]),
                charts=join(charts), table=trend_table(lines, current))


def _figures(line: Mapping[str, Any], budgets: bool) -> list[float]:
    keys = ("outage_s", "estimated_s", "budget_s") if budgets else ("outage_s", "estimated_s")
    return [line[key] for key in keys if line.get(key) is not None and line[key] > 0]


def _top(lines: Sequence[Mapping[str, Any]], budgets: bool) -> float | None:
    figures = [f for line in lines for f in _figures(line, budgets)]
    return max(figures) * 1.1 if figures else None


def trend_chart(lines: Sequence[Mapping[str, Any]], top: float, current: str | None,
                caption: str) -> Markup:
    """Per run (``<g class="run" data-run="ID">``): the outage bar (``rect.outage``), the
    estimate (``line.estimate``) and the budget (``line.budget``) on a 0..``top`` axis.

    A figure above ``top`` is left out (the zoomed chart leaves the budgets out).
    """
    slot = min(SLOT_MAX, (RIGHT - LEFT) / max(len(lines), 1))

    def y(value: float) -> float:
        return TOP + HEIGHT * (1.0 - min(value, top) / top)

    axis = [vline("tick", LEFT, TOP, TOP + HEIGHT)]
    for share in (0.0, 0.5, 1.0):
        value = top * share
        axis += [el("line", {"class": "tick", "x1": float(LEFT - 4), "x2": float(RIGHT),
                             "y1": y(value), "y2": y(value), "stroke-opacity": 0.3}),
                 text(LEFT - 6, y(value) + 4, duration(value), "tick", "end")]
    runs: list[Markup] = []
    estimates: list[tuple[float, float]] = []
    for index, line in enumerate(lines):
        left = LEFT + index * slot
        middle = left + slot / 2
        width = slot * 0.6
        parts: list[Any] = [text(middle, TOP + HEIGHT + 14, index + 1, "tick", "middle")]
        outage, estimated, budget = line.get("outage_s"), line.get("estimated_s"), \
            line.get("budget_s")
        css = " ".join(["outage", *(["over"] if line.get("over_budget") else []),
                        *(["current"] if line.get("id") == current else [])])
        if outage is not None:
            parts.append(rect(css, middle - width / 2, y(outage), width,
                              TOP + HEIGHT - y(outage),
                              f"{line.get('id')}: outage {seconds(outage)}"))
        else:
            parts.append(text(middle, TOP + HEIGHT - 4, "-", "note", "middle"))
        if estimated is not None and estimated <= top:
            estimates.append((middle, y(estimated)))
            parts.append(el("line", {"class": "estimate", "x1": middle - slot * 0.45,
                                     "x2": middle + slot * 0.45, "y1": y(estimated),
                                     "y2": y(estimated)},
                            el("title", None, f"{line.get('id')}: estimate {seconds(estimated)}")))
        if budget is not None and budget <= top:
            parts.append(el("line", {"class": "budget", "x1": left, "x2": left + slot,
                                     "y1": y(budget), "y2": y(budget)},
                            el("title", None, f"{line.get('id')}: budget {seconds(budget)}")))
        runs.append(el("g", {"class": "run", "data-run": line.get("id")}, *parts))
    trail = (el("polyline", {"class": "estimate", "points": points(estimates)})
             if len(estimates) > 1 else None)
    return svg("trend-chart", TOP + HEIGHT + 24, *axis, *runs, trail,
               title=f"outage and estimate per run, {caption}")


def trend_table(lines: Sequence[Mapping[str, Any]], current: str | None) -> Markup:
    """One row per run, numbered as in the charts: outage, estimate, budget and the probe."""
    head = el("tr", None, *(el("th", None, name) for name in (
        "#", "run", "started", "outcome", "who", "mode", "outage", "estimate",
        "outage - estimate", "budget", "of the budget", "failed requests", "longest wait")))
    rows = [head]
    for index, line in enumerate(lines):
        outage, estimated, budget = line.get("outage_s"), line.get("estimated_s"), \
            line.get("budget_s")
        drift = outage - estimated if outage is not None and estimated is not None else None
        share = f"{outage / budget:.1%}" if outage is not None and budget else "-"
        css = " ".join(filter(None, ["current" if line.get("id") == current else "",
                                     "rehearsal" if line.get("rehearse") else ""])) or None
        rows.append(el("tr", {"class": css, "data-run": line.get("id")},
                       el("td", {"class": "num"}, index + 1), el("td", None, line.get("id")),
                       el("td", None, instant(line.get("started"))),
                       el("td", {"class": line.get("outcome")}, line.get("outcome")),
                       el("td", None, line.get("who")), el("td", None, line.get("mode")),
                       el("td", {"class": "num over" if line.get("over_budget") else "num"},
                          seconds(outage)),
                       el("td", {"class": "num"}, seconds(estimated)),
                       el("td", {"class": "num"}, "-" if drift is None else
                          ("+" if drift >= 0 else "-") + seconds(abs(drift))),
                       el("td", {"class": "num"}, seconds(budget)),
                       el("td", {"class": "num"}, share),
                       el("td", {"class": "num"}, line.get("failed_requests")),
                       el("td", {"class": "num"}, seconds(line.get("longest_wait_s")))))
    return el("table", {"class": "trend"}, *rows)


__all__ = ["render_trend", "trend_chart", "trend_table"]

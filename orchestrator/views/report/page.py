"""The run page: :func:`render_report` fills ``run.html`` from :func:`report_data`'s data.

Sections, top to bottom: the summary; the window drawn to scale against its
deadline; each cold patch's estimated, rehearsed and actual seconds; one row
per host (its end state) and the probe's rows (what users saw); the whole
run's timeline and a zoom on the window; the steps and the journal's events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.runner.runs import ENVELOPE, epoch
from orchestrator.views.figures import (
    approval,
    instant,
    probe_line,
    probe_window_line,
    seconds,
    waits,
)
from orchestrator.views.report.data import number
from orchestrator.views.report.markup import Markup, el, fill, join, resource
from orchestrator.views.report.svg import patches_chart, timeline, window_chart

EVENT_DATA_CHARS = 400
ZOOM_MARGIN = 0.05
"""Each side of the zoomed window, as a share of its length (so it fills ~90 % of the axis)."""


def render_report(data: Mapping[str, Any]) -> str:
    """One self-contained HTML page (inline CSS and SVG, no script, nothing fetched) of the
    :func:`~orchestrator.views.report.data.report_data` ``data``; every value escaped."""
    window = data["window"]
    bounds = run_bounds(data)
    last = bounds[1] if bounds else None
    outcome = data.get("outcome") or "unknown"
    return fill(
        "run.html", css=Markup(resource("report.css")), id=esc_text(data.get("id")),
        outcome=esc_text(outcome), outcome_class=esc_text(outcome.split()[0]),
        summary=summary_table(data),
        window=window_chart(window, last) or el("p", {"class": "note"},
                                                "no window and no budget recorded"),
        patches=patches_section(data),
        hosts=hosts_table(data),
        timeline=(timeline(data, bounds, zoom=False) if bounds
                  else el("p", {"class": "note"}, "no instant recorded")),
        zoom=zoom_section(data, last),
        steps=steps_table(data["steps"]),
        events=events_table(data["events"]))


def esc_text(value: Any) -> Markup:
    """``value`` as escaped text ("" for None)."""
    return join([value])


def run_bounds(data: Mapping[str, Any]) -> tuple[float, float] | None:
    """The first and last instants the run knows of (events, steps, window, probe)."""
    instants = [epoch(e.get("t", e.get("ts"))) for e in data["events"]]
    for step in data["steps"]:
        started, duration = epoch(step.get("started")), number(step.get("duration_s"))
        instants.append(started)
        if started is not None and duration is not None:
            instants.append(started + duration)
    window, probe = data["window"], data.get("probe") or {}
    instants += [epoch(window.get(key)) for key in ("opened", "closed")]
    instants += [epoch(probe.get(key)) for key in ("first", "last")]
    known = [t for t in instants if t is not None]
    if not known:
        return None
    return min(known), max(max(known), min(known) + 0.001)


def zoom_bounds(window: Mapping[str, Any], last: float | None) -> tuple[float, float] | None:
    """The window's opening to its closing (or ``last`` if it never closed), with a margin."""
    opened, closed = epoch(window.get("opened")), epoch(window.get("closed"))
    if opened is None:
        return None
    end = closed if closed is not None else max(last or opened, opened)
    margin = max(ZOOM_MARGIN * (end - opened), 0.0005)
    return opened - margin, end + margin


def zoom_section(data: Mapping[str, Any], last: float | None) -> Markup:
    """The zoomed timeline under its heading; nothing without a window."""
    bounds = zoom_bounds(data["window"], last)
    if bounds is None:
        return Markup("")
    return join([el("h2", None, "The window (zoomed)"), timeline(data, bounds, zoom=True)])


def _rows(rows: Sequence[tuple[Any, Any]], css: str) -> Markup:
    body = [el("tr", None, el("th", None, key), el("td", None, value)) for key, value in rows]
    return el("table", {"class": css}, *body)


def summary_table(data: Mapping[str, Any]) -> Markup:
    """Who, revisions, instants, the outage against the probe, the budget and the estimate."""
    window = data["window"]
    outage, budget = window.get("outage_s"), window.get("budget_s")
    estimate = data.get("estimate")
    rows: list[tuple[Any, Any]] = [
        ("who", data.get("who")), ("from", data.get("from")), ("to", data.get("to")),
        ("cut", data.get("cut") or "none (no window)"),
        ("started", instant(data.get("started"))), ("finished", instant(data.get("finished"))),
        ("window opened", instant(window.get("opened"))),
        ("window closed", instant(window.get("closed"))),
        ("outage (journal)", el("span", {"class": "over" if window.get("over_budget") else None},
                                seconds(outage) + (" OVER BUDGET" if window.get("over_budget")
                                                   else ""))),
        ("outage seen by the probe", probe_line(data.get("probe")))]
    if data.get("probe_window") is not None:
        rows.append(("probe in the window", probe_window_line(data["probe_window"])))
    rows += [("window budget", seconds(budget)),
             ("deadline", instant(window.get("deadline")))]
    if window.get("mode"):
        rows.append(("window mode", window["mode"]))
    rows.append(("estimated outage", _estimate_line(window, estimate)))
    if data.get("rehearse"):
        rows.append(("rehearsal", "yes: this run recorded patch timings"))
    rows += [("approvals", "; ".join(approval(a) for a in data.get("approvals") or []) or "-"),
             ("error", data.get("error") or "-")]
    rows += [("note", note) for note in data.get("notes") or []]
    return _rows(rows, "summary")


def _estimate_line(window: Mapping[str, Any], estimate: Mapping[str, Any] | None) -> str:
    if estimate is None:
        return "no estimate recorded"
    total = window.get("estimated_s")
    return (f"{seconds(total) if total is not None else 'unknown (a patch was not rehearsed)'}"
            f" (overhead {seconds(estimate.get('overhead_s'))} from "
            f"{estimate.get('overhead_source') or '-'})")


def patches_section(data: Mapping[str, Any]) -> Markup:
    """The cold patches: a chart and a table, estimated vs rehearsed vs actual."""
    patches = data["cold_patches"]
    estimate = data.get("estimate")
    parts: list[Any] = []
    if estimate is None:
        parts.append(el("p", {"class": "note"}, "no estimate recorded"))
    if not patches:
        parts.append(el("p", {"class": "note"}, "no cold patch recorded"))
        return join(parts)
    parts.append(patches_chart(patches))
    head = el("tr", None, *(el("th", None, name) for name in (
        "patch", "rehearsed", "scale", "estimated", "actual", "actual - estimated",
        "statements")))
    body = [head]
    for patch in patches:
        estimated, actual = patch.get("estimated_s"), patch.get("actual_s")
        drift = (actual - estimated if estimated is not None and actual is not None else None)
        scale = patch.get("scale")
        body.append(el("tr", {"class": "patch"}, el("td", None, patch.get("name")),
                       *(el("td", {"class": "num"}, value) for value in (
                           seconds(patch.get("rehearsed_s")),
                           "-" if scale is None else f"x {scale:g}", seconds(estimated),
                           seconds(actual), _signed(drift),
                           "-" if patch.get("statements") is None else patch["statements"]))))
    if estimate is not None:
        window = data["window"]
        outage, total = window.get("outage_s"), window.get("estimated_s")
        overhead = f"the window (overhead {seconds(estimate.get('overhead_s'))})"
        drift = outage - total if outage is not None and total is not None else None
        body.append(el("tr", {"class": "total"}, el("td", None, overhead),
                       el("td", None, ""), el("td", None, ""),
                       *(el("td", {"class": "num"}, value)
                         for value in (seconds(total), seconds(outage), _signed(drift))),
                       el("td", None, "")))
    parts.append(el("table", {"class": "patches"}, *body))
    return join(parts)


def _signed(value: float | None) -> str:
    return "-" if value is None else ("+" if value >= 0 else "-") + seconds(abs(value))


def hosts_table(data: Mapping[str, Any]) -> Markup:
    """One row per host with its end state, then the probe's rows: what users saw."""
    rows: list[Markup] = [el("tr", {"class": "host"}, el("th", None, host["host"]),
                             el("td", None, host.get("state") or "-"))
                          for host in data["hosts"]]
    if not rows:
        rows.append(el("tr", {"class": "host"}, el("th", None, "hosts"),
                       el("td", {"class": "note"}, "no host state recorded")))
    probe = data.get("probe")
    if probe is not None:
        rows.append(el("tr", {"class": "probe"}, el("th", None, "users (probe), whole run"),
                       el("td", None, _users(probe))))
    elif data.get("failed_requests") is not None:
        rows.append(el("tr", {"class": "probe"}, el("th", None, "users (probe), whole run"),
                       el("td", None, f"{data['failed_requests']} failed requests")))
    else:
        rows.append(el("tr", {"class": "probe"}, el("th", None, "users (probe)"),
                       el("td", {"class": "note"}, "no probe")))
    if data.get("probe_window") is not None:
        rows.append(el("tr", {"class": "probe"}, el("th", None, "users (probe), window only"),
                       el("td", None, _users(data["probe_window"]))))
    return el("table", {"class": "hosts"}, *rows)


def _users(probe: Mapping[str, Any]) -> str:
    outages = probe.get("outages")
    count = len(outages) if isinstance(outages, list) else 0
    text = (f"{probe.get('requests', '-')} requests, {probe.get('failures', '-')} failed; "
            f"{count} outage{'' if count == 1 else 's'}, longest {seconds(probe.get('longest_s'))}")
    request_times = waits(probe)
    if request_times:
        text += f"; {request_times}"
    if probe.get("down_at_end"):
        text += "; still failing when it stopped"
    return text


def steps_table(steps: Sequence[Mapping[str, Any]]) -> Markup:
    """Every step: started, duration, outcome, stage, host, name, error."""
    head = el("tr", None, *(el("th", None, name) for name in (
        "started", "duration", "outcome", "stage", "host", "step", "error")))
    rows = [el("tr", None, el("td", None, instant(s.get("started"))),
               el("td", {"class": "num"}, seconds(s.get("duration_s"))),
               el("td", {"class": s.get("outcome")}, s.get("outcome")),
               el("td", None, s.get("stage")), el("td", None, s.get("host")),
               el("td", None, s.get("name")), el("td", None, s.get("error")))
            for s in steps]
    return el("table", {"class": "steps"}, head, *rows)


def events_table(events: Sequence[Mapping[str, Any]]) -> Markup:
    """The journal's events other than steps, their own data cut to a readable length."""
    head = el("tr", None, *(el("th", None, name) for name in (
        "ts", "event", "stage", "step", "host", "data")))
    rows = []
    for event in events:
        own = json.dumps({k: v for k, v in event.items() if k not in ENVELOPE}, default=str)
        if len(own) > EVENT_DATA_CHARS:
            own = own[:EVENT_DATA_CHARS] + " ..."
        rows.append(el("tr", None, el("td", None, event.get("ts")),
                       el("td", None, event.get("event")), el("td", None, event.get("stage")),
                       el("td", None, event.get("step")), el("td", None, event.get("host")),
                       el("td", None, el("code", None, own))))
    return el("table", {"class": "events"}, head, *rows)


__all__ = ["render_report", "run_bounds", "zoom_bounds"]

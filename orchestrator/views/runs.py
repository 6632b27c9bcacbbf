"""The `show` and `report` views of a run: plain text, and one self-contained HTML page.

Both read a run summary (:mod:`orchestrator.runner.runs`) and, for the
report, its journal; neither writes anything.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.runner.journal import iso_ms
from orchestrator.runner.runs import ENVELOPE as _ENVELOPE
from orchestrator.runner.runs import epoch as _epoch
from orchestrator.runner.runs import steps_from_journal


def _instant(value: Any) -> str:
    moment = _epoch(value)
    return "-" if moment is None else iso_ms(moment)


def _seconds(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.3f} s"


def _short(sha: Any, missing: str = "-") -> str:
    return str(sha)[:12] if sha else missing


def _journal_outage(outage: Any, window: Mapping[str, Any]) -> str:
    if outage is not None:
        return f"{_seconds(outage)} (journal)"
    if window.get("opened") and not window.get("closed"):
        return "window opened and never closed (journal)"
    return "no window"


def _approval(item: Any) -> str:
    if isinstance(item, Mapping):
        patch = item.get("patch") or item.get("file")
        who = item.get("who") or item.get("by")
        if patch is not None and who is not None:
            return f"{patch}: {who}"
        return json.dumps(item, default=str)
    return str(item)


def _latency(value: Any) -> str:
    """A request time to read at a glance: 1.4 ms, 12 ms, 1.043 s; "-" when unknown."""
    if not isinstance(value, int | float):
        return "-"
    if value >= 0.9995:  # 1000 ms
        return f"{value:.3f} s"
    return f"{value * 1000:.1f} ms" if value < 0.01 else f"{value * 1000:.0f} ms"


def _waits(probe: Mapping[str, Any]) -> str:
    """Longest wait, p50 and p99 of a probe's JSON; "" for a summary older than them."""
    if not {"longest_wait_s", "p50_s", "p99_s"} & set(probe):
        return ""
    return (f"longest wait {_seconds(probe.get('longest_wait_s'))}, "
            f"p50 {_latency(probe.get('p50_s'))}, p99 {_latency(probe.get('p99_s'))}")


def _probe_line(probe: Mapping[str, Any] | None) -> str:
    if not probe:
        return "no probe"
    outages = probe.get("outages") or []
    waits = _waits(probe)
    text = (f"{_seconds(probe.get('longest_s'))} seen by the probe (longest of "
            f"{len(outages)}; {probe.get('requests')} requests, {probe.get('failures')} failed"
            + (f"; {waits})" if waits else ")"))
    if probe.get("down_at_end"):
        text += ", still failing when it stopped"
    return text


def _probe_window_line(window: Mapping[str, Any]) -> str:
    """The probe's requests that overlapped the window (the summary's ``probe_window``)."""
    waits = _waits(window)
    return (f"window: {window.get('requests')} requests, {window.get('failures')} failed"
            + (f", {waits}" if waits else ""))


def render_text(run: Mapping[str, Any]) -> str:
    """The ``show`` view: who, outcome, cut, window instants, outage vs probe vs budget, steps.

    The probe line gives its longest wait and p50/p99 request times when the
    summary has them, and a ``probe_window`` mapping (the probe's figures for
    the requests in the window) adds one line; older summaries render as before.
    """
    outage = run.get("outage_s")
    budget = run.get("window_budget_s")
    window = run.get("window") or {}
    over = (isinstance(outage, int | float) and isinstance(budget, int | float)
            and outage > budget)
    outcome = str(run.get("outcome"))
    if outcome == "running":
        outcome += (" (if no deploy is in progress the orchestrator died: "
                    f"`fastdowntime resume {run.get('id')}`)")
    lines = [
        f"run {run.get('id')} by {run.get('who') or '?'}: {outcome}",
        f"  from     {_short(run.get('from'))}  to {_short(run.get('to'))}"
        f"  cut {_short(run.get('cut'), 'none (no window)')}",
        f"  started  {_instant(run.get('started'))}  finished {_instant(run.get('finished'))}",
        f"  window   opened {_instant(window.get('opened'))}  "
        f"closed {_instant(window.get('closed'))}",
        f"  outage   {_journal_outage(outage, window)}  |  "
        f"{_probe_line(run.get('probe'))}  |  budget {_seconds(budget)}"
        + ("  OVER BUDGET" if over else ""),
    ]
    probe_window = run.get("probe_window")
    if isinstance(probe_window, Mapping):
        lines.append(f"           probe {_probe_window_line(probe_window)}")
    for probe_outage in (run.get("probe") or {}).get("outages") or []:
        lines.append(f"           probe outage {_instant(probe_outage.get('start'))} -> "
                     f"{_instant(probe_outage.get('end'))} "
                     f"({_seconds(probe_outage.get('duration_s'))})")
    approvals = run.get("approvals") or []
    if approvals:
        lines.append("  approved " + "; ".join(_approval(item) for item in approvals))
    if run.get("error"):
        lines.append(f"  error    {run['error']}")
    lines += [f"  note     {note}" for note in run.get("notes") or []]
    steps = run.get("steps") or []
    lines.append(f"steps ({len(steps)})")
    lines.append(f"  {'started':12}  {'duration':>10}  {'outcome':10}  {'stage':12}  "
                 f"{'host':10}  step")
    for step in steps:
        started = _instant(step.get("started"))
        lines.append(f"  {started[11:23] if started != '-' else '-':12}  "
                     f"{_seconds(step.get('duration_s')):>10}  {str(step.get('outcome')):10}  "
                     f"{str(step.get('stage') or '-'):12}  {str(step.get('host') or '-'):10}  "
                     f"{step.get('name')}")
        if step.get("error"):
            lines.append(f"  {'':12}  {'':>10}  {step['error']}")
    return "\n".join(lines)


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
tr+tr td{border-top:1px solid #eee}code{font-size:12px}
.ok{color:#176617}.failed,.crashed,.over{color:#b00;font-weight:bold}
.tl{margin:.8em 0 1.2em}.row{display:flex;align-items:center;height:20px}
.label{width:280px;flex:none;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
font-size:12px;padding-right:8px}
.track{position:relative;flex:1;height:16px;background:#f6f6f6;border-left:1px solid #bbb}
.win{position:absolute;top:0;bottom:0;background:rgba(255,190,0,.28)}
.bar{position:absolute;top:3px;height:10px;min-width:2px;background:#3b7dd8;border-radius:2px}
.bar.failed{background:#d33}.bar.unfinished{background:#999}
.down{position:absolute;top:0;bottom:0;min-width:2px;background:rgba(215,0,0,.55)}
.axis .track{background:none;border-left:none;height:18px}
.tick{position:absolute;top:2px;font-size:11px;color:#666;white-space:nowrap}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 14px;
vertical-align:middle}
"""


def render_html(run: Mapping[str, Any], journal: Sequence[Mapping[str, Any]]) -> str:
    """A self-contained HTML timeline of one run (inline CSS, no scripts), everything escaped.

    One bar per step on a time axis, the window shaded, the probe's outages
    marked in red; a zoomed timeline of the window when there is one; the
    summary, the steps and the journal's other events as tables.
    """
    steps = list(run.get("steps") or []) or steps_from_journal(journal)
    spans = [_span(step) for step in steps]
    window = run.get("window") or {}
    window_span = (_epoch(window.get("opened")), _epoch(window.get("closed")))
    probe = run.get("probe") or {}
    downs = [(_epoch(o.get("start")), _epoch(o.get("end")) or _epoch(probe.get("last")))
             for o in probe.get("outages") or []]
    instants = [t for t in (_epoch(e.get("t", e.get("ts"))) for e in journal) if t is not None]
    instants += [t for span in spans for t in span if t is not None]
    instants += [t for t in window_span if t is not None]
    start, end = (min(instants), max(instants)) if instants else (0.0, 1.0)
    end = max(end, start + 0.001)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>fastdowntime run {_e(run.get('id'))}</title><style>{_CSS}</style>"
             f"</head><body>\n<h1>Run {_e(run.get('id'))}: "
             f"<span class=\"{_e(run.get('outcome'))}\">{_e(run.get('outcome'))}</span></h1>\n",
             _summary_table(run),
             "<p class=\"legend\"><span style=\"background:rgba(255,190,0,.5)\"></span>window"
             "<span style=\"background:#3b7dd8\"></span>step"
             "<span style=\"background:#d33\"></span>failed step"
             "<span style=\"background:rgba(215,0,0,.55)\"></span>probe: users got errors</p>\n",
             "<h2>Whole run</h2>\n",
             _timeline(steps, spans, (start, end), window_span, downs)]
    if window_span[0] is not None:
        opened = window_span[0]
        closed = window_span[1] if window_span[1] is not None else end
        margin = max(0.5, 0.25 * (closed - opened))
        zoom = (opened - margin, closed + margin)
        parts += ["<h2>The window (zoomed)</h2>\n",
                  _timeline(steps, spans, zoom, window_span, downs)]
    parts += ["<h2>Steps</h2>\n", _steps_table(steps), "<h2>Events</h2>\n",
              _events_table(journal), "</body></html>\n"]
    return "".join(parts)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _span(step: Mapping[str, Any]) -> tuple[float | None, float | None]:
    started = _epoch(step.get("started"))
    duration = step.get("duration_s")
    if started is None or not isinstance(duration, int | float):
        return started, None
    return started, started + duration


def _summary_table(run: Mapping[str, Any]) -> str:
    window = run.get("window") or {}
    outage, budget = run.get("outage_s"), run.get("window_budget_s")
    over = (isinstance(outage, int | float) and isinstance(budget, int | float)
            and outage > budget)
    probe_window = run.get("probe_window")
    probe_window_row = ([("probe in the window", _probe_window_line(probe_window))]
                        if isinstance(probe_window, Mapping) else [])
    rows = [("who", run.get("who")), ("from", run.get("from")), ("to", run.get("to")),
            ("cut", run.get("cut") or "none (no window)"),
            ("started", _instant(run.get("started"))),
            ("finished", _instant(run.get("finished"))),
            ("window opened", _instant(window.get("opened"))),
            ("window closed", _instant(window.get("closed"))),
            ("outage (journal)", _seconds(outage) + (" OVER BUDGET" if over else "")),
            ("outage seen by the probe", _probe_line(run.get("probe"))),
            *probe_window_row,
            ("window budget", _seconds(budget)),
            ("approvals", "; ".join(_approval(a) for a in run.get("approvals") or []) or "-"),
            ("error", run.get("error") or "-")]
    rows += [("note", note) for note in run.get("notes") or []]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table class=\"summary\">{body}</table>\n"


def _pct(t: float, lo: float, hi: float) -> float:
    return min(100.0, max(0.0, (t - lo) / (hi - lo) * 100.0))


def _box(css: str, a: float, b: float, lo: float, hi: float, title: str = "") -> str:
    left, right = _pct(a, lo, hi), _pct(b, lo, hi)
    tip = f" title=\"{_e(title)}\"" if title else ""
    return (f"<div class=\"{css}\" style=\"left:{left:.3f}%;width:{right - left:.3f}%\"{tip}>"
            f"</div>")


def _timeline(steps: Sequence[Mapping[str, Any]],
              spans: Sequence[tuple[float | None, float | None]], bounds: tuple[float, float],
              window: tuple[float | None, float | None],
              downs: Sequence[tuple[float | None, float | None]]) -> str:
    lo, hi = bounds
    backdrop = ""
    if window[0] is not None:
        backdrop += _box("win", window[0], window[1] if window[1] is not None else hi, lo, hi,
                         "window")
    for down_start, down_end in downs:
        if down_start is not None:
            backdrop += _box("down", down_start, down_end if down_end is not None else hi,
                             lo, hi, f"probe: errors from {_instant(down_start)} "
                                     f"to {_instant(down_end)}")
    ticks = "".join(
        f"<div class=\"tick\" style=\"left:{i * 20}%\">{_e(iso_ms(lo + (hi - lo) * i / 5)[11:23])}"
        f"</div>" for i in range(5))
    rows = [f"<div class=\"row axis\"><div class=\"label\">UTC ({_e(f'{hi - lo:.3f}')} s)</div>"
            f"<div class=\"track\">{ticks}</div></div>",
            f"<div class=\"row\"><div class=\"label\">probe (users)</div>"
            f"<div class=\"track\">{backdrop}</div></div>"]
    for step, (started, ended) in zip(steps, spans, strict=True):
        if started is None:
            continue
        finish = ended if ended is not None else hi
        if finish < lo or started > hi:
            continue
        outcome = str(step.get("outcome"))
        css = "bar " + ("failed" if outcome == "failed" else
                        "unfinished" if outcome == "unfinished" else "ok")
        label = " ".join(str(part) for part in (step.get("name"), step.get("host")) if part)
        title = (f"{label} ({step.get('stage') or '-'}): {outcome}, "
                 f"{_seconds(step.get('duration_s'))} from {_instant(started)}")
        rows.append(f"<div class=\"row\"><div class=\"label\" title=\"{_e(title)}\">{_e(label)}"
                    f"</div><div class=\"track\">{backdrop}"
                    f"{_box(css, started, finish, lo, hi, title)}</div></div>")
    return "<div class=\"tl\">" + "\n".join(rows) + "</div>\n"


def _steps_table(steps: Sequence[Mapping[str, Any]]) -> str:
    head = ("<tr><th>started</th><th>duration</th><th>outcome</th><th>stage</th><th>host</th>"
            "<th>step</th><th>error</th></tr>")
    rows = "".join(
        f"<tr><td>{_e(_instant(s.get('started')))}</td><td>{_e(_seconds(s.get('duration_s')))}"
        f"</td><td class=\"{_e(s.get('outcome'))}\">{_e(s.get('outcome'))}</td>"
        f"<td>{_e(s.get('stage'))}</td><td>{_e(s.get('host'))}</td><td>{_e(s.get('name'))}</td>"
        f"<td>{_e(s.get('error'))}</td></tr>" for s in steps)
    return f"<table>{head}{rows}</table>\n"


def _events_table(journal: Sequence[Mapping[str, Any]]) -> str:
    head = "<tr><th>ts</th><th>event</th><th>stage</th><th>step</th><th>host</th><th>data</th></tr>"
    rows = []
    for event in journal:
        if str(event.get("event", "")).startswith("step."):
            continue
        data = json.dumps({k: v for k, v in event.items() if k not in _ENVELOPE}, default=str)
        if len(data) > 400:
            data = data[:400] + " ..."
        rows.append(f"<tr><td>{_e(event.get('ts'))}</td><td>{_e(event.get('event'))}</td>"
                    f"<td>{_e(event.get('stage'))}</td><td>{_e(event.get('step'))}</td>"
                    f"<td>{_e(event.get('host'))}</td><td><code>{_e(data)}</code></td></tr>")
    return f"<table>{head}{''.join(rows)}</table>\n"


__all__ = ["render_html", "render_text"]

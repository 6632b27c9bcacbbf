"""The `show` and `report` views of a run: plain text, and one self-contained HTML page.

Both read a run summary (:mod:`orchestrator.runner.runs`) and, for the
report, its journal; neither writes anything. The HTML page is drawn by
:mod:`orchestrator.views.report` from a template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.views.figures import (
    approval,
    instant,
    probe_line,
    probe_window_line,
    seconds,
    short,
)
from orchestrator.views.report import render_report, report_data


def _journal_outage(outage: Any, window: Mapping[str, Any]) -> str:
    if outage is not None:
        return f"{seconds(outage)} (journal)"
    if window.get("opened") and not window.get("closed"):
        return "window opened and never closed (journal)"
    return "no window"


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
        f"  from     {short(run.get('from'))}  to {short(run.get('to'))}"
        f"  cut {short(run.get('cut'), 'none (no window)')}",
        f"  started  {instant(run.get('started'))}  finished {instant(run.get('finished'))}",
        f"  window   opened {instant(window.get('opened'))}  "
        f"closed {instant(window.get('closed'))}",
        f"  outage   {_journal_outage(outage, window)}  |  "
        f"{probe_line(run.get('probe'))}  |  budget {seconds(budget)}"
        + ("  OVER BUDGET" if over else ""),
    ]
    probe_window = run.get("probe_window")
    if isinstance(probe_window, Mapping):
        lines.append(f"           probe {probe_window_line(probe_window)}")
    for probe_outage in (run.get("probe") or {}).get("outages") or []:
        lines.append(f"           probe outage {instant(probe_outage.get('start'))} -> "
                     f"{instant(probe_outage.get('end'))} "
                     f"({seconds(probe_outage.get('duration_s'))})")
    approvals = run.get("approvals") or []
    if approvals:
        lines.append("  approved " + "; ".join(approval(item) for item in approvals))
    if run.get("error"):
        lines.append(f"  error    {run['error']}")
    lines += [f"  note     {note}" for note in run.get("notes") or []]
    steps = run.get("steps") or []
    lines.append(f"steps ({len(steps)})")
    lines.append(f"  {'started':12}  {'duration':>10}  {'outcome':10}  {'stage':12}  "
                 f"{'host':10}  step")
    for step in steps:
        started = instant(step.get("started"))
        lines.append(f"  {started[11:23] if started != '-' else '-':12}  "
                     f"{seconds(step.get('duration_s')):>10}  {str(step.get('outcome')):10}  "
                     f"{str(step.get('stage') or '-'):12}  {str(step.get('host') or '-'):10}  "
                     f"{step.get('name')}")
        if step.get("error"):
            lines.append(f"  {'':12}  {'':>10}  {step['error']}")
    return "\n".join(lines)


def render_html(run: Mapping[str, Any], journal: Sequence[Mapping[str, Any]]) -> str:
    """The ``report --html`` page of one run: :func:`orchestrator.views.report.render_report`
    of :func:`~orchestrator.views.report.report_data` (self-contained, everything escaped)."""
    return render_report(report_data(run, journal))


__all__ = ["render_html", "render_text"]

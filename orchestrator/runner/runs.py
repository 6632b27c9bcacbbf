"""History of runs: each run's summary, listing, loading, and the `show`/`report` views.

A run lives in ``<runs_dir>/<run_id>/``: ``journal.jsonl`` (every event, see
:mod:`orchestrator.runner.journal`) and ``run.json``, the summary the engine
writes at checkpoints and at the end::

    {"id", "who", "started", "finished", "outcome", "from", "to", "cut",
     "window_budget_s", "outage_s", "window": {"opened", "closed", "budget_s"},
     "probe": ProbeReport.to_json() | null,
     "steps": [{"name", "stage", "host", "started", "duration_s", "outcome"}],
     "approvals": [...], "error": str | null}

When ``run.json`` is missing (the orchestrator died before writing it) the
summary is rebuilt from the journal: ``run.start`` gives who/from/to/cut,
``window.open``/``window.close`` the window, ``probe.report`` the probe, the
``step.*`` events the steps, and ``run.end`` the outcome, else ``crashed``.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import BadInput
from orchestrator.runner.journal import (
    JOURNAL_NAME,
    TRUNCATED,
    check_run_id,
    iso_ms,
    jsonable,
    parse_iso,
    read_journal,
)

from orchestrator.runner.outcome import Outcome

SUMMARY_NAME = "run.json"
OUTCOMES = tuple(Outcome)
RUN_START = "run.start"
"""Journal event opening a run; its fields (who, from, to, cut, ...) seed a rebuilt summary."""
RUN_END = "run.end"
"""Journal event closing a run; carries ``outcome`` and ``error``."""
PROBE_REPORT = "probe.report"
"""Journal event carrying ``ProbeReport.to_json()`` fields."""

_ENVELOPE = frozenset({"ts", "t", "run_id", "event", "stage", "step", "host"})
_FROM_START = ("who", "from", "to", "cut", "window_budget_s", "approvals")


def write_summary(runs_dir: Path, run_id: str, summary: Mapping[str, Any]) -> None:
    """Write ``<runs_dir>/<run_id>/run.json`` atomically (temporary file, fsync, rename).

    Values are made JSON-safe and secrets masked as in the journal. An
    ``outcome`` outside :data:`OUTCOMES` is a programming error (ValueError).
    """
    check_run_id(run_id)
    outcome = summary.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"run {run_id}: outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    directory = Path(runs_dir).expanduser() / run_id
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(dict(summary)), indent=2) + "\n"
    temporary = directory / f".{SUMMARY_NAME}.{os.getpid()}.tmp"
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / SUMMARY_NAME)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run, newest first: ``id, started, finished, outcome, cut, outage_s, who``."""
    runs = [_load_dir(directory) for directory in _run_dirs(Path(runs_dir).expanduser())]
    runs.sort(key=lambda run: (_epoch(run.get("started")) or 0.0, run["id"]), reverse=True)
    return [{key: run.get(key) for key in
             ("id", "started", "finished", "outcome", "cut", "outage_s", "who")}
            for run in runs]


def load_run(runs_dir: Path, ref: str) -> dict[str, Any]:
    """The summary of the run ``ref``: a run id, a unique prefix of one, or ``last``.

    Unknown or ambiguous ``ref``: :class:`BadInput` naming it. Without
    ``run.json`` the summary is rebuilt from the journal (see the module doc).
    """
    root = Path(runs_dir).expanduser()
    ids = sorted(directory.name for directory in _run_dirs(root))
    if ref == "last":
        runs = list_runs(root)
        if not runs:
            raise BadInput(f"run last: there are no runs in {root}")
        return _load_dir(root / runs[0]["id"])
    if ref in ids:
        return _load_dir(root / ref)
    matches = [run_id for run_id in ids if ref and run_id.startswith(ref)]
    if not matches:
        raise BadInput(f"run {ref!r}: no such run in {root} (`fastdowntime runs` lists them)")
    if len(matches) > 1:
        raise BadInput(f"run {ref!r} is ambiguous: it starts {len(matches)} runs "
                       f"({', '.join(matches[:5])}{', ...' if len(matches) > 5 else ''})")
    return _load_dir(root / matches[0])


def _run_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [entry for entry in root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
            and ((entry / SUMMARY_NAME).exists() or (entry / JOURNAL_NAME).exists())]


def _load_dir(directory: Path) -> dict[str, Any]:
    summary_path = directory / SUMMARY_NAME
    problem = None
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            summary, problem = None, f"{summary_path} is unreadable ({exc})"
        if isinstance(summary, dict):
            summary.setdefault("id", directory.name)
            if summary.get("outcome") == Outcome.RUNNING:
                _refresh_from_journal(summary, read_journal(directory / JOURNAL_NAME))
            return summary
        problem = problem or f"{summary_path} does not hold a JSON object"
    rebuilt = summary_from_journal(directory.name, read_journal(directory / JOURNAL_NAME))
    rebuilt["notes"].insert(0, f"{problem or 'no run.json'}: rebuilt from the journal")
    return rebuilt


def _refresh_from_journal(summary: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """A ``running`` summary is a checkpoint: the journal knows the steps since."""
    fresh = summary_from_journal(str(summary["id"]), events)
    if len(fresh["steps"]) >= len(summary.get("steps") or []):
        summary["steps"] = fresh["steps"]
    for key in ("window", "outage_s", "probe"):
        if summary.get(key) is None or (key == "window" and not (summary[key] or {}).get("closed")):
            summary[key] = fresh[key]
    summary.setdefault("notes", []).extend(fresh["notes"])


def summary_from_journal(run_id: str, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rebuild a run summary from its journal events (outcome ``crashed`` without ``run.end``)."""
    summary: dict[str, Any] = {
        "id": run_id, "who": None, "started": None, "finished": None, "outcome": Outcome.CRASHED,
        "from": None, "to": None, "cut": None, "window_budget_s": None, "outage_s": None,
        "window": None, "probe": None, "steps": steps_from_journal(events), "approvals": [],
        "error": None, "notes": []}
    stamped = [event for event in events if event.get("ts")]
    if stamped:
        summary["started"] = stamped[0]["ts"]
    start = _last(events, RUN_START)
    if start is not None:
        summary.update({key: start[key] for key in _FROM_START if key in start})
    summary["window"], summary["outage_s"] = _window(events, summary["window_budget_s"])
    if summary["window_budget_s"] is None and summary["window"] is not None:
        summary["window_budget_s"] = summary["window"]["budget_s"]
    probe = _last(events, PROBE_REPORT)
    if probe is not None:
        summary["probe"] = {k: v for k, v in probe.items() if k not in _ENVELOPE}
    end = _last(events, RUN_END)
    if end is not None:
        summary["outcome"] = end.get("outcome", Outcome.DONE)
        summary["error"] = end.get("error")
        summary["finished"] = end.get("ts")
    elif stamped:
        last = stamped[-1]
        summary["error"] = (f"the journal ends at {last['ts']} ({last.get('event')}) without "
                            f"{RUN_END}: the orchestrator stopped; `fastdowntime resume "
                            f"{run_id}` finishes or restores")
    if any(event.get("event") == TRUNCATED for event in events):
        summary["notes"].append("the journal's last line was cut mid-write and is skipped")
    return summary


def steps_from_journal(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The steps, in start order, from ``step.start`` / ``step.done`` / ``step.failed``.

    A step started but never closed has outcome ``unfinished`` and no duration.
    """
    steps: list[dict[str, Any]] = []
    running: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for event in events:
        kind = event.get("event")
        if kind not in ("step.start", "step.done", "step.failed"):
            continue
        key = (event.get("step"), event.get("stage"), event.get("host"))
        if kind == "step.start":
            entry = {"name": key[0], "stage": key[1], "host": key[2], "started": event.get("ts"),
                     "duration_s": None, "outcome": "unfinished"}
            steps.append(entry)
            running.setdefault(key, []).append(entry)
            continue
        stack = running.get(key)
        if stack:
            entry = stack.pop()
        else:
            entry = {"name": key[0], "stage": key[1], "host": key[2],
                     "started": event.get("started")}
            steps.append(entry)
        entry["duration_s"] = event.get("duration_s")
        entry["outcome"] = event.get("outcome", "ok" if kind == "step.done" else "failed")
        if kind == "step.failed":
            entry["error"] = event.get("error")
    return steps


def _last(events: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((event for event in reversed(events) if event.get("event") == name), None)


def _window(events: Sequence[Mapping[str, Any]],
            budget: Any) -> tuple[dict[str, Any] | None, float | None]:
    opened = _last(events, "window.open")
    if opened is None:
        return None, None
    index = max(i for i, event in enumerate(events) if event is opened)
    closed = next((event for event in events[index:] if event.get("event") == "window.close"),
                  None)
    open_at = _epoch(opened.get("at", opened.get("t")))
    close_at = None if closed is None else _epoch(closed.get("at", closed.get("t")))
    window = {"opened": None if open_at is None else iso_ms(open_at),
              "closed": None if close_at is None else iso_ms(close_at),
              "budget_s": opened.get("budget_s", budget)}
    if open_at is None or close_at is None:
        return window, None
    return window, round(close_at - open_at, 3)


def _epoch(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO string; None when absent or unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_iso(value)
        except ValueError:
            return None
    return None


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


def _probe_line(probe: Mapping[str, Any] | None) -> str:
    if not probe:
        return "no probe"
    outages = probe.get("outages") or []
    text = (f"{_seconds(probe.get('longest_s'))} seen by the probe (longest of "
            f"{len(outages)}; {probe.get('requests')} requests, {probe.get('failures')} failed)")
    if probe.get("down_at_end"):
        text += ", still failing when it stopped"
    return text


def render_text(run: Mapping[str, Any]) -> str:
    """The ``show`` view: who, outcome, cut, window instants, outage vs probe vs budget, steps."""
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
    rows = [("who", run.get("who")), ("from", run.get("from")), ("to", run.get("to")),
            ("cut", run.get("cut") or "none (no window)"),
            ("started", _instant(run.get("started"))),
            ("finished", _instant(run.get("finished"))),
            ("window opened", _instant(window.get("opened"))),
            ("window closed", _instant(window.get("closed"))),
            ("outage (journal)", _seconds(outage) + (" OVER BUDGET" if over else "")),
            ("outage seen by the probe", _probe_line(run.get("probe"))),
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


__all__ = ["OUTCOMES", "PROBE_REPORT", "RUN_END", "RUN_START", "SUMMARY_NAME", "list_runs",
           "load_run", "render_html", "render_text", "steps_from_journal",
           "summary_from_journal", "write_summary"]

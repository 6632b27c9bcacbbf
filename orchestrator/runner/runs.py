"""History of runs: each run's summary, listing and loading (storage only; the `show` and
`report` views are :mod:`orchestrator.views.runs`).

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

import json
import os
import sys
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
    open_private,
    parse_iso,
    private_dir,
    read_journal,
)
from orchestrator.runner.outcome import Outcome

SUMMARY_NAME = "run.json"
PLAYBOOK_NAME = "playbook.yaml"
"""The window playbook's text as the run ran it, beside its journal (which keeps its hash):
resume finishes the run with those very steps, whatever became of the file since."""
OUTCOMES = tuple(Outcome)
RUN_START = "run.start"
"""Journal event opening a run; its fields (who, from, to, cut, ...) seed a rebuilt summary."""
RUN_END = "run.end"
"""Journal event closing a run; carries ``outcome`` and ``error``."""
PROBE_REPORT = "probe.report"
"""Journal event carrying ``ProbeReport.to_json()`` fields."""

ENVELOPE = frozenset({"ts", "t", "run_id", "event", "stage", "step", "host"})
"""The fields every journal event carries; the rest is its own data."""
_ENVELOPE = ENVELOPE
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
    private_dir(Path(runs_dir).expanduser())
    text = json.dumps(jsonable(dict(summary)), indent=2) + "\n"
    temporary = directory / f".{SUMMARY_NAME}.{os.getpid()}.tmp"
    try:
        with open_private(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / SUMMARY_NAME)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_summary(runs_dir: Path, run_id: str, summary: Mapping[str, Any]) -> bool:
    """:func:`write_summary`, for a run in progress: a write that fails (a full disk) is said
    on stderr and the run goes on (the journal's events stay in memory). False then."""
    try:
        write_summary(runs_dir, run_id, summary)
    except OSError as exc:
        try:
            sys.stderr.write(f"fastdowntime: warning: cannot write the summary of run {run_id} "
                             f"({exc}); the run goes on\n")
        except (OSError, ValueError):
            return False  # stderr is gone too
        return False
    return True


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run, newest first: ``id, started, finished, outcome, cut, outage_s, who``."""
    return [{key: run.get(key) for key in
             ("id", "started", "finished", "outcome", "cut", "outage_s", "who")}
            for run in summaries(runs_dir)]


def summaries(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run's whole summary, newest first."""
    runs = [_load_dir(directory) for directory in _run_dirs(Path(runs_dir).expanduser())]
    runs.sort(key=lambda run: (_epoch(run.get("started")) or 0.0, run["id"]), reverse=True)
    return runs


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
            raise BadInput(f"run last: there are no runs in {root}", key="RUN")
        return _load_dir(root / runs[0]["id"])
    if ref in ids:
        return _load_dir(root / ref)
    matches = [run_id for run_id in ids if ref and run_id.startswith(ref)]
    if not matches:
        raise BadInput(f"run {ref!r}: no such run in {root} (`fastdowntime runs` lists them)",
                       key="RUN")
    if len(matches) > 1:
        raise BadInput(f"run {ref!r} is ambiguous: it starts {len(matches)} runs "
                       f"({', '.join(matches[:5])}{', ...' if len(matches) > 5 else ''})",
                       key="RUN")
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


def epoch(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO string (views read summaries with it)."""
    return _epoch(value)


__all__ = ["ENVELOPE", "OUTCOMES", "PLAYBOOK_NAME", "PROBE_REPORT", "RUN_END", "RUN_START",
           "SUMMARY_NAME",
           "epoch", "list_runs", "load_run", "steps_from_journal", "summaries",
           "summary_from_journal", "write_summary"]

"""What a report shows, as plain JSON data: one run (``report RUN --json``) or the trend.

Summaries come in every age and state: written by an older orchestrator
(no ``hosts``, no ``estimate``, a probe without request times), rebuilt from
the journal of a crashed run (no window, no outcome), or edited by hand.
Everything here reads them defensively: a missing key, a None, a value of
the wrong type becomes None or an empty list, never an exception, so every
page renders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.runner.journal import iso_ms
from orchestrator.runner.runs import epoch, steps_from_journal


def number(value: Any) -> float | int | None:
    """A finite int or float as is; None for anything else (bool, NaN, text, None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def iso(value: Any) -> str | None:
    """An instant (epoch seconds or ISO text) as a UTC ISO instant to the ms; None if unknown."""
    moment = epoch(value)
    return None if moment is None else iso_ms(moment)


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def mappings(value: Any) -> list[Mapping[str, Any]]:
    """The mappings in a list (anything else in it, or a non-list, is skipped)."""
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def report_data(run: Mapping[str, Any], journal: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The data of one run's report page, JSON-ready; the page is drawn from it alone.

    Keys: the summary's ``id who outcome error notes from to cut started
    finished rehearse approvals``; ``window`` (always present: ``opened`` None
    when there was none; ``deadline`` is opened + budget); ``estimate`` (as
    recorded, or None); ``cold_patches`` (estimated, rehearsed and actual
    seconds per patch); ``hosts`` (one ``{host, state}`` per host); ``probe``
    and ``probe_window`` (the probe's JSON, or None); ``failed_requests``,
    ``longest_wait_s``; ``steps`` (from the summary, else the journal) and
    ``events`` (the journal's events other than steps).
    """
    estimate = run.get("estimate")
    probe = run.get("probe")
    probe_window = run.get("probe_window")
    return {
        "id": _text(run.get("id")), "who": _text(run.get("who")),
        "outcome": _text(run.get("outcome")), "error": _text(run.get("error")),
        "notes": [str(note) for note in _list(run.get("notes")) if note is not None],
        "from": _text(run.get("from")), "to": _text(run.get("to")), "cut": _text(run.get("cut")),
        "started": iso(run.get("started")), "finished": iso(run.get("finished")),
        "rehearse": run.get("rehearse") if isinstance(run.get("rehearse"), bool) else None,
        "approvals": _list(run.get("approvals")),
        "window": window_data(run),
        "estimate": dict(estimate) if isinstance(estimate, Mapping) else None,
        "cold_patches": cold_patch_rows(run),
        "hosts": [{"host": str(host), "state": _text(state)}
                  for host, state in mapping(run.get("hosts")).items()],
        "probe": dict(probe) if isinstance(probe, Mapping) else None,
        "probe_window": dict(probe_window) if isinstance(probe_window, Mapping) else None,
        "failed_requests": number(run.get("failed_requests")),
        "longest_wait_s": number(run.get("longest_wait_s")),
        "steps": _steps(run, journal),
        "events": [dict(event) for event in journal
                   if not str(event.get("event", "")).startswith("step.")],
    }


def window_data(run: Mapping[str, Any]) -> dict[str, Any]:
    """The window: mode, opened, closed, budget, deadline (opened + budget), outage, estimate.

    ``outage_s`` is the summary's (the journal's measure), else closed - opened;
    ``over_budget`` is True only when both outage and budget are known.
    """
    window = mapping(run.get("window"))
    opened, closed = epoch(window.get("opened")), epoch(window.get("closed"))
    budget = number(window.get("budget_s"))
    if budget is None:
        budget = number(run.get("window_budget_s"))
    outage = number(run.get("outage_s"))
    if outage is None and opened is not None and closed is not None:
        outage = round(closed - opened, 3)
    estimated = number(mapping(run.get("estimate")).get("total_s"))
    return {
        "mode": _text(run.get("window_mode")),
        "opened": None if opened is None else iso_ms(opened),
        "closed": None if closed is None else iso_ms(closed),
        "budget_s": budget,
        "deadline": None if opened is None or budget is None else iso_ms(opened + budget),
        "outage_s": outage,
        "estimated_s": estimated,
        "over_budget": outage is not None and budget is not None and outage > budget,
    }


def cold_patch_rows(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per cold patch: ``name, rehearsed_s, scale, estimated_s, actual_s, statements``.

    The estimate's patches come first, in its order; a patch applied but not
    estimated follows. A figure nobody recorded is None.
    """
    rows: dict[str, dict[str, Any]] = {}
    for patch in mappings(mapping(run.get("estimate")).get("patches")):
        name = str(patch.get("name") or patch.get("filename") or "?")
        rows[name] = {"name": name, "rehearsed_s": number(patch.get("rehearsed_s")),
                      "scale": number(patch.get("scale")),
                      "estimated_s": number(patch.get("estimated_s")),
                      "actual_s": None, "statements": None}
    for applied in mappings(run.get("cold_patches")):
        name = str(applied.get("filename") or applied.get("name") or "?")
        row = rows.setdefault(name, {"name": name, "rehearsed_s": None, "scale": None,
                                     "estimated_s": None, "actual_s": None, "statements": None})
        row["actual_s"] = number(applied.get("duration_s"))
        row["statements"] = number(applied.get("statements"))
    return list(rows.values())


def _steps(run: Mapping[str, Any],
           journal: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    steps = mappings(run.get("steps")) or steps_from_journal(journal)
    return [{"name": _text(step.get("name")), "stage": _text(step.get("stage")),
             "host": _text(step.get("host")), "started": iso(step.get("started")),
             "duration_s": number(step.get("duration_s")), "outcome": _text(step.get("outcome")),
             "error": _text(step.get("error"))} for step in steps]


def run_line(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run's figures for the trend: when, outcome, outage, estimate and budget, the probe's."""
    window = window_data(run)
    return {"id": _text(run.get("id")), "started": iso(run.get("started")),
            "outcome": _text(run.get("outcome")), "who": _text(run.get("who")),
            "cut": _text(run.get("cut")), "rehearse": run.get("rehearse") is True,
            "mode": window["mode"], "budget_s": window["budget_s"],
            "outage_s": window["outage_s"], "estimated_s": window["estimated_s"],
            "over_budget": window["over_budget"],
            "failed_requests": number(run.get("failed_requests")),
            "longest_wait_s": number(run.get("longest_wait_s"))}


def trend_data(runs: Iterable[Mapping[str, Any]], current: str | None = None) -> dict[str, Any]:
    """Every run's :func:`run_line`, oldest first (a drift reads left to right).

    ``current`` names the run the page marks (``report RUN --trend FILE``).
    """
    lines = [run_line(run) for run in runs]
    lines.sort(key=lambda line: (epoch(line["started"]) or 0.0, line["id"] or ""))
    return {"current": current, "runs": lines}


__all__ = ["cold_patch_rows", "iso", "mapping", "mappings", "number",
           "report_data", "run_line", "trend_data", "window_data"]

"""How a run's figures read, in every view: instants, durations, request times, the probe.

``show`` (text) and ``report`` (HTML) print the same numbers the same way;
each function takes a summary's raw value (which may be missing, None or of
an old shape) and returns text, ``-`` when the value is unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orchestrator.runner.journal import iso_ms
from orchestrator.runner.runs import epoch


def instant(value: Any) -> str:
    """An instant (epoch seconds or ISO text) as a UTC ISO instant to the ms; "-" if unknown."""
    moment = epoch(value)
    return "-" if moment is None else iso_ms(moment)


def seconds(value: Any) -> str:
    """Seconds to the millisecond: ``2.250 s``; "-" when not a number."""
    return "-" if not is_number(value) else f"{value:.3f} s"


def latency(value: Any) -> str:
    """A request time to read at a glance: 1.4 ms, 12 ms, 1.043 s; "-" when unknown."""
    if not is_number(value):
        return "-"
    if value >= 0.9995:  # 1000 ms
        return f"{value:.3f} s"
    return f"{value * 1000:.1f} ms" if abs(value) < 0.01 else f"{value * 1000:.0f} ms"


def short(sha: Any, missing: str = "-") -> str:
    """A revision's first 12 characters; ``missing`` when there is none."""
    return str(sha)[:12] if sha else missing


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (a bool is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def approval(item: Any) -> str:
    """One ``--approve`` record as ``patch: who`` (other shapes as JSON)."""
    if isinstance(item, Mapping):
        patch = item.get("patch") or item.get("file")
        who = item.get("who") or item.get("by")
        if patch is not None and who is not None:
            return f"{patch}: {who}"
        return json.dumps(item, default=str)
    return str(item)


def has_waits(probe: Mapping[str, Any]) -> bool:
    """Whether a probe's JSON carries request times (summaries before them do not)."""
    return bool({"longest_wait_s", "p50_s", "p99_s"} & set(probe))


def waits(probe: Mapping[str, Any]) -> str:
    """Longest wait, p50 and p99 of a probe's JSON; "" for a summary older than them."""
    if not has_waits(probe):
        return ""
    return (f"longest wait {seconds(probe.get('longest_wait_s'))}, "
            f"p50 {latency(probe.get('p50_s'))}, p99 {latency(probe.get('p99_s'))}")


def probe_line(probe: Mapping[str, Any] | None) -> str:
    """The probe's outage, requests, failures and waits in one line; "no probe" without one."""
    if not probe:
        return "no probe"
    outages = probe.get("outages") or []
    request_times = waits(probe)
    text = (f"{seconds(probe.get('longest_s'))} seen by the probe (longest of "
            f"{len(outages)}; {probe.get('requests')} requests, {probe.get('failures')} failed"
            + (f"; {request_times})" if request_times else ")"))
    if probe.get("down_at_end"):
        text += ", still failing when it stopped"
    return text


def probe_window_line(window: Mapping[str, Any]) -> str:
    """The probe's requests that overlapped the window (the summary's ``probe_window``)."""
    request_times = waits(window)
    return (f"window: {window.get('requests')} requests, {window.get('failures')} failed"
            + (f", {request_times}" if request_times else ""))


__all__ = ["approval", "has_waits", "instant", "is_number", "latency", "probe_line",
           "probe_window_line", "seconds", "short", "waits"]

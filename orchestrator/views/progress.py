"""Progress on a terminal: the stage, the step, each host's state and the window's countdown.

Fed by the journal's events (its ``echo``). On a terminal a rich ``Live``
view redraws ten times a second, so the countdown moves while a step runs;
elsewhere each event is one plain log line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


def plain_line(event: dict[str, Any]) -> str:
    """One log line: time, stage, event and its main fields."""
    parts = [event.get("ts", ""), event.get("stage") or "", event.get("event", "")]
    for key in ("step", "host", "hook", "outcome", "duration_s", "outage_s", "error"):
        if event.get(key) not in (None, ""):
            parts.append(f"{key}={event[key]}")
    return " ".join(str(p) for p in parts if p != "")


class Progress:
    """Consumes journal events; shows them live on a terminal or as lines elsewhere."""

    def __init__(self, console: Console, budget_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.budget_s = budget_s
        self.clock = clock
        self.stage = ""
        self.step = ""
        self.hosts: dict[str, str] = {}
        self.window_opened: float | None = None
        self.window_outage: float | None = None
        self.done: list[str] = []
        self.live: Live | None = None
        if console.is_terminal:
            self.live = Live(self, console=console, refresh_per_second=10, transient=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None and self.live.is_started:
            self.live.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.live is None:
            self.console.out(plain_line(event), highlight=False)
            return
        if not self.live.is_started:  # first event: the plan and the question are behind us
            self.live.start()
        name = event.get("event", "")
        self.stage = event.get("stage") or self.stage
        if name == "step.start":
            self.step = str(event.get("step", ""))
        elif name in ("step.done", "step.failed"):
            mark = "ok" if name == "step.done" else "FAILED"
            self.done.append(f"{event.get('stage', '')} {event.get('step', '')}: {mark} "
                             f"({event.get('duration_s', 0):.3f} s)")
        elif name == "window.open":
            self.window_opened = self.clock()
        elif name == "window.close":
            self.window_outage = event.get("outage_s")
            self.window_opened = None
        if event.get("host"):
            self.hosts[str(event["host"])] = f"{name} {event.get('outcome', '')}".strip()

    def __rich__(self) -> Group:
        head = Text.assemble(("stage ", "dim"), (self.stage or "-", "bold"),
                             ("  step ", "dim"), (self.step or "-", "bold"))
        if self.window_opened is not None:
            left = self.budget_s - (self.clock() - self.window_opened)
            style = "bold red" if left < self.budget_s / 4 else "bold yellow"
            window = Text(f"window open: {left:6.2f} s of {self.budget_s:g} s left", style)
        elif self.window_outage is not None:
            window = Text(f"window closed after {self.window_outage:.3f} s", "green")
        else:
            window = Text("window not open", "dim")
        table = Table(show_header=True, show_edge=False)
        table.add_column("host")
        table.add_column("last event")
        for host, state in sorted(self.hosts.items()):
            table.add_row(host, state)
        recent = Text("\n".join(self.done[-6:]), "dim")
        return Group(head, window, table, recent)

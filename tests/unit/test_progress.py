"""Progress: plain lines off a terminal; on one, the step, hosts and the window countdown."""

from __future__ import annotations

import io

from rich.console import Console

from orchestrator.views.progress import Progress


def test_plain_lines_when_not_a_terminal() -> None:
    """Each event is one line with its stage, event and main fields."""
    out = io.StringIO()
    progress = Progress(Console(file=out, force_terminal=False, width=200), 30)
    with progress:
        progress({"ts": "T", "stage": "fastdowntime", "event": "step.done",
                  "step": "open_window", "outcome": "ok", "duration_s": 0.003})
    assert out.getvalue().strip() == ("T fastdowntime step.done step=open_window outcome=ok "
                                      "duration_s=0.003")


def test_plain_lines_name_the_hook() -> None:
    """A hook's events say which hook they are about."""
    out = io.StringIO()
    with Progress(Console(file=out, force_terminal=False, width=200), 30) as progress:
        progress({"ts": "T", "event": "hook.failed", "hook": "on_done", "error": "exited 1"})
    assert out.getvalue().strip() == "T hook.failed hook=on_done error=exited 1"


def test_terminal_view_counts_the_window_down() -> None:
    """While the window is open the view shows the time left of the budget."""
    now = [100.0]
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    progress = Progress(console, 30, clock=lambda: now[0])
    progress.live = None  # render by hand, without the refresh thread
    progress.stage, progress.step = "fastdowntime", "apply_cold_patches"
    progress.window_opened = 100.0
    now[0] = 112.5
    console.print(progress)
    text = out.getvalue()
    assert "apply_cold_patches" in text and "17.50 s of 30 s left" in text

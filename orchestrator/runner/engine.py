"""The generic step runner: it knows steps, not stages.

Each step is journaled (start, done with its data and duration, or failed).
Before the commit point a failure undoes the failing step (its ``do`` may
have done part of its work, so every ``undo`` tolerates a partial ``do``) and
the completed steps, in reverse, and raises :class:`FailedBeforeCommit`
(exit 1): old state back; :class:`UndoFailed` when an undo failed. After it, the
run rolls forward: a failing step is recorded in ``run.problems`` and the
next steps still run; the caller reports exit 4 with each host's state.

From the commit point until the window has closed and traffic went where it
hands it, SIGINT, SIGTERM and SIGHUP are held
(:func:`held_until_the_window_closes`): an interrupt there would
skip giving the connections back or the traffic, and leave users out with
the schema already new. Each held signal is recorded as a problem once the
window has closed (exit 4).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from orchestrator.errors import CommitUnknown, FailedBeforeCommit, UndoFailed
from orchestrator.runner.actions.script import Preview, script_lines
from orchestrator.runner.context import Run
from orchestrator.runner.playbook import Playbook, Step

ROLL_FORWARD_HINT = ("the schema is new and code works on both schemas; finish with "
                      "`fastdowntime resume RUN` once the cause is fixed")


def run_steps(playbook: Playbook, run: Run) -> None:
    """Run ``playbook``'s steps on ``run``; undo or roll forward on failure."""
    with held_until_the_window_closes(run) as held:
        try:
            _run_steps(playbook, run, held)
        finally:
            _report_held(playbook, run, held)


def _run_steps(playbook: Playbook, run: Run, held: list[str]) -> None:
    done: list[Step] = []
    sync = _Sync(run)
    for step in playbook.steps:
        journal = run.journal.bind(stage=run.stage, step=step.name)
        try:
            _check_lock(run, step)
            with journal.step(step.name, line=step.line) as record:
                data = step.action.do(run)
                record.note(**data)
            sync.after()
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure restores
            why = str(exc) or type(exc).__name__  # Python's own Ctrl-C names nothing
            if run.committed:
                run.problems.append(f"{playbook.name} step {step.name}: {why}")
                journal.event("rollforward", error=why)
                sync.after()
                continue
            # the failing step is undone too: its ``do`` may have changed part of the state
            problems = undo([*done, step], run)
            if isinstance(exc, CommitUnknown):
                restored = (f"undo failed: {'; '.join(problems)}" if problems else
                            "the hosts serve the previous release again (it works on "
                            "either schema)")
                raise CommitUnknown(f"{playbook.name} step {step.name} (line {step.line}): "
                                    f"{why}; {restored}; once the database answers, "
                                    f"`fastdowntime resume {run.run_id}` finds out whether "
                                    "COMMIT happened and finishes or restores") from exc
            if problems:
                raise UndoFailed(f"{playbook.name} step {step.name} (line {step.line}) "
                                 f"failed: {why}; undo failed: {'; '.join(problems)}; run "
                                 f"`fastdowntime resume {run.run_id}` once the cause is "
                                 "fixed") from exc
            raise FailedBeforeCommit(f"{playbook.name} step {step.name} (line {step.line}) "
                                     f"failed: {why}; the old state is restored") from exc
        done.append(step)
        if not _holding(run):
            _report_held(playbook, run, held)
    sync.end()


class _Sync:
    """When the journal is fsync'd: once, after COMMIT, but not while users wait in the
    open window (held queries, or a drained window): then after the step that closes it.
    Every line is written (flushed) as it comes either way; the fsync guards them against
    a power cut only, and a resume asks the database whether COMMIT happened. Measured
    here: 1-8 ms between the cold patches' step and RESUME, users waiting."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.synced = False

    def after(self) -> None:
        """After a step (done, or failed and rolled forward)."""
        if not self.run.window_open:
            self.end()

    def end(self) -> None:
        if self.run.committed and not self.synced:
            self.synced = True
            self.run.journal.checkpoint()


_INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _holding(run: Run) -> bool:
    """Interrupts wait from COMMIT until the window has closed and the traffic went where
    the window hands it (in hold mode the window closes first, at RESUME)."""
    return run.committed and (run.window_closed is None or not run.settled)


@contextmanager
def held_until_the_window_closes(run: Run) -> Iterator[list[str]]:
    """While the body runs, an interrupt (SIGINT, SIGTERM, SIGHUP) that comes after
    ``run`` committed and before its window closed is held: its name is appended to the
    list yielded, and the steps go on. Before COMMIT and after the window it takes its
    usual path (the handler in place before, raising KeyboardInterrupt). Signals can only
    be handled in the main thread; elsewhere the body just runs."""
    held: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous: dict[int, Any] = {}

    def handler(number: int, frame: Any) -> None:
        name = signal.Signals(number).name
        if _holding(run):
            held.append(name)
            return
        before = previous[number]
        if callable(before):
            before(number, frame)
        elif before != signal.SIG_IGN:
            raise KeyboardInterrupt(f"{name} received")
    for interrupt in _INTERRUPTS:
        previous[interrupt] = signal.signal(interrupt, handler)
    try:
        yield held
    finally:
        for number, before in previous.items():
            signal.signal(number, before)


def _report_held(playbook: Playbook, run: Run, held: list[str]) -> None:
    """Record the interrupts held after COMMIT as a problem of the run (exit 4)."""
    if not held:
        return
    why = (f"{', '.join(dict.fromkeys(held))} received after COMMIT: held until the window "
           "closed, then the run rolled forward")
    held.clear()
    run.problems.append(f"{playbook.name}: {why}")
    run.journal.bind(stage=run.stage).event("rollforward", error=why)


class LockLost(FailedBeforeCommit):
    """The deploy lock's session died before COMMIT: the run stops and undoes."""


def _check_lock(run: Run, step: Step) -> None:
    """Before COMMIT, a run that lost its deploy lock (its session died: another run may
    start) stops and undoes; after COMMIT it rolls forward regardless."""
    if run.lock is not None and not run.committed and not run.lock.alive():
        lost = LockLost(f"the deploy lock's session is gone before {step.name}: another run "
                        "could start beside this one")
        run.journal.bind(stage=run.stage, step=step.name).event("lock.lost", error=str(lost))
        raise lost


def undo(done: list[Step], run: Run) -> list[str]:
    """Undo ``done`` in reverse, journaling each; return the undo failures (all attempted)."""
    problems = []
    for step in reversed(done):
        journal = run.journal.bind(stage=run.stage, step=step.name)
        try:
            with journal.step(f"undo {step.name}", line=step.line):
                step.action.undo(run)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every undo is attempted
            problems.append(f"undo {step.name}: {exc}")
    return problems


def render_steps(playbook: Playbook, run: Run, preview: Preview | None = None) -> list[str]:
    """Every step with the exact commands and SQL it would run, for ``--dry-run``: the
    very descriptions ``run_steps`` executes (each action's ``reads``, ``script`` and, for a
    step that can be undone, ``undo_script``), rendered instead of run. ``preview`` holds
    what the dry run read in place of the run's own reads (the slots)."""
    lines = [f"== {playbook.name} ({playbook.path.name}): {run.release[:12]} "
             f"(from {run.previous[:12]})"]
    commit = next((i for i, s in enumerate(playbook.steps) if s.action.commit_point), None)
    for number, step in enumerate(playbook.steps, 1):
        doc = next(iter((type(step.action).__doc__ or "").strip().splitlines()), "")
        lines.append(f"{number:2d}. {step.name}: {doc}")
        body = script_lines(step.action.reads(run), run, preview)
        body += script_lines(step.action.script(run), run, preview)
        if commit is None or number - 1 <= commit:
            undo = script_lines(step.action.undo_script(run), run, preview)
            if undo:
                before = "" if commit is None else " before COMMIT"
                body += [f"if this step or a later one fails{before}, undo:",
                         *(f"  {line}" for line in undo)]
        lines += [f"      {line}" for line in body]
    return lines


__all__ = ["ROLL_FORWARD_HINT", "render_steps", "run_steps", "undo"]

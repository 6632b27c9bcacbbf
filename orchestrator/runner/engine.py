"""The generic step runner: it knows steps, not stages.

Each step is journaled (start, done with its data and duration, or failed).
Before the commit point a failure undoes the failing step (its ``do`` may
have done part of its work, so every ``undo`` tolerates a partial ``do``) and
the completed steps, in reverse, and raises :class:`FailedBeforeCommit`
(exit 1): old state back; :class:`UndoFailed` when an undo failed. After it, the
run rolls forward: a failing step is recorded in ``run.problems`` and the
next steps still run; the caller reports exit 4 with each host's state.
"""

from __future__ import annotations

from orchestrator.errors import CommitUnknown, FailedBeforeCommit, UndoFailed
from orchestrator.runner.actions.script import Preview, script_lines
from orchestrator.runner.context import Run
from orchestrator.runner.playbook import Playbook, Step

ROLL_FORWARD_HINT = ("the schema is new and code works on both schemas; finish with "
                      "`fastdowntime resume RUN` once the cause is fixed")


def run_steps(playbook: Playbook, run: Run) -> None:
    """Run ``playbook``'s steps on ``run``; undo or roll forward on failure."""
    done: list[Step] = []
    for step in playbook.steps:
        journal = run.journal.bind(stage=run.stage, step=step.name)
        try:
            _check_lock(run, step)
            with journal.step(step.name, line=step.line) as record:
                data = step.action.do(run)
                record.note(**data)
            if step.action.commit_point:
                journal.checkpoint()
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - every failure restores
            if run.committed:
                run.problems.append(f"{playbook.name} step {step.name}: {exc}")
                journal.event("rollforward", error=str(exc))
                continue
            # the failing step is undone too: its ``do`` may have changed part of the state
            problems = undo([*done, step], run)
            if isinstance(exc, CommitUnknown):
                restored = (f"undo failed: {'; '.join(problems)}" if problems else
                            "the hosts serve the previous release again (it works on "
                            "either schema)")
                raise CommitUnknown(f"{playbook.name} step {step.name} (line {step.line}): "
                                    f"{exc}; {restored}; once the database answers, "
                                    f"`fastdowntime resume {run.run_id}` finds out whether "
                                    "COMMIT happened and finishes or restores") from exc
            if problems:
                raise UndoFailed(f"{playbook.name} step {step.name} (line {step.line}) "
                                 f"failed: {exc}; undo failed: {'; '.join(problems)}; run "
                                 "`fastdowntime resume RUN` once the cause is fixed") from exc
            raise FailedBeforeCommit(f"{playbook.name} step {step.name} (line {step.line}) "
                                     f"failed: {exc}; the old state is restored") from exc
        done.append(step)


class LockLost(FailedBeforeCommit):
    """The deploy lock's session died before COMMIT: the run stops and undoes."""


def _check_lock(run: Run, step: Step) -> None:
    """Before COMMIT, a run that lost its deploy lock (its session died: another run may
    start) stops and undoes; after COMMIT it rolls forward regardless."""
    if run.lock is not None and not run.committed and not run.lock.alive():
        raise LockLost(f"the deploy lock's session is gone before {step.name}: another run "
                       "could start beside this one")


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

"""``resume RUN``: after the orchestrator died mid-run, finish or restore from the journal.

The journal says whether COMMIT happened, which steps of the window playbook
started, and which instance slot of each host was old and new; the live
state (haproxy, pgbouncer) says what is left to do. Before the commit point:
connections back, then every step that started is undone, newest first, by
the playbook's own actions (each undo tolerates a partial ``do``): the old
instances ready again, the new ones stopped, the scripts started (exit 1:
nothing changed).
After it: connections back, then the playbook's steps past the commit point
that did not finish, by the actions themselves (the new instances ready, the
old ones stopped, ``current`` on the cut, the scripts started; or, for the
restart playbook, each serving slot restarted on the cut): exit 0, or 4 with
what did not finish. The nodowntime tail is left for the next ``deploy``.
Either way the run is called restored or done only when haproxy, read at
the end, routes to a slot of every app host: a journal cut short may have
hidden a step (exit 1, the run left unsettled, before COMMIT; exit 4 after).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config import Config
from orchestrator.errors import (
    BadInput,
    FailedAfterCommit,
    FailedBeforeCommit,
    FastdowntimeError,
    InternalError,
    UndoFailed,
)
from orchestrator.plan import Plan
from orchestrator.remote import operations as ops
from orchestrator.runner.context import Run
from orchestrator.runner.outcome import Outcome
from orchestrator.runner.planning import refreshed

if TYPE_CHECKING:
    from orchestrator.db.cold import Backend
    from orchestrator.runner.playbook import Playbook, Step


def resume(config: Config, ref: str, *, show: Callable[[str], None] = print) -> dict[str, Any]:
    """Finish or restore run ``ref``; return its updated summary."""
    from orchestrator.db.connect import connect
    from orchestrator.db.connections import ConnectionControl
    from orchestrator.db.lock import DeployLock, whoami
    from orchestrator.remote.haproxy import Haproxy
    from orchestrator.remote.ssh import Remote
    from orchestrator.runner.hooks import Hooks
    from orchestrator.runner.journal import Journal, read_journal
    from orchestrator.runner.runs import SUMMARY_NAME, load_run, save_summary

    runs_dir = Path(config.runs.dir)
    summary = load_run(runs_dir, ref)
    if summary.get("outcome") not in {o for o in Outcome if o.needs_resume}:
        raise BadInput(f"run {summary['id']} ended ({summary.get('outcome')}): "
                       "nothing to resume")
    events = read_journal(runs_dir / summary["id"] / "journal.jsonl")
    mode = _run_start(events).get("window_mode")
    if mode in ("hold", "drain") and mode != config.window.mode:
        # the window is finished or undone as it was opened, whatever the config says now
        config = dataclasses.replace(config, window=dataclasses.replace(config.window,
                                                                          mode=mode))
    # a step run again may stage the release: from the repository the run fetched it into
    config = refreshed(config, show)
    settings = config.need("database")
    lock = DeployLock(settings, f"{summary['id']}-resume", whoami())
    lock.acquire()  # the dead run's lock died with its session; a live one refuses (exit 5)
    journal = Journal(runs_dir, summary["id"])
    hooks = Hooks.for_run(config, journal, summary, stage="fastdowntime",
                          summary_path=runs_dir / summary["id"] / SUMMARY_NAME,
                          journal_path=journal.path, command="resume")
    outcome = Outcome.FAILED
    problem: FailedAfterCommit | None = None
    ended: FastdowntimeError | None = None
    try:
        # COMMIT may have happened without the journal hearing of it: ask the database
        committed = (any(e.get("event") == "commit" for e in events)
                     or _committed(settings, summary["id"], _cold_patches(events),
                                   _cold_backend(events)))
        slots = _slots(events)
        journal.event("resume.start", committed=committed, slots=slots)
        if not slots:
            show("the journal names no instance slots: the window was never prepared, or the "
                 "journal was cut short; haproxy is checked once resume is done")
        with Remote(config) as remote, Haproxy(remote, config) as haproxy:
            release = summary.get("cut") or summary["from"]
            run = Run(config, Plan.empty(summary["from"], release), summary["id"], journal,
                      "fastdowntime", release, summary["from"], {}, remote=remote,
                      haproxy=haproxy, slots=_JournaledSlots(slots, journal.path))
            control = ConnectionControl(settings, connect(settings, autocommit=True))
            run.control = control
            try:
                control.prepare()
                control.restore()
                journal.event("resume.connections_restored")
                restarted = False
                if committed:
                    try:
                        _finish_window(run, events)
                    except FastdowntimeError as exc:
                        problem = _rolled_forward(journal, problem, exc)
                    down = _down(run)
                    if down:
                        problem = _rolled_forward(journal, problem, FailedAfterCommit(down))
                else:
                    if slots:
                        restarted = _undo_window(run, events)
                    if config.scripts is not None and config.role("scripts") and not restarted:
                        ops.start_scripts(remote, config).raise_for_failures(
                            "starting the scripts")
                    # restored is said only of what haproxy shows: a journal cut short
                    # may have hidden a step that drained the serving instances
                    down = _down(run)
                    if down:
                        raise UndoFailed(
                            f"resumed, but {down}; the schema is unchanged; once every host "
                            f"serves {summary['from'][:12]} again, run `fastdowntime resume "
                            f"{summary['id']}` to settle the run")
            finally:
                control.close()
                control.primary.close()
        outcome = ((Outcome.FAILED_AFTER_COMMIT if problem else Outcome.DONE) if committed
                   else Outcome.ROLLED_BACK)
        summary.update({"outcome": outcome, "resumed_by": whoami(),
                        "error": str(problem) if problem else
                        None if committed else summary.get("error")})
        if run.host_states:
            summary["hosts"] = {**summary.get("hosts", {}), **run.host_states}
        save_summary(runs_dir, summary["id"], summary)
    except FastdowntimeError as exc:
        ended = exc
        raise
    except BaseException as exc:  # noqa: BLE001 - told to the hooks, then raised on
        ended = InternalError(exc, summary["id"])
        raise
    finally:
        journal.event("resume.end", outcome=outcome)
        journal.release_reserve()  # before the lock frees the run to another resume
        try:
            # the resumed run is settled only when resume got to an end, not when it failed
            lock.finish(outcome, settles=None if outcome == Outcome.FAILED else summary["id"])
        finally:
            # on_done / on_failure once the record is final and the lock free, as a
            # deploy's end fires them (journaled); a failing hook only warns
            error = _ending(outcome, ended or problem)
            told = str(ended or problem) if ended or problem else summary.get("error")
            hooks.run_ended({**summary, "outcome": outcome, "error": told}, error)
            journal.close()
    if problem is not None:
        raise problem
    if not committed:
        raise FailedBeforeCommit(f"run {summary['id']} restored: every host serves "
                                 f"{summary['from'][:12]}, the schema is unchanged")
    return summary


class UnknownSlots(LookupError):
    """A step asked for the instance slots of a host the run's journal names none for."""

    def __str__(self) -> str:
        return str(self.args[0])


class _JournaledSlots(dict[str, tuple[int, int]]):
    """The slots the journal recorded; asking for a host it has none for names why (a
    journal cut short by a full disk where the filesystem could not reserve room), instead
    of a bare ``KeyError``."""

    def __init__(self, slots: dict[str, tuple[int, int]], path: Path) -> None:
        super().__init__(slots)
        self.path = path

    def __missing__(self, host: str) -> tuple[int, int]:
        raise UnknownSlots(f"{host}: the journal {self.path} names no instance slots for it "
                           "(it was cut short), so this step cannot tell its old instance "
                           "from its new one; `fastdowntime status` shows what haproxy serves")


def _down(run: Run) -> str | None:
    """Why not every app host is served: the hosts haproxy routes to through no slot, as a
    sentence (None: every host is served). Haproxy that cannot be read is not taken as
    serving: resume is where a journal cut short meets the live state, and it can be run
    again once the LB host answers."""
    from orchestrator.runner.actions.instances import hosts_unserved

    try:
        down = hosts_unserved(run)
    except FastdowntimeError as exc:
        run.journal.event("resume.unconfirmed", error=str(exc))
        return f"haproxy could not be read to confirm that it serves every app host ({exc})"
    if not down:
        return None
    run.journal.event("resume.unserved", hosts=down)
    return f"haproxy routes to no slot of {'; '.join(down)}"


def _ending(outcome: Outcome, error: FastdowntimeError | None) -> FastdowntimeError | None:
    """The error the hooks are told resume ended with (None: done); one that was raised is
    ``error``, so what is left without one is a restore (exit 1)."""
    if error is not None or outcome == Outcome.DONE:
        return error
    return FailedBeforeCommit("resumed: restored, nothing changed")


def _rolled_forward(journal: Any, problem: FailedAfterCommit | None,
                    exc: FastdowntimeError) -> FailedAfterCommit:
    """Journal a failure resume rolled forward past (after COMMIT); return the exit-4 error
    that reports it with any earlier one."""
    journal.event("rollforward", error=str(exc))
    if problem is None and isinstance(exc, FailedAfterCommit):
        return exc
    return FailedAfterCommit(f"{problem or 'resumed after COMMIT'}; {exc}")


def _cold_patches(events: list[dict[str, Any]]) -> list[str]:
    """The cold patches of the run's plan, from its ``run.start`` event."""
    plan = _run_start(events).get("plan") or {}
    return list((plan.get("fastdowntime") or {}).get("cold_patches") or [])


def _cold_backend(events: list[dict[str, Any]]) -> Backend | None:
    """The server process that ran the run's cold-patch transaction, as the journal says."""
    from orchestrator.db.cold import Backend

    found = [e.get("backend") for e in events if e.get("event") == "cold.backend"]
    return Backend.from_json(found[-1]) if found else None


def _committed(settings: Any, run_id: str, cold_patches: list[str],
               backend: Backend | None) -> bool:
    """True when the database holds one of the run's cold patches: its COMMIT happened
    (after the process of a COMMIT cut off has ended, see :func:`committed_by`)."""
    from orchestrator.db.cold import committed_by
    from orchestrator.db.connect import connect

    conn = connect(settings, readonly=True, autocommit=True)
    try:
        return committed_by(conn, run_id, cold_patches, backend=backend)
    finally:
        conn.close()


def _window_playbook(run: Run, events: list[dict[str, Any]]) -> tuple[Playbook, bool]:
    """The window playbook the run ran, and whether its steps' lines are the journal's: from
    the copy beside the journal when the journal names its hash (a file of the operator's,
    changed or gone since, or a copy that kept a shipped playbook's name); from its name,
    or the config's, for a journal older than that (lines may have moved since)."""
    from orchestrator.runner.playbook import load_playbook, parse_playbook
    from orchestrator.runner.runs import PLAYBOOK_NAME

    start = _run_start(events)
    digest = start.get("playbook_sha256")
    if isinstance(digest, str) and digest:
        copy = Path(run.config.runs.dir) / run.run_id / PLAYBOOK_NAME
        try:
            text = copy.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"{copy}: cannot read the playbook this run ran ({exc}); "
                           "restore it from a backup of the runs directory") from None
        if hashlib.sha256(text.encode()).hexdigest() != digest:
            raise BadInput(f"{copy} changed since the run (its journal names sha256 "
                           f"{digest}); restore the playbook the run ran")
        where = Path(str(start.get("playbook_file") or copy))
        return parse_playbook(text, where, ordered=False), True
    return load_playbook(start.get("playbook") or run.config.runs.playbook, ordered=False), False


def _ran(step: Step, keys: set[tuple[Any, Any]], exact: bool) -> bool:
    """Whether the journal's ``(step, line)`` keys hold ``step``: by name and line when the
    lines are the journal's (a step a playbook repeats is told apart), else by name."""
    if exact:
        return (step.name, step.line) in keys
    return any(name == step.name for name, _ in keys)


def _undo_window(run: Run, events: list[dict[str, Any]]) -> bool:
    """Before COMMIT: undo, newest first, every step of the run's window playbook that
    started, with the actions' own undo (as the engine would have, had it lived). Returns
    whether the scripts were started again (their stop was undone)."""
    from orchestrator.runner.engine import undo

    playbook, exact = _window_playbook(run, events)
    started = {(e.get("step"), e.get("line")) for e in events
               if e.get("event") == "step.start" and e.get("stage") == "fastdowntime"}
    steps = [step for step in playbook.steps if _ran(step, started, exact)]
    # the window was open if the journal says so: its undo then journals it closing
    opened = [e for e in events if e.get("event") == "window.open"]
    if opened:
        run.window_opened = float(opened[-1].get("at") or 0.0) or None
    problems = undo(steps, run)
    if problems:
        raise FailedBeforeCommit("resumed; could not undo: " + "; ".join(problems))
    return any(step.name == "stop_scripts" for step in steps)


def _finish_window(run: Run, events: list[dict[str, Any]]) -> None:
    """After COMMIT: the playbook's steps from the first past the commit point that did not
    finish, run by the actions themselves in roll-forward mode (a failing step is a problem
    of the run, the next ones still run). Each tolerates the state a crash left: connections already
    back, servers already ready, instances already stopped, ``current`` already switched.

    When the run undid its window after a COMMIT it could not confirm (``commit-unknown``),
    the hosts serve the previous release, in rotation: the steps before the window that
    the undo reverted run again first (the scripts stop, the new instances start beside the
    old ones), and
    a restart in place goes host by host behind haproxy instead of all at once.
    """
    from orchestrator.runner.engine import run_steps

    playbook, exact = _window_playbook(run, events)
    steps = playbook.steps
    commit = next(i for i, s in enumerate(steps) if s.action.commit_point)
    opens = next((i for i, s in enumerate(steps) if s.action.opens_window), commit)
    window = [e for e in events if e.get("stage") == "fastdowntime"]
    finished = [e for e in window if e.get("event") == "step.done"]
    done = {(e.get("step"), e.get("line")) for e in finished}
    undone = {(str(e.get("step"))[len("undo "):], e.get("line")) for e in finished
              if str(e.get("step")).startswith("undo ")}
    redo = [s for s in steps[:opens] if _ran(s, undone, exact) and s.action.can_undo]
    # from the first step that did not finish on, all of them again: a later step that
    # did finish may have been undone by an earlier one run again (close_window drains
    # what stop_old_instances stopped) and each is safe to repeat
    first = next((i for i in range(commit + 1, len(steps)) if not _ran(steps[i], done, exact)),
                 len(steps))
    after = [_rolling(s) if undone else s for s in steps[first:]]
    opened = [e for e in window if e.get("event") == "window.open"]
    closed = [e for e in window if e.get("event") == "window.close"]
    if opened and not closed:
        run.window_opened = float(opened[-1].get("at") or 0.0) or None
    # interrupts are held from COMMIT until the window closed and traffic settled: what
    # the dead run already got to, resume does not wait for again
    if closed:
        run.window_closed = float(closed[-1].get("at") or 0.0) or None
    run.settled = any(name == "close_window" for name, _ in done)
    if not any(s.name == "close_window" for s in steps[first:]):
        # the hosts whose new instance close_window found unhealthy kept their old one
        # serving: stop_old_instances, run again, must leave it alone
        run.fallback = _kept_old(finished)
    run.committed = True
    run_steps(dataclasses.replace(playbook, steps=(*redo, *after)), run)
    if run.problems:
        raise FailedAfterCommit("resumed; not every step finished: " + "; ".join(run.problems))


def _kept_old(finished: list[dict[str, Any]]) -> set[str]:
    """The hosts the last finished ``close_window`` left on their old instance (their new
    one unhealthy), from its ``step.done`` event."""
    closed = [e for e in finished if e.get("step") == "close_window"]
    unhealthy = closed[-1].get("unhealthy") if closed else None
    return set(unhealthy) if isinstance(unhealthy, dict) else set()


def _rolling(step: Step) -> Step:
    """``step``, restarting hosts behind haproxy a batch at a time if it restarts them."""
    from orchestrator.runner.actions.instances import RestartOnRelease

    if not isinstance(step.action, RestartOnRelease):
        return step
    rolling = RestartOnRelease(dataclasses.replace(step.action.params, rolling=True))
    return dataclasses.replace(step, action=rolling)


def _run_start(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's ``run.start`` event (empty if the journal lost it)."""
    return next((e for e in events if e.get("event") == "run.start"), {})


def _slots(events: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """The (old, new) ports of each host, as the journal recorded them."""
    for event in reversed(events):
        slots = event.get("slots")
        if event.get("event") == "step.done" and isinstance(slots, dict):
            return {h: (int(p[0]), int(p[1])) for h, p in slots.items()}
    return {}

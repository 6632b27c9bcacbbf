"""``resume RUN``: after the orchestrator died mid-run, finish or restore from the journal.

The journal says whether COMMIT happened, which steps of the window playbook
started, and which instance slot of each host was old and new; the live
state (haproxy, pgbouncer) says what is left to do. Before the commit point:
connections back, then every step that started is undone, newest first, by
the playbook's own actions (each undo tolerates a partial ``do``): the old
instances ready again, the new ones stopped, the scripts started (exit 1:
nothing changed).
After it: connections back, the new instances ready, the old ones stopped,
``current`` on the cut, the scripts started (exit 0; the nodowntime tail is
left for the next ``deploy``). After the restart playbook's COMMIT there is no
second instance: the serving slot runs the cut (started if the crash left it
stopped), or the previous release where the cut does not come up (exit 4).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config import Config
from orchestrator.errors import (
    BadInput,
    FailedAfterCommit,
    FailedBeforeCommit,
    FastdowntimeError,
)
from orchestrator.remote import operations as ops
from orchestrator.runner.context import Run
from orchestrator.runner.outcome import Outcome

if TYPE_CHECKING:
    from orchestrator.db.cold import Backend


def resume(config: Config, ref: str, *, show: Callable[[str], None] = print) -> dict[str, Any]:
    """Finish or restore run ``ref``; return its updated summary."""
    from orchestrator.db.connect import connect
    from orchestrator.db.connections import ConnectionControl
    from orchestrator.db.lock import DeployLock, whoami
    from orchestrator.remote.haproxy import Haproxy
    from orchestrator.remote.ssh import Remote
    from orchestrator.runner.journal import Journal, read_journal
    from orchestrator.runner.runs import load_run, save_summary

    runs_dir = Path(config.runs.dir)
    summary = load_run(runs_dir, ref)
    if summary.get("outcome") not in {o for o in Outcome if o.needs_resume}:
        raise BadInput(f"run {summary['id']} ended ({summary.get('outcome')}): "
                       "nothing to resume")
    events = read_journal(runs_dir / summary["id"] / "journal.jsonl")
    settings = config.need("database")
    lock = DeployLock(settings, f"{summary['id']}-resume", whoami())
    lock.acquire()  # the dead run's lock died with its session; a live one refuses (exit 5)
    journal = Journal(runs_dir, summary["id"])
    outcome = Outcome.FAILED
    problem: FailedAfterCommit | None = None
    try:
        # COMMIT may have happened without the journal hearing of it: ask the database
        committed = (any(e.get("event") == "commit" for e in events)
                     or _committed(settings, summary["id"], _cold_patches(events),
                                   _cold_backend(events)))
        slots = _slots(events)
        serves = _window_serves(events)
        journal.event("resume.start", committed=committed, slots=slots, window_serves=serves)
        if not slots:
            show("the window was never prepared: nothing on the hosts to restore")
        with Remote(config) as remote, Haproxy(remote, config) as haproxy:
            release = summary.get("cut") or summary["from"]
            run = Run(config, None, summary["id"], journal, "fastdowntime",  # type: ignore[arg-type]
                      release, summary["from"], {}, remote=remote, haproxy=haproxy, slots=slots)
            control = ConnectionControl(settings, connect(settings, autocommit=True))
            try:
                control.prepare()
                control.restore()
                journal.event("resume.connections_restored")
                restarted = False
                if slots:
                    new = [run.server(h, slots[h.name][1]) for h in run.app_hosts]
                    old = [run.server(h, slots[h.name][0]) for h in run.app_hosts]
                    try:
                        if committed and serves == "old":
                            _finish_in_place(run)
                        elif committed:
                            _finish(run, new, old)
                        else:
                            restarted = _undo_window(run, events, control)
                    except FastdowntimeError as exc:
                        if not committed:
                            raise
                        # the schema is new: roll forward, the scripts still start
                        problem = _rolled_forward(journal, problem, exc)
                if (config.scripts is not None and config.role("scripts")
                        and (committed or not restarted)):
                    try:
                        if committed:
                            ops.switch(remote, config, run.release,
                                       config.role("scripts")).raise_for_failures(
                                "switching the scripts' current")
                        ops.start_scripts(remote, config).raise_for_failures(
                            "starting the scripts")
                    except FastdowntimeError as exc:
                        if not committed:
                            raise
                        problem = _rolled_forward(journal, problem, exc)
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
    finally:
        journal.event("resume.end", outcome=outcome)
        journal.close()
        # the resumed run is settled only when resume got to an end, not when it failed
        lock.finish(outcome, settles=None if outcome == Outcome.FAILED else summary["id"])
    if problem is not None:
        raise problem
    if not committed:
        raise FailedBeforeCommit(f"run {summary['id']} restored: every host serves "
                                 f"{summary['from'][:12]}, the schema is unchanged")
    return summary


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
    start = next((e for e in events if e.get("event") == "run.start"), {})
    return list(((start.get("plan") or {}).get("fastdowntime") or {}).get("cold_patches")
                or [])


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


def _undo_window(run: Run, events: list[dict[str, Any]], control: Any) -> bool:
    """Before COMMIT: undo, newest first, every step of the run's window playbook that
    started, with the actions' own undo (as the engine would have, had it lived). Returns
    whether the scripts were started again (their stop was undone)."""
    from orchestrator.runner.engine import undo
    from orchestrator.runner.playbook import load_playbook

    start = next((e for e in events if e.get("event") == "run.start"), {})
    playbook = load_playbook(start.get("playbook") or run.config.runs.playbook)
    started = {e.get("step") for e in events
               if e.get("event") == "step.start" and e.get("stage") == "fastdowntime"}
    steps = [step for step in playbook.steps if step.name in started]
    run.control = control
    # the window was open if the journal says so: its undo then journals it closing
    opened = [e for e in events if e.get("event") == "window.open"]
    if opened:
        run.window_opened = float(opened[-1].get("at") or 0.0) or None
    problems = undo(steps, run)
    if problems:
        raise FailedBeforeCommit("resumed; could not undo: " + "; ".join(problems))
    return any(step.name == "stop_scripts" for step in steps)


def _finish(run: Run, new: list[str], old: list[str]) -> None:
    """After COMMIT: the new instances (healthy) take traffic, old ones stop, current moves.

    A host whose new instance cannot be made healthy keeps its old one serving (old code
    works on the new schema by policy) and is reported.
    """
    app = run.config.need("app")
    keep: list[Any] = []
    for host in run.app_hosts:
        port = run.slots[host.name][1]
        health = ops.wait_healthy(run.config, host, port, run.release, 1.0)
        if not health.ok:
            ops.start_instance(run.remote, run.config, host, run.release, port)
            health = ops.wait_healthy(run.config, host, port, run.release,
                                      app.health_timeout_s)
        if not health.ok:
            keep.append(host)
    moving = [h for h in run.app_hosts if h not in keep]
    run.host_states.update({h.name: f"serving {run.release[:12]}" for h in moving})
    run.host_states.update({h.name: f"serving {run.previous[:12]} on its old instance; the "
                            "new one failed" for h in keep})
    run.haproxy.set_state([run.server(h, run.slots[h.name][1]) for h in moving], "ready")
    run.haproxy.set_state([run.server(h, run.slots[h.name][0]) for h in keep], "ready")
    run.haproxy.set_state([run.server(h, run.slots[h.name][0]) for h in moving], "maint")
    for host in moving:
        ops.stop_instance(run.remote, run.config, host, run.slots[host.name][0])
    if moving:
        ops.switch(run.remote, run.config, run.release, moving).raise_for_failures(
            "switching current")
    if keep:
        raise FailedAfterCommit("resumed; the new release is not healthy on "
                                f"{', '.join(h.name for h in keep)}: their old instances "
                                "keep serving (old code works on the new schema)")


def _finish_in_place(run: Run) -> None:
    """After the restart playbook's COMMIT: each host's one slot serves the cut.

    Hosts serving nothing (stopped by the window, half-started) restart on it all at
    once; hosts serving the previous release (back after a failure or an undo; it works
    on the new schema) restart ``[nodowntime] max_out_of_rotation`` at a time, drained
    first, so the others keep serving. A host where the cut does not come up goes back
    to the previous release (exit 4).
    """
    from orchestrator.runner.actions import instance_health

    down, behind = [], []
    for host, health in zip(run.app_hosts, instance_health(run, 0, 1.0), strict=True):
        if health.ok:
            run.host_states[host.name] = f"serving {run.release[:12]}"
        elif health.revision == run.previous and health.last_answer.startswith("HTTP 200"):
            behind.append(host)
        else:
            down.append(host)
    size = max(1, run.config.nodowntime.max_out_of_rotation)
    for group in [down, *(behind[i:i + size] for i in range(0, len(behind), size))]:
        if group:
            _restart_group(run, group)
    if run.problems:
        raise FailedAfterCommit("resumed; not every host serves "
                                f"{run.release[:12]}: {'; '.join(run.problems)}")


def _restart_group(run: Run, hosts: list[Any]) -> None:
    """Out of rotation (drained), stopped, restarted on the cut (or back on the previous
    release), and in rotation again unless neither starts."""
    from orchestrator.runner.actions import restart_in_place

    servers = [run.server(h, run.slots[h.name][0]) for h in hosts]
    run.haproxy.set_state(servers, "drain")
    run.haproxy.wait_drained(servers, run.config.need("lb").drain_timeout_s)
    run.haproxy.set_state(servers, "maint")
    for host in hosts:  # start refuses a port another release holds
        ops.stop_instance(run.remote, run.config, host, run.slots[host.name][0])
    restart_in_place(run, hosts, run.config.need("app").health_timeout_s)
    run.haproxy.set_state([run.server(h, run.slots[h.name][0]) for h in hosts
                           if not run.host_states[h.name].startswith("DOWN")], "ready")


def _window_serves(events: list[dict[str, Any]]) -> str:
    """``new`` or ``old``: the slot the run's window hands traffic to (its ``run.start``);
    runs journaled before this was recorded used the default playbook."""
    start = next((e for e in events if e.get("event") == "run.start"), {})
    return "old" if start.get("window_serves") == "old" else "new"


def _slots(events: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """The (old, new) ports of each host, as the journal recorded them."""
    for event in reversed(events):
        slots = event.get("slots")
        if event.get("event") == "step.done" and isinstance(slots, dict):
            return {h: (int(p[0]), int(p[1])) for h, p in slots.items()}
    return {}

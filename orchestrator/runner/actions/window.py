"""The window's actions, in the order the default playbook runs them: open the
connections, drain, cut the database connections, the cold patches (the commit point),
let connections back, hand traffic to the serving slot; then wait for the standbys."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2

from orchestrator.config import HostSettings
from orchestrator.db.cold import (
    ColdPatch,
    ColdPatchFailed,
    CommitLost,
    apply_cold,
    committed_by,
    render_cold,
)
from orchestrator.db.connect import connect
from orchestrator.db.connections import SERVED_S, ConnectionControl
from orchestrator.db.trial import TRANSIENT, trial_cold, warm_cold
from orchestrator.errors import (
    CommitUnknown,
    FailedBeforeCommit,
    FastdowntimeError,
)
from orchestrator.history.git import blob_sha
from orchestrator.plan import Plan
from orchestrator.remote import operations as ops
from orchestrator.runner.actions.base import Action, action
from orchestrator.runner.actions.instances import _by_port, targets, unhealthy, why_unhealthy
from orchestrator.runner.actions.script import (
    Answers,
    Drained,
    Effect,
    Finally,
    Health,
    If,
    Note,
    Pick,
    ReadSlots,
    Script,
    SetState,
    Sql,
    Ssh,
    When,
)
from orchestrator.runner.context import Run


def _open_connections(run: Run, answers: Answers) -> None:
    settings = run.config.need("database")
    if run.primary is None:
        run.primary = connect(settings, what="primary")
    warm_cold(run.primary, cold_patches(run.plan, run.texts), settings.revision_table)
    if not run.control:
        run.control = ConnectionControl(settings, connect(settings, what="primary",
                                                          autocommit=True))
        run.control.prepare()
    run.haproxy.open()


@action
class PrepareWindow(Action):
    """Open every connection the window needs, so the window pays no connection cost; a
    rehearsal then runs its trials of the cold transaction (rolled back)."""

    name = "prepare_window"

    def reads(self, run: Run) -> Script:
        opening = Sql(lambda run: ("-- open the primary, pgbouncer's admin console and "
                                   "haproxy's admin channel; run the cold transaction's reads "
                                   "once and roll back (the window finds them cached)",),
                      _open_connections)
        return (opening, *(() if run.slots else (ReadSlots(),)))

    def script(self, run: Run) -> Script:
        trials = run.config.window.rehearsal_trials if run.rehearse else 0
        if not trials:
            return ()
        return (Sql(lambda run: (f"-- rehearsal: run the whole cold transaction {trials} "
                                 "time(s) and roll back, users' queries waiting behind its "
                                 "locks; VACUUM the tables it wrote rows to",),
                    _rehearsal_trials, key="trials"),)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        if "trials" in answers:
            return {"slots": run.slots, "trials_s": answers["trials"]}
        return {"slots": run.slots}


TRIAL_RETRY_PAUSE_S = 0.5
"""After a trial users' locks got in the way of, the pause before the next (times the
attempt's number): time for their transaction to end."""

pause: Callable[[float], None] = time.sleep
"""How :func:`_rehearsal_trials` waits between attempts (tests replace it)."""


def _rehearsal_trials(run: Run, answers: Answers) -> list[float]:
    """A rehearsal's trials, before its window: the cold transaction run and rolled back
    until ``[window] rehearsal_trials`` of them ran, each kept for the median the rehearsal
    records; each trial's seconds.

    A trial that failed because of users' queries (a lock they held, a deadlock) is
    journaled and tried again after a pause, with at most twice as many attempts as
    trials. One that fails otherwise, or loses the connection, fails the rehearsal here,
    before anything is held. Inside an open window (a playbook's order) none runs.
    """
    settings = run.config.need("database")
    budget = run.config.window.budget_s
    wanted = run.config.window.rehearsal_trials
    if run.window_opened is not None:  # a playbook that prepares inside its window
        run.journal.event("rehearsal.trials_short", ran=0, of=wanted,
                          why="prepare_window runs inside the window: no trial holds it up")
        return []
    patches = cold_patches(run.plan, run.texts)
    seconds: list[float] = []
    for attempt in range(1, 2 * wanted + 1):
        if len(seconds) == wanted:
            break
        assert run.primary is not None
        try:
            trial = trial_cold(run.primary, patches, deadline=run.clock() + budget,
                               permissions=run.texts.get(PERMISSIONS),
                               revision_table=settings.revision_table, clock=run.clock)
        except ColdPatchFailed as exc:
            if exc.sqlstate in TRANSIENT and not run.primary.closed:
                run.journal.event("rehearsal.trial", attempt=attempt, of=wanted,
                                  skipped=TRANSIENT[exc.sqlstate], file=exc.filename,
                                  line=exc.line, sqlstate=exc.sqlstate, error=str(exc))
                if attempt < 2 * wanted:
                    pause(TRIAL_RETRY_PAUSE_S * attempt)  # let the users' transaction end
                continue
            lost = " (the connection to the primary was lost)" if run.primary.closed else ""
            why = (f"took longer than [window] budget_s = {budget:g} s; the window's would "
                   "be cut off at its deadline too" if exc.deadline else str(exc))
            raise FailedBeforeCommit(f"rehearsal trial {len(seconds) + 1} of {wanted} "
                                     f"failed before the window{lost}: {why}; nothing is "
                                     "held") from exc
        except psycopg2.Error as exc:  # the VACUUM after a trial lost the connection
            raise FailedBeforeCommit(f"rehearsal trial {len(seconds) + 1} of {wanted}: the "
                                     "connection to the primary was lost vacuuming after it "
                                     f"({' '.join(str(exc).split())}); nothing is "
                                     "held") from exc
        timings = [dataclasses.asdict(t) for t in trial.result.timings]
        run.rehearsal_trials.append(timings)
        seconds.append(round(trial.result.total_s, 6))
        run.journal.event("rehearsal.trial", attempt=attempt, of=wanted, trial=len(seconds),
                          total_s=seconds[-1], patches=timings,
                          vacuumed=list(trial.vacuumed.tables),
                          not_vacuumed=list(trial.vacuumed.left))
    if len(seconds) < wanted:
        run.journal.event("rehearsal.trials_short", ran=len(seconds), of=wanted)
    return seconds


@dataclass(frozen=True)
class DrainParams:
    drain_timeout_s: float | None = None
    stop_after_drain: bool = False
    """The restart playbook in drain mode: stop the old instances inside the window."""


def _servers(run: Run, index: int) -> list[str]:
    return [run.server(h, run.slots[h.name][index]) for h in run.app_hosts]


def _window_open(run: Run, answers: Answers) -> None:
    budget = run.config.window.budget_s
    run.window_opened, run.window_opened_at = run.wall(), run.clock()
    run.window_deadline = run.clock() + budget
    run.journal.event("window.open", at=run.window_opened, budget_s=budget)


def holds(run: Run) -> bool:
    """True in ``[window] mode = "hold"``: users' requests wait at pgbouncer in the window,
    haproxy keeps routing them."""
    return run.config.window.mode == "hold"


def _window_restored(run: Run, answers: Answers) -> None:
    run.window_closed, run.window_closed_at = run.wall(), run.clock()
    run.journal.event("window.close", at=run.window_closed, outage_s=run.outage_s,
                      restored=True)


@action
class OpenWindow(Action):
    """The window opens: in hold mode haproxy keeps routing (requests will wait at
    pgbouncer); in drain mode the serving instances drain in haproxy, in-flight requests
    finish."""

    name = "open_window"
    Params = DrainParams
    opens_window = True

    def reads(self, run: Run) -> Script:
        # drain mode drains the serving slot: a playbook may open the window before any step
        # read the slots
        return () if run.slots else (ReadSlots(),)

    def script(self, run: Run) -> Script:
        if holds(run):
            return (Effect(_window_open),
                    Note("hold: haproxy keeps routing to the serving instances; from the "
                         "next step their queries wait at pgbouncer"))
        timeout = (self.params.drain_timeout_s if self.params.drain_timeout_s is not None
                   else run.config.need("lb").drain_timeout_s)
        old = _servers(run, 0)
        stop: Script = ()
        if self.params.stop_after_drain:
            stop = tuple(Ssh(ops.stop_commands(run.config, hosts, port),
                             fails="stopping the app inside the window")
                         for port, hosts in _by_port(run, 0).items())
        # the window opens at the attempt: a drain whose answer is lost may have been applied,
        # and the undo must then put the servers back
        return (Effect(_window_open), SetState(tuple(Pick(s) for s in old), "drain"),
                Drained(tuple(old), timeout, "waited"), *stop)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        if holds(run):
            return {"mode": "hold"}
        return {"drained": _servers(run, 0), "waited_s": round(answers["waited"], 6)}

    def undo_script(self, run: Run) -> Script:
        restored = If(When("the window opened", lambda run, answers: run.window_opened is not None),
                      (Effect(_window_restored),))
        if holds(run) or not run.slots:  # not read: nothing was drained
            return (restored,)
        back: Script = ()
        if self.params.stop_after_drain:
            back = (*(Ssh(ops.start_commands(run.config, hosts, run.previous, port),
                          fails="restarting the previous release")
                      for port, hosts in _by_port(run, 0).items()),
                    Effect(lambda run, answers: run.expected.update(
                        {h.name: run.previous for h in run.app_hosts})),
                    Health(tuple((h, run.slots[h.name][0], run.previous)
                                 for h in run.app_hosts),
                           run.config.need("app").health_timeout_s, "back"),
                    If(unhealthy("back", "the previous release is unhealthy on a host"),
                       (why_unhealthy("back", "the previous release did not come back"),)))
        # ready whatever the drain's answer was: setting a ready server ready is harmless
        return (Finally(back, (SetState(tuple(Pick(s) for s in _servers(run, 0)), "ready"),
                               restored)),)


@action
class CutConnections(Action):
    """Cut every application database connection (pgbouncer DISABLE + KILL, or terminate)."""

    name = "cut_connections"
    needs = (("prepare_window", "it opens the connections the cut uses"),
             ("open_window", "the window must be open (and timed) before users are held"))

    def script(self, run: Run) -> Script:
        return (Sql(_control_lines("cut"), _cut, key="cut"),)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return dataclasses.asdict(answers["cut"])

    def undo_script(self, run: Run) -> Script:
        return (Sql(_control_lines("restore"), lambda run, answers: run.control.restore()),)


def _cut(run: Run, answers: Answers) -> Any:
    deadline = run.clock() + run.config.need("database").terminate_deadline_s
    if run.window_deadline is not None:
        deadline = min(deadline, run.window_deadline)
    return run.control.cut(deadline)


def _control_lines(part: str) -> Callable[[Run], list[str]]:
    """The ``cut`` or ``restore`` lines of the connection control's own rendering."""
    def shown(run: Run) -> list[str]:
        if not run.control:
            return [f"db: {part} every non-system connection (no connection control prepared)"]
        return [f"db: {line}" for line in run.control.render() if line.startswith(part)]
    return shown


PERMISSIONS = "<permissions>"
"""The key of the permissions file's text among a run's texts (``deploy.read_texts``)."""


def cold_patches(plan: Plan, texts: Mapping[str, str]) -> list[Any]:
    """The :class:`~orchestrator.db.cold.ColdPatch` of each of ``plan``'s cold patches, from
    the ``texts`` the planner read: what the window applies."""
    return [ColdPatch(plan.reports[name], texts[name], blob_sha(texts[name].encode()))
            for name in plan.cold_patches]


@dataclass(frozen=True)
class ColdParams:
    reserve_s: float = 1.0
    """Of the window budget, kept for what follows COMMIT (connections back, traffic in)."""


@action
class ApplyColdPatches(Action):
    """The cold patches and the permissions step in one transaction: COMMIT is the commit point."""

    name = "apply_cold_patches"
    needs = (("open_window", "its deadline is the window's budget"),
             ("cut_connections", "a cold patch runs with no application connection left, "
                                 "or its locks queue behind users' transactions"))
    Params = ColdParams
    commit_point = True

    def patches(self, run: Run) -> list[Any]:
        return cold_patches(run.plan, run.texts)

    def permissions(self, run: Run) -> str | None:
        return run.texts.get(PERMISSIONS)

    def script(self, run: Run) -> Script:
        patches = self.patches(run)

        def shown(run: Run) -> list[str]:
            return [f"db: {line}" for line in render_cold(
                patches, self.permissions(run), run.config.need("database").revision_table)]
        return (Sql(shown, lambda run, answers: self._apply(run, patches), key="cold"),
                Note("if the connection breaks during COMMIT: ask the primary, on a new "
                     "connection, whether this run's patches are recorded; if it cannot "
                     "say, the hosts are restored and the run exits 4 (resume settles it)"))

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return dict(answers["cold"])

    def _apply(self, run: Run, patches: list[Any]) -> dict[str, Any]:
        settings = run.config.need("database")
        deadline = (run.window_deadline if run.window_deadline is not None
                    else run.clock() + run.config.window.budget_s) - self.params.reserve_s
        try:
            result = apply_cold(run.primary, patches, deadline=deadline,
                                permissions=self.permissions(run),
                                revision_table=settings.revision_table, run_id=run.run_id,
                                clock=run.clock,
                                on_begin=lambda backend: run.journal.event(
                                    "cold.backend", backend=backend.to_json()),
                                on_commit=lambda result: _committed(run, result))
        except CommitLost as lost:
            if not self._settle(run, lost):
                raise FailedBeforeCommit(f"{lost}: the database shows it did not; rolled "
                                         "back, nothing changed") from None
            result = lost.result
            _committed(run, result)
        return {"total_s": round(result.total_s, 6), "patches": run.cold_timings}

    def _settle(self, run: Run, lost: Any) -> bool:
        """Ask the primary, on a new connection, whether the lost COMMIT happened; raise
        :class:`CommitUnknown` (the engine restores the hosts, exit 4) if it cannot say."""
        try:
            conn = connect(run.config.need("database"), what="primary", autocommit=True)
            try:
                committed = committed_by(conn, run.run_id, run.plan.cold_patches,
                                         backend=lost.backend)
            finally:
                conn.close()
        except (FastdowntimeError, psycopg2.Error, KeyboardInterrupt) as exc:
            why = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            run.journal.event("commit.unknown", error=str(lost), why=why,
                              backend=lost.backend.to_json())
            raise CommitUnknown(f"{lost}, and the database has not said: {why}") from None
        run.journal.event("commit.settled", error=str(lost), committed=committed,
                          backend=lost.backend.to_json())
        return committed


def _committed(run: Run, result: Any) -> None:
    """The run knows it passed the commit point (called as COMMIT returns, signals held)."""
    run.committed = True
    run.cold_timings = [dataclasses.asdict(t) for t in result.timings]
    run.journal.event("commit", total_s=round(result.total_s, 6), patches=run.cold_timings)


@action
class RestoreConnections(Action):
    """Let database connections in again (RESUME + ENABLE); in hold mode the window closes
    here: the held queries run, on the new schema once COMMIT happened."""

    name = "restore_connections"
    needs = (("cut_connections", "it lets back in the connections the cut held"),)
    ends = ("cut_connections",)

    def script(self, run: Run) -> Script:
        restore = Sql(_control_lines("restore"), lambda run, answers: run.control.restore())
        if holds(run):
            # the window has closed; the next steps wait until pgbouncer has served the
            # queries it held, so that they do not take the machine from them
            served = Sql(_served_lines, lambda run, answers: run.control.served(SERVED_S))
            return (restore, Effect(_window_closed), served)
        return (restore,)


def _served_lines(run: Run) -> list[str]:
    if not run.control:
        return []
    return [f"db: {line}" for line in run.control.render_served()]


CLOSE_HEALTH_S = 2.0
"""How long close_window waits for an instance going ready to pass its health check."""


@dataclass(frozen=True)
class CloseParams:
    servers: str = "new"
    """Which slot goes ready: ``new`` (default playbook) or ``old`` (restart playbook)."""


@action
class CloseWindow(Action):
    """The window closes: the new instances go ready in haproxy, the old ones drain."""

    name = "close_window"
    needs = (("open_window", "it closes the window open_window opened"),)
    ends = ("open_window", "cut_connections")
    Params = CloseParams

    def script(self, run: Run) -> Script:
        new = self.params.servers == "new"
        index = 1 if new else 0

        def failed(host: HostSettings) -> When:
            return When(f"{host.name}'s instance on port {run.slots[host.name][index]} is "
                        "unhealthy", lambda run, answers: not answers["health"][host.name].ok)
        # haproxy routes to a server the instant it leaves maintenance, before its own
        # health check: ask each instance first (this also reopens its database pool). A
        # host whose new instance is unhealthy keeps its old one: old code works on the new
        # schema by policy.
        ready = tuple(Pick(run.server(h, run.slots[h.name][index]),
                           run.server(h, run.slots[h.name][0]) if new else None, failed(h))
                      for h in run.app_hosts)
        retire = tuple(Pick(run.server(h, run.slots[h.name][0]), None, failed(h))
                       for h in run.app_hosts)
        # the old instances drain (a drained window left them none to finish; an undone
        # one's are serving): stop_old_instances waits for them before they stop
        # in hold mode the window has closed (users are served by the old instances): the new
        # ones get the app's whole health timeout, right after RESUME's burst of logins
        wait = run.config.need("app").health_timeout_s if holds(run) else CLOSE_HEALTH_S
        return (Health(targets(run, index), wait, "health"),
                SetState(ready, "ready", key="ready"), Effect(_window_closed),
                *((SetState(retire, "drain"),) if new else ()),
                Effect(lambda run, answers: _host_states(run, answers, new)),
                Effect(lambda run, answers: setattr(run, "settled", True)))

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"ready": answers["ready"], "outage_s": run.outage_s,
                "unhealthy": {h: r.describe() for h, r in answers["health"].items()
                              if not r.ok}}


def _window_closed(run: Run, answers: Answers) -> None:
    if run.window_opened is None or run.window_closed is not None:
        return  # hold mode: it closed as the held queries ran
    run.window_closed, run.window_closed_at = run.wall(), run.clock()
    run.journal.event("window.close", at=run.window_closed, outage_s=run.outage_s,
                      budget_s=run.config.window.budget_s)


def _host_states(run: Run, answers: Answers, new: bool) -> None:
    """What each app host serves once the window closed, and the problems to report."""
    for host in run.app_hosts:
        health = answers["health"][host.name]
        serving = run.expected.get(host.name, run.release)
        if health.ok:
            run.host_states[host.name] = f"serving {serving[:12]}"
        elif new:
            run.fallback.add(host.name)
            run.host_states[host.name] = (f"serving {run.previous[:12]} on its old "
                                          f"instance; the new one failed")
            run.problems.append(f"{host.name}: new instance unhealthy ({health.describe()})"
                                f"; its old instance keeps serving")
        else:
            run.host_states[host.name] = f"out of service: {health.describe()}"
            run.problems.append(f"{host.name}: not put in service: {health.describe()}")


def window_serves(steps: Sequence[Any]) -> str:
    """Which slot a playbook's window hands traffic to: ``new`` (the default playbook) or
    ``old`` (the restart playbook: the serving slot restarts on the release)."""
    for step in steps:
        if isinstance(step.action, CloseWindow):
            return step.action.params.servers
    return "new"



@dataclass(frozen=True)
class StandbyParams:
    timeout_s: float | None = None


@action
class WaitStandbys(Action):
    """After COMMIT: wait until every standby has replayed the primary's position."""

    name = "wait_standbys"
    Params = StandbyParams

    def script(self, run: Run) -> Script:
        return (Sql(lambda run: ("db: wait until every standby replayed "
                                 "pg_current_wal_lsn()",),
                    self._wait, key="waited"),)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"waited_s": round(answers["waited"], 6)}

    def _wait(self, run: Run, answers: Answers) -> float:
        from orchestrator.db.replication import wait_replayed

        settings = run.config.need("database")
        timeout = self.params.timeout_s or settings.replay_timeout_s
        if not run.control and run.primary is None:  # a playbook waiting before the window
            run.primary = connect(settings, what="primary")
        primary = run.control.primary if run.control else run.primary
        assert primary is not None
        return float(wait_replayed(settings, primary, timeout_s=timeout))

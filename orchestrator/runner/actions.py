"""Built-in playbook actions: each a small object with ``do``, ``undo`` and ``render``.

An action reads and updates the shared :class:`~orchestrator.runner.context.Run`.
``do`` returns data for the journal; ``undo`` puts back what ``do`` changed,
when it can (steps are undone in reverse before the commit point);
``render`` gives the exact commands and SQL for ``--dry-run``. Actions know
nothing of stages: the playbooks order them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg2

from orchestrator.errors import (
    CommitUnknown,
    FailedAfterCommit,
    FailedBeforeCommit,
    FastdowntimeError,
)
from orchestrator.history.git import blob_sha
from orchestrator.remote import haproxy as hap
from orchestrator.remote import operations as ops
from orchestrator.runner.context import Run

ACTIONS: dict[str, type[Action]] = {}


@dataclass(frozen=True)
class NoParams:
    """An action without parameters."""


class Action:
    """A step's behaviour; subclasses set ``name``, ``Params`` and override the hooks."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    commit_point: ClassVar[bool] = False
    """True for the step whose success is the commit point."""

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def do(self, run: Run) -> dict[str, Any]:
        raise NotImplementedError

    def undo(self, run: Run) -> None:
        """Put back what ``do`` changed; the default has nothing to put back."""

    def render(self, run: Run) -> list[str]:
        return []


def action(cls: type[Action]) -> type[Action]:
    """Register an action class under its ``name``."""
    ACTIONS[cls.name] = cls
    return cls


def _lines(rendered: dict[str, tuple[str, ...]], run: Run) -> list[str]:
    """``host: command`` lines, in host order (each runs under ``timeout`` on the host)."""
    return [f"{host}: {command}" for host, commands in rendered.items() for command in commands]


def _failed(result: Any, what: str) -> None:
    result.raise_for_failures(what)


# --- code --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolesParams:
    roles: tuple[str, ...] = ("app", "scripts")


def _role_hosts(run: Run, roles: tuple[str, ...]) -> list[Any]:
    """The hosts of ``roles``, role by role in config order."""
    return [h for role in roles for h in run.config.role(role)]


def _has_scripts(run: Run) -> bool:
    """True when the config has scripts to stop and start, and hosts to run them."""
    return run.config.scripts is not None and bool(run.config.role("scripts"))


@action
class StageCode(Action):
    """Ship the stage's release to every host of ``roles`` (``releases/<sha>``)."""

    name = "stage_code"
    Params = RolesParams

    def hosts(self, run: Run) -> list[Any]:
        return _role_hosts(run, self.params.roles)

    def do(self, run: Run) -> dict[str, Any]:
        result = ops.stage(run.remote, run.config, run.config.source.repo, run.release,
                           self.hosts(run))
        _failed(result, f"staging {run.release[:12]}")
        return {"release": run.release, "hosts": [r.host for r in result.results]}

    def render(self, run: Run) -> list[str]:
        return _lines(ops.render_stage(run.config, run.config.source.repo, run.release,
                                       self.hosts(run)), run)


@action
class SwitchCurrent(Action):
    """Point ``current`` at the stage's release on every host of ``roles`` (atomic)."""

    name = "switch_current"
    Params = RolesParams

    def hosts(self, run: Run) -> list[Any]:
        return _role_hosts(run, self.params.roles)

    def do(self, run: Run) -> dict[str, Any]:
        _failed(ops.switch(run.remote, run.config, run.release, self.hosts(run)),
                f"switching current to {run.release[:12]}")
        return {"release": run.release}

    def undo(self, run: Run) -> None:
        _failed(ops.switch(run.remote, run.config, run.previous, self.hosts(run)),
                f"switching current back to {run.previous[:12]}")

    def render(self, run: Run) -> list[str]:
        return _lines(ops.render_switch(run.config, run.release, self.hosts(run)), run)


# --- scripts -------------------------------------------------------------------------------


@action
class StopScripts(Action):
    """Stop the fragile scripts gracefully (before the window, never inside it)."""

    name = "stop_scripts"

    def do(self, run: Run) -> dict[str, Any]:
        if not _has_scripts(run):
            return {"skipped": "no scripts configured"}
        _failed(ops.stop_scripts(run.remote, run.config), "stopping the scripts")
        return {}

    def undo(self, run: Run) -> None:
        if _has_scripts(run):
            _failed(ops.start_scripts(run.remote, run.config), "restarting the scripts")

    def render(self, run: Run) -> list[str]:
        if not _has_scripts(run):
            return []
        return _lines(ops.render_stop_scripts(run.config), run)


@action
class StartScripts(Action):
    """Start the scripts on ``current`` (after the window, or after a nodowntime switch)."""

    name = "start_scripts"

    def do(self, run: Run) -> dict[str, Any]:
        if not _has_scripts(run):
            return {"skipped": "no scripts configured"}
        _failed(ops.start_scripts(run.remote, run.config), "starting the scripts")
        return {}

    def render(self, run: Run) -> list[str]:
        if not _has_scripts(run):
            return []
        return _lines(ops.render_start_scripts(run.config), run)


@action
class CheckFragile(Action):
    """Refuse to go on while a fragile user is still connected (the scripts should be off)."""

    name = "check_fragile"

    def do(self, run: Run) -> dict[str, Any]:
        from orchestrator.db.connect import connect

        settings = run.config.need("database")
        conn = connect(settings, readonly=True, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pid, usename FROM pg_stat_activity WHERE usename = ANY(%s)",
                            (list(settings.fragile_users),))
                rows = cur.fetchall()
        finally:
            conn.close()
        if rows:
            listed = ", ".join(f"{user} (pid {pid})" for pid, user in rows)
            raise FailedBeforeCommit(f"fragile connections remain after stopping the "
                                     f"scripts: {listed}")
        return {}

    def render(self, run: Run) -> list[str]:
        return ["primary: SELECT pid, usename FROM pg_stat_activity WHERE usename = ANY(...)"]


# --- instances -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthParams:
    health_timeout_s: float | None = None


def read_slots(run: Run) -> dict[str, tuple[int, int]]:
    """Each app host's (serving port, idle port) from haproxy's admin states."""
    ports = run.config.need("app").ports
    stats = run.haproxy.stats()
    slots = {}
    for host in run.app_hosts:
        ready = [p for p in ports if stats[run.server(host, p)].admin_state == "ready"]
        if len(ready) != 1:
            raise FailedBeforeCommit(f"{host.name}: expected exactly one instance slot ready "
                                     f"in haproxy, found {ready or 'none'}")
        old = ready[0]
        slots[host.name] = (old, next(p for p in ports if p != old))
    return slots


def _by_port(run: Run, index: int, hosts: Sequence[Any] | None = None
             ) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = {}
    for host in run.app_hosts if hosts is None else hosts:
        groups.setdefault(run.slots[host.name][index], []).append(host)
    return groups


@action
class StartNewInstances(Action):
    """Start the release beside the serving instance on every app host; all must be healthy."""

    name = "start_new_instances"
    Params = HealthParams

    def do(self, run: Run) -> dict[str, Any]:
        run.slots = read_slots(run)
        app = run.config.need("app")
        timeout = self.params.health_timeout_s or app.health_timeout_s
        for port, hosts in _by_port(run, 1).items():
            _failed(ops.start_instances(run.remote, run.config, hosts, run.release, port),
                    f"starting {run.release[:12]} on port {port}")
        unhealthy = _check_instances(run, 1, timeout)
        if unhealthy:
            raise FailedBeforeCommit("new instances failed their health check: "
                                     + "; ".join(unhealthy.values()))
        return {"slots": run.slots}

    def undo(self, run: Run) -> None:
        if not run.slots:  # the slots were never read: nothing was started
            return
        for port, hosts in _by_port(run, 1).items():
            _failed(ops.stop_instances(run.remote, run.config, hosts, port),
                    "stopping the new instances")

    def render(self, run: Run) -> list[str]:
        app = run.config.need("app")
        lines = []
        for host in run.app_hosts:
            lines += _lines(ops.render_start_instances(run.config, [host], run.release,
                                                       run.port(host, 1)), run)
        return lines + [f"then poll {app.health_url} of each until it reports {run.release}"]


@action
class StopOldInstances(Action):
    """Stop the instances that served before (after traffic moved to the new ones)."""

    name = "stop_old_instances"

    def do(self, run: Run) -> dict[str, Any]:
        for port, hosts in _by_port(run, 0).items():
            hosts = [h for h in hosts if h.name not in run.fallback]
            if hosts:
                _failed(ops.stop_instances(run.remote, run.config, hosts, port),
                        f"stopping the old instances on port {port}")
        return {"kept": sorted(run.fallback)}

    def render(self, run: Run) -> list[str]:
        return [line for host in run.app_hosts for line in _lines(
            ops.render_stop_instances(run.config, [host], run.port(host, 0)), run)]


# --- the window ----------------------------------------------------------------------------


@action
class PrepareWindow(Action):
    """Open every connection the window needs, so the window pays no connection cost."""

    name = "prepare_window"

    def do(self, run: Run) -> dict[str, Any]:
        from orchestrator.db.connect import connect
        from orchestrator.db.connections import ConnectionControl

        settings = run.config.need("database")
        if run.primary is None:
            run.primary = connect(settings, what="primary")
        if run.control is None:
            run.control = ConnectionControl(settings, connect(settings, what="primary",
                                                              autocommit=True))
            run.control.prepare()
        run.haproxy.open()
        if not run.slots:
            run.slots = read_slots(run)
        return {"slots": run.slots}

    def render(self, run: Run) -> list[str]:
        return ["open the primary, pgbouncer's admin console and haproxy's admin channel"]


@dataclass(frozen=True)
class DrainParams:
    drain_timeout_s: float | None = None
    stop_after_drain: bool = False
    """The restart playbook: stop the old instances inside the window."""


def _servers(run: Run, index: int) -> list[str]:
    return [run.server(h, run.slots[h.name][index]) for h in run.app_hosts]


@action
class OpenWindow(Action):
    """The window opens: drain the serving instances in haproxy, wait for in-flight requests."""

    name = "open_window"
    Params = DrainParams

    def do(self, run: Run) -> dict[str, Any]:
        budget = run.config.window.budget_s
        old = _servers(run, 0)
        run.haproxy.set_state(old, "drain")
        run.window_opened = run.wall()
        run.window_deadline = run.clock() + budget
        run.journal.event("window.open", at=run.window_opened, budget_s=budget)
        timeout = (self.params.drain_timeout_s if self.params.drain_timeout_s is not None
                   else run.config.need("lb").drain_timeout_s)
        waited = run.haproxy.wait_drained(old, timeout)
        if self.params.stop_after_drain:
            for port, hosts in _by_port(run, 0).items():
                _failed(ops.stop_instances(run.remote, run.config, hosts, port),
                        "stopping the app inside the window")
        return {"drained": old, "waited_s": round(waited, 6)}

    def undo(self, run: Run) -> None:
        try:
            if self.params.stop_after_drain:
                for port, hosts in _by_port(run, 0).items():
                    _failed(ops.start_instances(run.remote, run.config, hosts, run.previous,
                                                port), "restarting the previous release")
                run.expected.update({h.name: run.previous for h in run.app_hosts})
                unhealthy = _check_instances(run, 0, run.config.need("app").health_timeout_s)
                if unhealthy:
                    raise FailedBeforeCommit("the previous release did not come back: "
                                             + "; ".join(unhealthy.values()))
        finally:
            if run.window_opened is not None:
                run.haproxy.set_state(_servers(run, 0), "ready")
                run.window_closed = run.wall()
                run.journal.event("window.close", at=run.window_closed, outage_s=run.outage_s,
                                  restored=True)

    def render(self, run: Run) -> list[str]:
        lb = run.config.need("lb")
        servers = [run.server(h, run.port(h, 0)) for h in run.app_hosts]
        lines = [f"lb: {line}" for line in hap.render_set_state(lb.backend, servers, "drain")]
        lines.append("lb: show stat -- until the drained servers have no session or queue")
        if self.params.stop_after_drain:
            for host in run.app_hosts:
                lines += _lines(ops.render_stop_instances(run.config, [host], run.port(host, 0)),
                                run)
        return lines


@action
class CutConnections(Action):
    """Cut every application database connection (pgbouncer DISABLE + KILL, or terminate)."""

    name = "cut_connections"

    def do(self, run: Run) -> dict[str, Any]:
        settings = run.config.need("database")
        deadline = run.clock() + settings.terminate_deadline_s
        if run.window_deadline is not None:
            deadline = min(deadline, run.window_deadline)
        result = run.control.cut(deadline)
        return dataclasses.asdict(result)

    def undo(self, run: Run) -> None:
        run.control.restore()

    def render(self, run: Run) -> list[str]:
        if run.control is None:
            return ["db: cut every non-system connection (no connection control prepared)"]
        return [f"db: {line}" for line in run.control.render()]


@dataclass(frozen=True)
class ColdParams:
    reserve_s: float = 1.0
    """Of the window budget, kept for what follows COMMIT (connections back, traffic in)."""


@action
class ApplyColdPatches(Action):
    """The cold patches and the permissions step in one transaction: COMMIT is the commit point."""

    name = "apply_cold_patches"
    Params = ColdParams
    commit_point = True

    def patches(self, run: Run) -> list[Any]:
        from orchestrator.db.cold import ColdPatch

        return [ColdPatch(run.plan.reports[name], run.texts[name],
                          blob_sha(run.texts[name].encode()))
                for name in run.plan.cold_patches]

    def permissions(self, run: Run) -> str | None:
        return run.texts.get("<permissions>")

    def do(self, run: Run) -> dict[str, Any]:
        from orchestrator.db.cold import CommitLost, apply_cold

        settings = run.config.need("database")
        deadline = (run.window_deadline if run.window_deadline is not None
                    else run.clock() + run.config.window.budget_s) - self.params.reserve_s
        try:
            result = apply_cold(run.primary, self.patches(run), deadline=deadline,
                                permissions=self.permissions(run),
                                revision_table=settings.revision_table, run_id=run.run_id,
                                clock=run.clock)
        except CommitLost as lost:
            if not self._settle(run, lost):
                raise FailedBeforeCommit(f"{lost}: the database shows it did not; rolled "
                                         "back, nothing changed") from None
            result = lost.result
        run.committed = True
        run.cold_timings = [dataclasses.asdict(t) for t in result.timings]
        run.journal.event("commit", total_s=round(result.total_s, 6), patches=run.cold_timings)
        return {"total_s": round(result.total_s, 6), "patches": run.cold_timings}

    def _settle(self, run: Run, lost: Any) -> bool:
        """Ask the primary, on a new connection, whether the lost COMMIT happened; raise
        :class:`CommitUnknown` (the engine restores the hosts, exit 4) if it cannot say."""
        from orchestrator.db.cold import committed_by
        from orchestrator.db.connect import connect

        try:
            conn = connect(run.config.need("database"), what="primary", autocommit=True)
            try:
                committed = committed_by(conn, run.run_id, run.plan.cold_patches,
                                         backend_pid=lost.backend_pid)
            finally:
                conn.close()
        except (FastdowntimeError, psycopg2.Error) as exc:
            run.journal.event("commit.unknown", error=str(lost), why=str(exc))
            raise CommitUnknown(f"{lost}, and the database cannot say: {exc}") from None
        run.journal.event("commit.settled", error=str(lost), committed=committed)
        return committed

    def render(self, run: Run) -> list[str]:
        from orchestrator.db.cold import render_cold

        settings = run.config.need("database")
        return [f"db: {line}" for line in render_cold(self.patches(run), self.permissions(run),
                                                       settings.revision_table)]


@action
class RestoreConnections(Action):
    """Let database connections in again (RESUME + ENABLE)."""

    name = "restore_connections"

    def do(self, run: Run) -> dict[str, Any]:
        run.control.restore()
        return {}

    def render(self, run: Run) -> list[str]:
        return ["db: RESUME / ENABLE on pgbouncer's admin console"]


@dataclass(frozen=True)
class CloseParams:
    servers: str = "new"
    """Which slot goes ready: ``new`` (default playbook) or ``old`` (restart playbook)."""


@action
class CloseWindow(Action):
    """The window closes: the new instances go ready in haproxy, the old ones to maintenance."""

    name = "close_window"
    Params = CloseParams

    def do(self, run: Run) -> dict[str, Any]:
        index = 1 if self.params.servers == "new" else 0
        # haproxy routes to a server the instant it leaves maintenance, before its own
        # health check: ask each instance first (this also reopens its database pool).
        unhealthy = _check_instances(run, index)
        ready = [run.server(h, run.slots[h.name][index]) for h in run.app_hosts
                 if h.name not in unhealthy]
        if index == 1:
            # a host whose new instance is unhealthy keeps its old one: old code works on
            # the new schema by policy
            ready += [run.server(h, run.slots[h.name][0]) for h in run.app_hosts
                      if h.name in unhealthy]
        if ready:
            run.haproxy.set_state(ready, "ready")
        run.window_closed = run.wall()
        run.journal.event("window.close", at=run.window_closed, outage_s=run.outage_s,
                          budget_s=run.config.window.budget_s)
        if index == 1:
            run.haproxy.set_state([run.server(h, run.slots[h.name][0]) for h in run.app_hosts
                                   if h.name not in unhealthy], "maint")
        for host in run.app_hosts:
            serving = run.expected.get(host.name, run.release)
            if host.name not in unhealthy:
                run.host_states[host.name] = f"serving {serving[:12]}"
            elif index == 1:
                run.fallback.add(host.name)
                run.host_states[host.name] = (f"serving {run.previous[:12]} on its old "
                                              f"instance; the new one failed")
                run.problems.append(f"{host.name}: new instance unhealthy ({unhealthy[host.name]})"
                                    f"; its old instance keeps serving")
            else:
                run.host_states[host.name] = f"out of service: {unhealthy[host.name]}"
                run.problems.append(f"{host.name}: not put in service: {unhealthy[host.name]}")
        return {"ready": ready, "outage_s": run.outage_s, "unhealthy": unhealthy}

    def render(self, run: Run) -> list[str]:
        lb = run.config.need("lb")
        index = 1 if self.params.servers == "new" else 0
        lines = [f"each app host: GET {run.config.need('app').health_url} of the instance "
                 "going ready, until it reports its release"]
        ready = [run.server(h, run.port(h, index)) for h in run.app_hosts]
        lines += [f"lb: {line}" for line in hap.render_set_state(lb.backend, ready, "ready")]
        if index == 1:
            old = [run.server(h, run.port(h, 0)) for h in run.app_hosts]
            lines += [f"lb: {line}" for line in hap.render_set_state(lb.backend, old, "maint")]
        return lines


def window_serves(steps: Sequence[Any]) -> str:
    """Which slot a playbook's window hands traffic to: ``new`` (the default playbook) or
    ``old`` (the restart playbook: the serving slot restarts on the release)."""
    for step in steps:
        if isinstance(step.action, CloseWindow):
            return step.action.params.servers
    return "new"


def _check_instances(run: Run, index: int, timeout_s: float = 2.0,
                     hosts: Sequence[Any] | None = None) -> dict[str, str]:
    """Health-check the ``index`` slot of every app host (or of ``hosts``) at once;
    host -> why, if unhealthy.

    An instance must answer with the stage's release within ``timeout_s``.
    """
    hosts = run.app_hosts if hosts is None else hosts

    def one(host: Any) -> Any:
        return ops.wait_healthy(run.config, host, run.slots[host.name][index],
                                run.expected.get(host.name, run.release), timeout_s)
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        results = list(pool.map(one, hosts))
    return {h.name: r.describe() for h, r in zip(hosts, results, strict=True) if not r.ok}


@dataclass(frozen=True)
class StandbyParams:
    timeout_s: float | None = None


@action
class WaitStandbys(Action):
    """After COMMIT: wait until every standby has replayed the primary's position."""

    name = "wait_standbys"
    Params = StandbyParams

    def do(self, run: Run) -> dict[str, Any]:
        from orchestrator.db.replication import wait_replayed

        settings = run.config.need("database")
        timeout = self.params.timeout_s or settings.replay_timeout_s
        waited = wait_replayed(settings, run.control.primary if run.control else run.primary,
                               timeout_s=timeout)
        return {"waited_s": round(waited, 6)}

    def render(self, run: Run) -> list[str]:
        return ["db: wait until every standby replayed pg_current_wal_lsn()"]


@action
class RestartOnRelease(Action):
    """Restart playbook, after COMMIT: ``current`` -> the release, start it where the old
    instance ran, healthy before traffic returns. A host whose new code fails goes back to
    its previous release (old code works on the new schema by policy)."""

    name = "restart_on_release"
    Params = HealthParams

    def do(self, run: Run) -> dict[str, Any]:
        timeout = self.params.health_timeout_s or run.config.need("app").health_timeout_s
        restart_in_place(run, run.app_hosts, timeout)
        return {"hosts": dict(run.host_states)}

    def render(self, run: Run) -> list[str]:
        lines = _lines(ops.render_switch(run.config, run.release, run.app_hosts), run)
        for host in run.app_hosts:
            lines += _lines(ops.render_start_instances(run.config, [host], run.release,
                                                       run.port(host, 0)), run)
        return lines + ["then poll each health URL until it reports the release"]


def restart_in_place(run: Run, hosts: Sequence[Any], timeout_s: float) -> None:
    """``current`` -> the release on ``hosts``, started on their serving slot and healthy
    within ``timeout_s``; a host where it fails goes back to the previous release (old code
    works on the new schema by policy). Records each host's state, and a problem per
    host that went back (or is down)."""
    switched = ops.switch(run.remote, run.config, run.release, hosts)
    began = run.clock()
    failed: dict[str, str] = {r.host: r.describe() for r in switched.failed}
    for port, group in _by_port(run, 0, hosts).items():
        group = [h for h in group if h.name not in failed]
        started = ops.start_instances(run.remote, run.config, group, run.release, port)
        failed.update({r.host: r.describe() for r in started.failed})
    failed.update({h: why for h, why in _check_instances(run, 0, timeout_s, hosts).items()
                   if h not in failed})
    for host in hosts:
        if host.name not in failed:
            run.host_states[host.name] = f"serving {run.release[:12]}"
            run.journal.event("restart.healthy", host=host.name,
                              start_to_healthy_s=round(run.clock() - began, 6))
            continue
        port = run.slots[host.name][0]
        ops.stop_instance(run.remote, run.config, host, port)
        ops.switch(run.remote, run.config, run.previous, [host])
        back = ops.start_instance(run.remote, run.config, host, run.previous, port)
        healthy = back.ok and ops.wait_healthy(run.config, host, port, run.previous,
                                               timeout_s).ok
        run.expected[host.name] = run.previous
        state = (f"back on {run.previous[:12]} and serving" if healthy else
                 f"DOWN: neither {run.release[:12]} nor {run.previous[:12]} starts")
        run.host_states[host.name] = state
        run.problems.append(f"{host.name}: {run.release[:12]} failed "
                            f"({failed[host.name]}); {state}")


# --- patches online -----------------------------------------------------------------------


@action
class ApplyLivePatches(Action):
    """This stage's live patches, online, one statement at a time, before its code."""

    name = "apply_live_patches"

    def names(self, run: Run) -> tuple[str, ...]:
        return (run.plan.fastdowntime_live_patches if run.stage == "fastdowntime"
                else run.plan.nodowntime_live_patches)

    def do(self, run: Run) -> dict[str, Any]:
        from orchestrator.db.connect import connect
        from orchestrator.db.live import apply_live

        settings = run.config.need("database")
        done: list[dict[str, Any]] = []
        if not self.names(run):
            return {"patches": done}
        conn = connect(settings, what="primary", autocommit=True)
        try:
            for name in self.names(run):
                result = apply_live(conn, run.plan.reports[name], run.texts[name],
                                    revision_table=settings.revision_table,
                                    lock_timeout_s=settings.lock_timeout_s,
                                    retries=settings.live_retries,
                                    backoff_s=settings.live_backoff_s, run_id=run.run_id)
                done.append({"file": name, "skipped": result.skipped,
                             "duration_s": round(result.duration_s, 6)})
        finally:
            conn.close()
        return {"patches": done}

    def render(self, run: Run) -> list[str]:
        lines = []
        for name in self.names(run):
            lines += [f"db ({name}, autocommit, lock_timeout): {s.sql};"
                      for s in run.plan.reports[name].statements]
        return lines


# --- nodowntime -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RollingParams:
    batch_size: int | None = None
    health_timeout_s: float | None = None


@action
class RollingUpdate(Action):
    """Host by host (or batch by batch): new beside old, healthy, swap in haproxy, old drains
    and stops, ``current`` switches. A failing host keeps its previous release; the
    rollout stops there."""

    name = "rolling_update"
    Params = RollingParams

    def do(self, run: Run) -> dict[str, Any]:
        settings = run.config.nodowntime
        size = min(self.params.batch_size or settings.batch_size, settings.max_out_of_rotation)
        app = run.config.need("app")
        timeout = self.params.health_timeout_s or app.health_timeout_s
        run.haproxy.open()
        run.slots = read_slots(run)
        hosts = list(run.app_hosts)
        done: list[str] = []
        # A drained old instance no longer serves: stopping it and switching `current`
        # overlap the next batch's start instead of delaying it.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="retire") as retire:
            pending: list[Future[None]] = []
            try:
                for start in range(0, len(hosts), size):
                    batch = hosts[start:start + size]
                    pending.append(self._batch(run, batch, timeout, retire))
                    done += [h.name for h in batch]
                    run.journal.event("rolling.batch", hosts=[h.name for h in batch])
            finally:
                for future in pending:
                    future.result()
        return {"hosts": done, "batch_size": size}

    def _batch(self, run: Run, batch: list[Any], timeout: float,
               retire: ThreadPoolExecutor) -> Future[None]:
        news = {h.name: run.slots[h.name][1] for h in batch}
        started = []
        began = run.clock()
        try:
            for host in batch:
                result = ops.start_instance(run.remote, run.config, host, run.release,
                                            news[host.name])
                if not result.ok:
                    raise FailedBeforeCommit(f"starting {run.release[:12]} on "
                                             f"{result.describe()}")
                started.append(host)
            for host in batch:
                health = ops.wait_healthy(run.config, host, news[host.name], run.release,
                                          timeout)
                if not health.ok:
                    raise FailedBeforeCommit(f"health check failed: {health.describe()}")
                run.journal.event("rolling.healthy", host=host.name,
                                  start_to_healthy_s=round(run.clock() - began, 6))
        except FailedBeforeCommit:
            for host in started:
                ops.stop_instance(run.remote, run.config, host, news[host.name])
            for host in batch:
                run.host_states[host.name] = f"kept {run.previous[:12]}"
            raise
        pairs = [(run.server(h, run.slots[h.name][0]), run.server(h, news[h.name]))
                 for h in batch]
        run.haproxy.swap(pairs)
        for host in batch:  # from here on these hosts serve the new release
            run.host_states[host.name] = f"serving {run.release[:12]}"
        old = [o for o, _ in pairs]
        names = ", ".join(h.name for h in batch)
        try:
            run.haproxy.wait_drained(old, run.config.need("lb").drain_timeout_s)
            run.haproxy.set_state(old, "maint")
        except FastdowntimeError as exc:
            raise FailedAfterCommit(f"after the swap of {names} to {run.release[:12]}: "
                                    f"{exc}") from exc
        ports = {h.name: run.slots[h.name][0] for h in batch}
        for host in batch:
            run.slots[host.name] = (news[host.name], ports[host.name])

        def finish() -> None:
            for host in batch:
                stopped = ops.stop_instance(run.remote, run.config, host, ports[host.name])
                if not stopped.ok:
                    run.problems.append(f"stopping the old instance: {stopped.describe()}")
            switched = ops.switch(run.remote, run.config, run.release, batch)
            if not switched.ok:
                raise FailedAfterCommit(f"after the swap of {names} to {run.release[:12]}: "
                                        + "; ".join(r.describe() for r in switched.failed))
        return retire.submit(finish)

    def render(self, run: Run) -> list[str]:
        lines = []
        for host in run.app_hosts:
            old, new = run.port(host, 0), run.port(host, 1)
            lines += _lines(ops.render_start_instances(run.config, [host], run.release, new),
                            run)
            lines.append(f"{host.name}: poll the health URL until it reports "
                         f"{run.release[:12]}")
            lines += [f"lb: {line}" for line in hap.render_swap(
                run.config.need("lb").backend,
                [(run.server(host, old), run.server(host, new))])]
            lines += _lines(ops.render_stop_instances(run.config, [host], old), run)
            lines += _lines(ops.render_switch(run.config, run.release, [host]), run)
        return lines

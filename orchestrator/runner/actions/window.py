"""The window's actions, in the order the default playbook runs them: open the
connections, drain, cut the database connections, the cold patches (the commit point),
let connections back, hand traffic to the serving slot; then wait for the standbys."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2

from orchestrator.errors import (
    CommitUnknown,
    FailedBeforeCommit,
    FastdowntimeError,
)
from orchestrator.history.git import blob_sha
from orchestrator.remote import haproxy_wire as hap
from orchestrator.remote import operations as ops
from orchestrator.runner.actions.base import Action, _failed, _lines, action
from orchestrator.runner.actions.instances import _by_port, _check_instances, read_slots
from orchestrator.runner.context import Run


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
                                clock=run.clock,
                                on_begin=lambda backend: run.journal.event(
                                    "cold.backend", backend=backend.to_json()))
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

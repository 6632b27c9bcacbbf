"""Cutting and restoring connections, against small fakes of the primary and pgbouncer."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import psycopg2
import pytest
from structlog.testing import capture_logs

from orchestrator.config import DatabaseSettings
from orchestrator.db import connections
from orchestrator.db.connections import (
    LOGIN_SETTLE_S,
    POLL_S,
    ConnectionControl,
    ConnectionControlFailed,
    ConnectionsNotCut,
    ConnectionsNotRestored,
)
from orchestrator.errors import ExitCode, Refused
from tests.fakes import FakeClock

Rows = list[tuple[Any, ...]]


class FakeCursor:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn
        self.rows: Rows = []
        self.description: list[tuple[str]] | None = None
        self.statusmessage: str | None = None

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: Any = None) -> None:
        self.conn.executed.append(sql)
        columns, self.rows, self.statusmessage = self.conn.handler(sql, params)
        self.description = [(c,) for c in columns] if columns else None

    def fetchall(self) -> Rows:
        return self.rows


class FakeConn:
    """A psycopg2 connection whose answers come from ``handler(sql, params)``."""

    def __init__(self, handler: Callable[[str, Any], tuple[list[str], Rows, str]],
                 autocommit: bool = True) -> None:
        self.handler = handler
        self.autocommit = autocommit
        self.closed = 0
        self.executed: list[str] = []
        self.rollbacks = 0
        self.info = SimpleNamespace(dbname="app", transaction_status=0)

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def rollback(self) -> None:
        self.rollbacks += 1

    def close(self) -> None:
        self.closed = 1


def backend(pid: int, user: str = "app", name: str = "app-app1") -> tuple[Any, ...]:
    """A pg_stat_activity row as the terminate query returns it (signalled)."""
    return (pid, user, name, "127.0.0.1", "idle", True)


def primary_listing(polls: list[Rows], forever: Rows | None = None) -> FakeConn:
    """A primary whose n-th terminate poll returns ``polls[n]`` (then ``forever`` or none)."""
    seen = {"n": 0}

    def handler(sql: str, params: Any) -> tuple[list[str], Rows, str]:
        if sql.startswith("PREPARE"):
            return [], [], "PREPARE"
        n = seen["n"]
        seen["n"] += 1
        rows = polls[n] if n < len(polls) else (forever or [])
        return ["pid", "usename", "application_name", "client_addr", "state", "signalled"], \
            rows, "SELECT"

    return FakeConn(handler)


class FakeBouncer:
    """pgbouncer's admin console: DISABLE/KILL/RESUME/ENABLE and SHOW, as 1.18 answers them."""

    def __init__(self, logins: list[int] | None = None, fail: str | None = None) -> None:
        self.paused = False
        self.disabled = False
        self.logins = list(logins or [])
        self.waiting: list[int] = []
        """Clients waiting for a server, one figure per SHOW POOLS (the last one stays)."""
        self.fail = fail
        self.commands: list[str] = []
        self.conn = FakeConn(self.handle)

    def handle(self, sql: str, params: Any) -> tuple[list[str], Rows, str]:
        self.commands.append(sql)
        if sql == self.fail:
            raise psycopg2.OperationalError(f"{sql} refused")
        if sql == "SHOW DATABASES":
            return (["name", "database", "paused", "disabled"],
                    [("app", "app", int(self.paused), int(self.disabled)),
                     ("pgbouncer", "pgbouncer", 0, 0)], "SHOW")
        if sql == "SHOW POOLS":
            login = self.logins.pop(0) if self.logins else 0
            waiting = (self.waiting.pop(0) if len(self.waiting) > 1 else
                       self.waiting[0] if self.waiting else 0)
            return (["database", "user", "sv_login", "cl_waiting"],
                    [("app", "app", login, waiting), ("other", "app", 0, 7)], "SHOW")
        verb = sql.split()[0]
        if verb == "RESUME" and not self.paused:
            raise psycopg2.OperationalError("database app is not paused")
        self.paused = {"KILL": True, "PAUSE": True, "RESUME": False}.get(verb, self.paused)
        self.disabled = {"DISABLE": True, "ENABLE": False}.get(verb, self.disabled)
        return [], [], verb


def settings(pgbouncer: bool = False) -> DatabaseSettings:
    return DatabaseSettings(
        dsn="host=db port=5432 dbname=app user=fdt_admin",
        pgbouncer_admin_dsn="host=db port=6432 dbname=pgbouncer user=admin" if pgbouncer else None,
        system_users=("postgres", "fdt_admin"), cut_method="kill")


def control(primary: FakeConn, clock: FakeClock, pgbouncer: bool = False) -> ConnectionControl:
    return ConnectionControl(settings(pgbouncer), primary, clock=clock,
                             sleep=clock.sleep)


@pytest.fixture
def bouncer(monkeypatch: pytest.MonkeyPatch) -> FakeBouncer:
    fake = FakeBouncer()
    monkeypatch.setattr(connections, "admin_console", lambda _settings: fake.conn)
    return fake


def test_connection_that_never_goes_away_fails_the_cut_at_its_deadline() -> None:
    """A backend still listed at the deadline raises ConnectionsNotCut naming it, in fake time."""
    clock = FakeClock()
    primary = primary_listing([], forever=[backend(4242, name="cron-job")])
    wall = time.monotonic()
    with pytest.raises(ConnectionsNotCut) as caught:
        control(primary, clock).cut(clock() + 5.0)
    assert time.monotonic() - wall < 1.0
    assert clock.now >= 1005.0 and clock.now - 1005.0 < POLL_S
    error = caught.value
    assert error.exit_code == ExitCode.FAILED_BEFORE_COMMIT
    assert [c["pid"] for c in error.remaining] == [4242]
    assert "pid 4242 user app application_name 'cron-job'" in str(error)
    assert error.waited_s == pytest.approx(5.0, abs=POLL_S)


def test_cut_polls_until_no_application_connection_remains() -> None:
    """The terminate method returns after the first poll that finds nothing, counting the polls."""
    clock = FakeClock()
    polls = [[backend(1), backend(2)], [backend(2)], [backend(2)]]
    result = control(primary_listing(polls), clock).cut(clock() + 5.0)
    assert (result.method, result.terminated, result.remaining_checks) == ("terminate", 2, 4)
    assert result.duration_s == pytest.approx(3 * POLL_S)


def test_deadline_already_past_polls_once_and_never_waits() -> None:
    """With the deadline gone, one poll decides: nothing left is success, anything left fails."""
    clock = FakeClock()
    assert control(primary_listing([]), clock).cut(clock() - 1).remaining_checks == 1
    with pytest.raises(ConnectionsNotCut):
        control(primary_listing([[backend(7)]]), clock).cut(clock() - 1)
    assert clock.sleeps == []


def test_superuser_backend_not_signalled_stays_listed() -> None:
    """A backend the terminate query could not signal is not counted as terminated."""
    clock = FakeClock()
    stuck = (9, "root", "psql", None, "idle", False)
    with pytest.raises(ConnectionsNotCut) as caught:
        control(primary_listing([], forever=[stuck]), clock).cut(clock() + 0.01)
    assert caught.value.remaining[0]["usename"] == "root"


def test_pgbouncer_cut_disables_then_kills_and_restore_resumes_then_enables(
        bouncer: FakeBouncer) -> None:
    """DISABLE, SHOW POOLS, KILL; restore RESUMEs then ENABLEs; a second restore does nothing."""
    clock = FakeClock()
    ctl = control(primary_listing([[backend(3)]]), clock, pgbouncer=True)
    ctl.prepare()
    with capture_logs() as logs:
        result = ctl.cut(clock() + 5)
    assert bouncer.commands == ["SHOW DATABASES", "DISABLE app", "SHOW POOLS", "KILL app"]
    assert (result.method, result.terminated, result.remaining_checks) == ("pgbouncer", 1, 2)
    assert logs[0]["event"] == "connections.cut" and logs[0]["method"] == "pgbouncer"
    assert bouncer.paused and bouncer.disabled
    bouncer.commands.clear()
    ctl.restore()
    assert bouncer.commands == ["SHOW DATABASES", "RESUME app", "ENABLE app", "SHOW DATABASES"]
    assert not bouncer.paused and not bouncer.disabled
    bouncer.commands.clear()
    ctl.restore()
    assert bouncer.commands == ["SHOW DATABASES", "SHOW DATABASES"]


def test_kill_waits_for_server_logins_in_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """KILL is sent only once SHOW POOLS reports no server login in progress."""
    fake = FakeBouncer(logins=[1, 1, 0])
    monkeypatch.setattr(connections, "admin_console", lambda _settings: fake.conn)
    clock = FakeClock()
    control(primary_listing([]), clock, pgbouncer=True).cut(clock() + 5)
    assert fake.commands[1:] == ["DISABLE app", "SHOW POOLS", "SHOW POOLS", "SHOW POOLS",
                                 "KILL app"]


def test_kill_goes_ahead_when_logins_do_not_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A login still in progress after LOGIN_SETTLE_S does not stop the cut; it is logged."""
    fake = FakeBouncer(logins=[1] * 10_000)
    monkeypatch.setattr(connections, "admin_console", lambda _settings: fake.conn)
    clock = FakeClock()
    with capture_logs() as logs:
        control(primary_listing([]), clock, pgbouncer=True).cut(clock() + 5)
    assert fake.commands[-1] == "KILL app"
    assert clock.now - 1000.0 == pytest.approx(LOGIN_SETTLE_S, abs=POLL_S)
    assert [e["event"] for e in logs][0] == "connections.kill_during_login"


def test_refused_command_fails_the_cut_and_restore_still_reopens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """KILL refused: ConnectionControlFailed names it; restore then ENABLEs what DISABLE closed."""
    fake = FakeBouncer(fail="KILL app")
    monkeypatch.setattr(connections, "admin_console", lambda _settings: fake.conn)
    clock = FakeClock()
    ctl = control(primary_listing([]), clock, pgbouncer=True)
    with pytest.raises(ConnectionControlFailed, match="KILL app") as caught:
        ctl.cut(clock() + 5)
    assert caught.value.exit_code == ExitCode.FAILED_BEFORE_COMMIT
    fake.commands.clear()
    ctl.restore()
    assert fake.commands == ["SHOW DATABASES", "ENABLE app", "SHOW DATABASES"]
    assert not fake.disabled


def test_restore_reconnects_once_when_the_console_was_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A console connection that broke is reopened, and the restore completes on the new one."""
    dead, alive = FakeBouncer(), FakeBouncer()
    alive.paused = alive.disabled = True

    def broken(sql: str, params: Any) -> tuple[list[str], Rows, str]:
        dead.conn.closed = 2
        raise psycopg2.OperationalError("server closed the connection unexpectedly")

    dead.conn.handler = broken
    consoles = [dead.conn, alive.conn]
    monkeypatch.setattr(connections, "admin_console", lambda _settings: consoles.pop(0))
    clock = FakeClock()
    ctl = control(primary_listing([]), clock, pgbouncer=True)
    ctl.restore()
    assert not alive.paused and not alive.disabled
    assert consoles == []


def test_restore_reports_a_database_that_stays_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command pgbouncer refuses during restore raises ConnectionsNotRestored naming it."""
    fake = FakeBouncer(fail="ENABLE app")
    fake.disabled = True
    monkeypatch.setattr(connections, "admin_console", lambda _settings: fake.conn)
    clock = FakeClock()
    with pytest.raises(ConnectionsNotRestored, match="ENABLE app"):
        control(primary_listing([]), clock, pgbouncer=True).restore()


def test_prepare_refuses_when_pgbouncer_serves_no_database_of_ours(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pgbouncer without an entry for the primary's dbname is refused before the window."""
    fake = FakeBouncer()
    monkeypatch.setattr(connections, "admin_console", lambda _settings: fake.conn)
    primary = primary_listing([])
    primary.info.dbname = "other"
    with pytest.raises(Refused, match="serves no database for 'other'"):
        control(primary, FakeClock(), pgbouncer=True).prepare()


def test_render_lists_the_commands_cut_and_restore_run(bouncer: FakeBouncer) -> None:
    """--dry-run sees DISABLE, KILL, the terminate query with the system users, RESUME, ENABLE."""
    ctl = control(primary_listing([]), FakeClock(), pgbouncer=True)
    ctl.prepare()
    lines = ctl.render()
    assert [line.split(" --")[0] for line in lines if "pgbouncer:" in line] == [
        "cut pgbouncer: DISABLE app", "cut pgbouncer: SHOW POOLS", "cut pgbouncer: KILL app",
        "restore pgbouncer: SHOW DATABASES", "restore pgbouncer: RESUME app",
        "restore pgbouncer: ENABLE app"]
    terminate = next(line for line in lines if line.startswith("cut primary:"))
    assert "pg_terminate_backend" in terminate
    assert "ARRAY['postgres','fdt_admin']" in terminate
    plain = control(primary_listing([]), FakeClock()).render()
    assert plain[0].startswith("cut primary:") and plain[-1].startswith("restore: nothing")


def test_prepare_makes_the_window_execute_a_prepared_terminate_query(
        bouncer: FakeBouncer) -> None:
    """After prepare() the cut's polls EXECUTE the statement PREPAREd beforehand."""
    clock = FakeClock()
    primary = primary_listing([])
    ctl = control(primary, clock, pgbouncer=True)
    ctl.prepare()
    ctl.prepare()
    ctl.cut(clock() + 1)
    prepared = [sql for sql in primary.executed if sql.startswith("PREPARE")]
    assert len(prepared) == 1 and "pg_terminate_backend" in prepared[0]
    assert primary.executed[-1].startswith("EXECUTE fastdowntime_cut_")


def test_terminate_method_restore_touches_nothing() -> None:
    """Without pgbouncer, restore has nothing to undo and runs no command."""
    primary = primary_listing([])
    control(primary, FakeClock()).restore()
    assert primary.executed == []


def test_primary_outside_autocommit_polls_in_transactions_of_its_own() -> None:
    """Each poll of a non-autocommit primary is rolled back, so the next sees a fresh snapshot."""
    clock = FakeClock()
    primary = primary_listing([[backend(1)], [backend(1)]])
    primary.autocommit = False
    control(primary, clock).cut(clock() + 5)
    assert primary.rollbacks == 3


@pytest.mark.parametrize("method", ["kill", "pause"])
def test_render_is_what_cut_and_restore_send(bouncer: FakeBouncer, method: str) -> None:
    """The dry run's lines and the commands a cut then a restore send to pgbouncer's console
    are the same, in the same order (each poll once), for either cut method: the rendering
    cannot drift from what runs."""
    primary = primary_listing([])
    ctl = ConnectionControl(dataclasses.replace(settings(True), cut_method=method), primary,
                            clock=(clock := FakeClock()), sleep=clock.sleep)
    ctl.prepare()
    bouncer.commands.clear()
    primary.executed.clear()
    ctl.cut(clock() + 5)
    ctl.restore()
    shown = [(line.split(" --")[0].split(": ", 1), " -- if " in line)
             for line in ctl.render() if line.split(":")[0].endswith("pgbouncer")]
    sent = list(dict.fromkeys(bouncer.commands))
    # in the order shown; a command shown "-- if ..." may be left out, no other
    rest = iter(sent)
    for (_target, sql), conditional in dict.fromkeys((tuple(t), c) for t, c in shown):
        if sql in sent:
            assert next(rest) == sql
        else:
            assert conditional, f"{sql} is shown but was not sent"
    assert next(rest, None) is None, "a command was sent that the dry run does not show"


# --- after RESUME: the held clients served ----------------------------------------------


def test_served_polls_until_no_held_client_waits(bouncer: FakeBouncer) -> None:
    """Only our databases' waiting clients count (``other`` always has some)."""
    clock = FakeClock()
    ctl = control(primary_listing([]), clock, pgbouncer=True)
    ctl.prepare()
    bouncer.commands.clear()
    bouncer.waiting = [5, 2, 0]
    assert ctl.served(1.0) == 0
    assert bouncer.commands == ["SHOW POOLS"] * 3
    assert clock.now - 1000.0 == pytest.approx(2 * POLL_S)


def test_served_goes_on_after_its_bound(bouncer: FakeBouncer) -> None:
    clock = FakeClock()
    ctl = control(primary_listing([]), clock, pgbouncer=True)
    ctl.prepare()
    bouncer.waiting = [3]
    with capture_logs() as logs:
        assert ctl.served(0.5) == 3
    assert 0.5 <= clock.now - 1000.0 < 0.5 + POLL_S
    assert logs[-1]["event"] == "connections.served" and logs[-1]["waiting"] == 3


def test_served_never_fails_the_run(bouncer: FakeBouncer) -> None:
    """The window has closed by then: a console that errs is logged, not raised."""
    ctl = control(primary_listing([]), FakeClock(), pgbouncer=True)
    ctl.prepare()
    bouncer.fail = "SHOW POOLS"
    with capture_logs() as logs:
        assert ctl.served(1.0) == 0
    assert [log["event"] for log in logs] == ["connections.served_unknown"]
    assert "SHOW POOLS refused" in logs[0]["error"]


def test_served_without_pgbouncer_asks_nothing() -> None:
    ctl = control(primary_listing([]), FakeClock())
    assert ctl.served(1.0) == 0 and ctl.render_served() == []


def test_render_served_says_what_served_sends(bouncer: FakeBouncer) -> None:
    ctl = control(primary_listing([]), FakeClock(), pgbouncer=True)
    ctl.prepare()
    bouncer.commands.clear()
    ctl.served(1.0)
    [line] = ctl.render_served()
    assert line.startswith("served pgbouncer: " + bouncer.commands[0] + " -- ")

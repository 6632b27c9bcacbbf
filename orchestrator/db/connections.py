"""Cutting and restoring the application's database connections for the window (SPEC section 4).

Two methods, chosen by ``[database] pgbouncer_admin_dsn``:

- **pgbouncer**: ``DISABLE <db>`` (new clients are refused), then ``KILL <db>``
  (every client and server connection of the database dropped at once; the
  database stays paused until ``RESUME``). Before ``KILL`` the cut waits,
  briefly, until no server login of the database is in progress: pgbouncer
  counts a login it drops as a failed one and would then refuse every client
  for ``server_login_retry`` after the window.
- **terminate**: no pgbouncer, so the backends themselves go.

Either way the cut then terminates, on the primary, every client backend of
the primary's database whose user is not a system user (and not our own):
with pgbouncer these are direct connections and server backends still busy
with a query pgbouncer no longer listens to. It polls ``pg_stat_activity``
every few milliseconds until none remains or the deadline passes, which
raises :class:`ConnectionsNotCut` naming what is left; the caller restores.
A superuser backend can only be ended by a superuser: unless it belongs to a
system user it stays, and the cut fails naming it.

:meth:`ConnectionControl.restore` brings pgbouncer back to serving
(``RESUME`` what is paused, then ``ENABLE`` what is disabled, as ``SHOW
DATABASES`` says). It is idempotent, safe after a failed or partial cut,
and needs nothing from the cut (so ``resume RUN`` can use a fresh object).
The terminate method has nothing to restore: clients reconnect by themselves.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
import structlog

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import Connection, DatabaseUnreachable, admin_console, fresh_rows
from orchestrator.errors import FailedBeforeCommit, FastdowntimeError, Refused

POLL_S = 0.002
"""Pause between two polls of pg_stat_activity or pgbouncer's pools."""
PAUSE_ANSWER_S = 0.2
"""After the fallback KILL, how long the pending PAUSE may take to answer before its
console connection is cut (KILL leaves the database paused, answered or not)."""
LOGIN_SETTLE_S = 0.25
"""At most this long (and never past the deadline) waiting for server logins before KILL."""
SERVED_S = 1.0
"""After RESUME, at most this long waiting for pgbouncer to serve the clients it held."""

_COLUMNS = ("pid", "usename", "application_name", "client_addr", "state")
_APP_BACKENDS = """
  FROM pg_stat_activity a
  LEFT JOIN pg_roles r ON r.oid = a.usesysid
 WHERE a.backend_type = 'client backend'
   AND a.datname = current_database()
   AND a.pid <> pg_backend_pid()
   AND coalesce(a.usename, '') <> ALL (%(system)s)
 ORDER BY a.pid
"""
_LIST = ("SELECT a.pid, a.usename, a.application_name, host(a.client_addr), a.state"
         + _APP_BACKENDS)
_TERMINATE = (
    "SELECT a.pid, a.usename, a.application_name, host(a.client_addr), a.state,"
    " CASE WHEN NOT coalesce(r.rolsuper, false)"
    " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
    " THEN pg_terminate_backend(a.pid) ELSE false END" + _APP_BACKENDS)
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_T = TypeVar("_T")
_STATEMENTS = itertools.count(1)
"""Numbers the prepared terminate statements: unique in the process, so on any connection."""


@dataclass(frozen=True)
class CutResult:
    """What a successful cut did.

    ``terminated`` counts the backends signalled with pg_terminate_backend
    (with pgbouncer: direct connections and server backends still busy after
    KILL). ``remaining_checks`` is the number of pg_stat_activity polls made,
    the last one being the first to find no application connection.
    """

    method: str
    terminated: int
    remaining_checks: int
    duration_s: float


class ConnectionsNotCut(FailedBeforeCommit):
    """Application connections remained past the cut's deadline; the caller restores.

    ``remaining`` holds one dict per connection (pid, usename,
    application_name, client_addr, state) as the last poll saw them.
    """

    def __init__(self, method: str, remaining: Sequence[dict[str, Any]], waited_s: float) -> None:
        self.method = method
        self.remaining = list(remaining)
        self.waited_s = waited_s
        shown = ", ".join(f"pid {c['pid']} user {c['usename']} "
                          f"application_name {c['application_name']!r}" for c in self.remaining)
        super().__init__(f"{len(self.remaining)} application connection(s) still open "
                         f"{waited_s:.3f} s into the cut ({method}), past its deadline: {shown}")


class ConnectionControlFailed(FailedBeforeCommit):
    """pgbouncer or the primary refused a command of the cut; the caller restores."""

    def __init__(self, target: str, command: str, reason: str) -> None:
        self.target = target
        self.command = command
        self.reason = reason
        super().__init__(f"cutting connections: {target} refused {command!r}: {reason}")


class ConnectionsNotRestored(FastdowntimeError):
    """pgbouncer could not be brought back to serving; the caller decides what it means.

    Raised before or after the commit point alike, so it is not a
    FailedBeforeCommit: ``command`` is what failed, ``reason`` why.
    """

    def __init__(self, command: str, reason: str) -> None:
        self.command = command
        self.reason = reason
        super().__init__(f"restoring connections: pgbouncer {command!r} failed: {reason}; "
                         f"run RESUME and ENABLE on pgbouncer's admin console by hand")


class ConnectionControl:
    """Cuts and restores the application's connections to the primary's database.

    Built from the settings and a connection to the primary (the orchestrator's
    own, preferably in autocommit; if it is not, each poll runs in its own
    short transaction, or on a fresh statistics snapshot inside the caller's).
    :meth:`prepare` opens pgbouncer's admin console before the window, so the
    window pays no connection cost. ``clock`` and ``sleep`` are injectable.
    """

    def __init__(self, settings: DatabaseSettings, primary: Connection, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, log: Any = None) -> None:
        self.settings = settings
        self.primary = primary
        self.clock = clock
        self.sleep = sleep
        self.log = log or structlog.get_logger("connections")
        self.method = "pgbouncer" if settings.pgbouncer_admin_dsn else "terminate"
        self._console: Connection | None = None
        self._databases: tuple[str, ...] | None = None
        self._statement: str | None = None
        """The terminate query as a prepared statement's EXECUTE, once prepared."""

    # -- before the window -------------------------------------------------------------

    def prepare(self) -> None:
        """Get everything the window needs ready: console, pgbouncer databases, the query.

        Opens the admin console (if configured) and finds pgbouncer's
        databases for ours; PREPAREs the terminate query on the primary (its
        planning costs more than its execution). Raises :class:`Refused` when
        pgbouncer serves no database that is the primary's, and
        DatabaseUnreachable when the console cannot be reached.
        """
        if self.method == "pgbouncer":
            self._databases = self._resolve(self._console_connection())
        if self._statement is None:
            name = f"fastdowntime_cut_{next(_STATEMENTS)}"
            fresh_rows(self.primary, f"PREPARE {name}(text[]) AS "
                        + _TERMINATE.replace("%(system)s", "$1"), None)
            self._statement = f"EXECUTE {name}(%(system)s)"

    def render(self) -> list[str]:
        """The exact commands :meth:`cut` then :meth:`restore` run, one line each (dry runs).

        Without :meth:`prepare` the pgbouncer databases are assumed to be named
        as the primary's database.
        """
        databases = self._databases or (self._dbname(),)
        terminate = " ".join(_TERMINATE.split()).replace(
            "%(system)s", psycopg2.extensions.adapt(list(self.settings.system_users))
            .getquoted().decode())
        lines = []
        if self.method == "pgbouncer":
            pause = self.settings.cut_method == "pause"
            if not pause:
                lines += [f"cut pgbouncer: DISABLE {_name(db)}" for db in databases]
            lines += [f"cut pgbouncer: SHOW POOLS -- every {POLL_S * 1000:g} ms, at most "
                      f"{LOGIN_SETTLE_S:g} s, until no server login is in progress"]
            if pause:
                lines += [f"cut pgbouncer: PAUSE {_name(db)} -- waits for running "
                          "transactions; KILL if the window's deadline comes first"
                          for db in databases]
            else:
                lines += [f"cut pgbouncer: KILL {_name(db)}" for db in databases]
        lines.append(f"cut primary: {terminate} -- every {POLL_S * 1000:g} ms until it returns "
                     f"no row or the cut's deadline passes (terminate_deadline_s = "
                     f"{self.settings.terminate_deadline_s:g} s)")
        if self.method == "pgbouncer":
            lines.append("restore pgbouncer: SHOW DATABASES")
            lines += [f"restore pgbouncer: RESUME {_name(db)} -- if paused" for db in databases]
            lines += [f"restore pgbouncer: ENABLE {_name(db)} -- if disabled"
                      for db in databases]
        else:
            lines.append("restore: nothing (clients reconnect by themselves)")
        return lines

    def app_connections(self) -> list[dict[str, Any]]:
        """Every client backend of the primary's database that is not a system user's, nor ours.

        Each is a dict: pid, usename, application_name, client_addr, state.
        """
        rows = fresh_rows(self.primary, _LIST, {"system": list(self.settings.system_users)})
        return [dict(zip(_COLUMNS, row, strict=True)) for row in rows]

    # -- in the window -----------------------------------------------------------------

    def cut(self, deadline: float) -> CutResult:
        """Cut every application connection; ``deadline`` is an absolute ``clock()`` value.

        Returns once no application connection remains. Raises
        :class:`ConnectionsNotCut` past the deadline and
        :class:`ConnectionControlFailed` when a command is refused; after
        either the caller calls :meth:`restore`.
        """
        started = self.clock()
        if self.method == "pgbouncer":
            self._cut_pgbouncer(deadline)
        terminated, checks = self._terminate(started, deadline)
        result = CutResult(self.method, terminated, checks, self.clock() - started)
        self.log.info("connections.cut", method=result.method, terminated=result.terminated,
                      checks=result.remaining_checks, duration_s=round(result.duration_s, 6))
        return result

    def restore(self) -> None:
        """Let clients in again: RESUME what is paused, then ENABLE what is disabled.

        Idempotent and safe after a failed or partial cut (it reads the state
        from pgbouncer). Reconnects once if the console connection was lost.
        Raises :class:`ConnectionsNotRestored` if pgbouncer stays closed.
        """
        if self.method != "pgbouncer":
            self.log.info("connections.restored", method=self.method)
            return
        started = self.clock()
        try:
            done = self._restore_once()
        except _ConsoleLost as lost:
            self.log.warning("connections.console_lost", error=lost.reason)
            self._close_console()
            try:
                done = self._restore_once()
            except _ConsoleLost as again:
                raise ConnectionsNotRestored(again.command, again.reason) from None
        self.log.info("connections.restored", method=self.method, commands=done,
                      duration_s=round(self.clock() - started, 6))

    def served(self, within_s: float = SERVED_S) -> int:
        """After :meth:`restore`: poll SHOW POOLS until no client of our databases waits for
        a server (the queries held by PAUSE have all run), for at most ``within_s``.
        Returns how many clients still wait (0: all served).

        The run's next steps (health probes over SSH, restarts) would otherwise take the
        machine's CPU while pgbouncer logs in again, one server connection at a time, and
        serves the held queue: users' longest waits grow. Nothing here can fail the run:
        a console error is logged and the run goes on.
        """
        if self.method != "pgbouncer" or not self._databases:
            return 0
        started = self.clock()
        try:
            waiting = self._poll_pools(self._console_connection(), self._databases,
                                       "cl_waiting", started + within_s)
        except (psycopg2.Error, DatabaseUnreachable) as exc:
            self.log.warning("connections.served_unknown", error=_one_line(exc),
                             consequence="going on without waiting for the held clients")
            return 0
        (self.log.warning if waiting else self.log.info)(
            "connections.served", waiting=waiting, duration_s=round(self.clock() - started, 6))
        return waiting

    def render_served(self) -> list[str]:
        """The commands :meth:`served` runs, one line each (dry runs)."""
        if self.method != "pgbouncer":
            return []
        return [f"served pgbouncer: SHOW POOLS -- every {POLL_S * 1000:g} ms, at most "
                f"{SERVED_S:g} s, until no client waits for a server"]

    def close(self) -> None:
        """Close the admin console connection (the primary belongs to the caller)."""
        self._close_console()

    # -- internals ---------------------------------------------------------------------

    def _cut_pgbouncer(self, deadline: float) -> None:
        command = "connect"
        try:
            console = self._console_connection()
            command = "SHOW DATABASES"
            databases = self._databases or self._resolve(console)
            self._databases = databases
            if self.settings.cut_method == "kill":
                for db in databases:
                    command = f"DISABLE {_name(db)}"
                    _admin(console, command, "DISABLE")
            command = "SHOW POOLS"
            self._await_logins(console, databases, min(deadline, self.clock() + LOGIN_SETTLE_S))
            if self.settings.cut_method == "pause":
                command = "PAUSE"
                if self._paused(console, databases, deadline):
                    return
            for db in databases:
                command = f"KILL {_name(db)}"
                _admin(console, command, "KILL")
        except DatabaseUnreachable as exc:
            raise ConnectionControlFailed("pgbouncer", command, exc.reason) from exc
        except psycopg2.Error as exc:
            raise ConnectionControlFailed("pgbouncer", command, _one_line(exc)) from exc
        except _Answer as answer:
            raise ConnectionControlFailed("pgbouncer", command, answer.reason) from None

    def _paused(self, console: Connection, databases: tuple[str, ...], deadline: float) -> bool:
        """PAUSE every database: pgbouncer waits for running transactions, then closes its
        server connections; clients stay connected and wait. True once paused; False when
        the deadline passed first (a transaction did not end): the caller then KILLs, which
        also ends the pending PAUSE."""
        import threading

        done: list[BaseException | None] = []

        def pause() -> None:
            try:
                for db in databases:
                    _admin(console, f"PAUSE {_name(db)}", "PAUSE")
                done.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                done.append(exc)

        worker = threading.Thread(target=pause, name="pgbouncer-pause", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - self.clock()))
        if not worker.is_alive():
            if done and done[0] is not None:
                raise done[0]
            return True
        self.log.warning("connections.pause_timeout",
                         consequence="killing the remaining connections")
        try:
            killer = admin_console(self.settings)
            try:
                for db in databases:
                    _admin(killer, f"KILL {_name(db)}", "KILL")
            finally:
                killer.close()
            worker.join(PAUSE_ANSWER_S)
        finally:
            # however KILL went (an error, an interrupt): never leave the console to the
            # worker's pending PAUSE, or the restore that follows would wait on it
            if worker.is_alive():
                # pgbouncer may never answer the pending PAUSE once KILL took the database
                # (seen with no other traffic): the database is paused and empty either
                # way. psycopg2's close() would wait for the worker's query forever, so the
                # socket under it is cut first and the query fails
                self.log.info("connections.pause_unanswered",
                              consequence="its console connection is cut")
                _shut(self._console)
                worker.join(self.settings.terminate_deadline_s)
            self._close_console()
        return True

    def _await_logins(self, console: Connection, databases: tuple[str, ...],
                      until: float) -> None:
        """Poll SHOW POOLS until no server login of ``databases`` is in progress, or ``until``."""
        logins = self._poll_pools(console, databases, "sv_login", until)
        if logins:
            self.log.warning("connections.kill_during_login", logins=logins,
                             consequence="pgbouncer may refuse clients for server_login_retry")

    def _poll_pools(self, console: Connection, databases: tuple[str, ...], column: str,
                    until: float) -> int:
        """Poll SHOW POOLS every POLL_S until ``column`` sums to 0 over ``databases``' pools,
        or ``until``; the last sum."""
        while True:
            pools = _console_rows(console, "SHOW POOLS")
            count = sum(int(p[column]) for p in pools if p["database"] in databases)
            if count == 0 or self.clock() >= until:
                return count
            self._pause(until)

    def _terminate(self, started: float, deadline: float) -> tuple[int, int]:
        params = {"system": list(self.settings.system_users)}
        signalled: set[int] = set()
        checks = 0
        while True:
            try:
                rows = fresh_rows(self.primary, self._statement or _TERMINATE, params)
            except psycopg2.Error as exc:
                raise ConnectionControlFailed("the primary", "pg_terminate_backend",
                                              _one_line(exc)) from exc
            checks += 1
            if not rows:
                return len(signalled), checks
            signalled.update(row[0] for row in rows if row[5])
            if self.clock() >= deadline:
                remaining = [dict(zip(_COLUMNS, row[:5], strict=True)) for row in rows]
                self.log.error("connections.not_cut", method=self.method,
                               remaining=[c["pid"] for c in remaining], checks=checks)
                raise ConnectionsNotCut(self.method, remaining, self.clock() - started)
            self._pause(deadline)

    def _restore_once(self) -> list[str]:
        try:
            console = self._console_connection()
        except DatabaseUnreachable as exc:
            raise _ConsoleLost("connect", exc.reason) from None
        databases = self._databases or self._restore_step(console, "SHOW DATABASES",
                                                          lambda: self._resolve(console))
        self._databases = databases
        done = []
        state = self._restore_step(console, "SHOW DATABASES",
                                   lambda: self._database_state(console))
        gone = [db for db in databases if db not in state]
        if gone:
            raise ConnectionsNotRestored("SHOW DATABASES",
                                         f"pgbouncer no longer serves {', '.join(gone)}")
        for verb, flag in (("RESUME", "paused"), ("ENABLE", "disabled")):
            for db in databases:
                if state[db][flag]:
                    command = f"{verb} {_name(db)}"
                    self._restore_step(console, command, partial(_admin, console, command, verb))
                    done.append(command)
        state = self._restore_step(console, "SHOW DATABASES",
                                   lambda: self._database_state(console))
        closed = [db for db in databases
                  if db not in state or state[db]["paused"] or state[db]["disabled"]]
        if closed:
            raise ConnectionsNotRestored("SHOW DATABASES",
                                         f"still paused or disabled: {', '.join(closed)}")
        return done

    def _restore_step(self, console: Connection, command: str, step: Callable[[], _T]) -> _T:
        try:
            return step()
        except psycopg2.Error as exc:
            if console.closed:  # the connection broke, not the command
                raise _ConsoleLost(command, _one_line(exc)) from None
            raise ConnectionsNotRestored(command, _one_line(exc)) from exc
        except _Answer as answer:
            raise ConnectionsNotRestored(command, answer.reason) from None
        except Refused as refused:
            raise ConnectionsNotRestored(command, str(refused)) from refused

    def _database_state(self, console: Connection) -> dict[str, dict[str, bool]]:
        rows = _console_rows(console, "SHOW DATABASES")
        return {row["name"]: {"paused": bool(int(row["paused"])),
                              "disabled": bool(int(row["disabled"]))} for row in rows}

    def _resolve(self, console: Connection) -> tuple[str, ...]:
        dbname = self._dbname()
        rows = _console_rows(console, "SHOW DATABASES")
        names = tuple(row["name"] for row in rows
                      if row["database"] == dbname and row["name"] != "pgbouncer")
        if not names:
            raise Refused(f"pgbouncer ({self.settings.pgbouncer_admin_dsn}) serves no database "
                          f"for {dbname!r}, the primary's; its databases: "
                          f"{', '.join(row['name'] for row in rows)}")
        return names

    def _dbname(self) -> str:
        return str(self.primary.info.dbname)

    def _console_connection(self) -> Connection:
        if self._console is None or self._console.closed:
            self._console = admin_console(self.settings)
        return self._console

    def _close_console(self) -> None:
        if self._console is not None:
            self._console.close()
            self._console = None

    def _pause(self, until: float) -> None:
        self.sleep(max(0.0, min(POLL_S, until - self.clock())))


class _Answer(Exception):
    """The admin console answered a command with something else than its verb."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class _ConsoleLost(Exception):
    """The admin console connection broke during a restore (restore reconnects once)."""

    def __init__(self, command: str, reason: str) -> None:
        self.command = command
        self.reason = reason
        super().__init__(f"{command}: {reason}")


def _admin(console: Connection, command: str, answer: str) -> None:
    """Run one admin command; pgbouncer raises on an error, and must answer its verb."""
    with console.cursor() as cur:
        cur.execute(command)
        status = cur.statusmessage
    if status != answer:
        raise _Answer(f"answered {status!r} instead of {answer!r}")


def _console_rows(console: Connection, command: str) -> list[dict[str, Any]]:
    with console.cursor() as cur:
        cur.execute(command)
        names = [column[0] for column in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _shut(connection: Connection | None) -> None:
    """Shut down ``connection``'s socket under a query another thread waits on: the query
    then fails at once, where ``close()`` would block behind it."""
    if connection is None or connection.closed:
        return
    try:
        sock = socket.socket(fileno=os.dup(connection.fileno()))
    except OSError:
        return  # the socket is already gone: the waiting query fails by itself
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return  # not connected any more: the same
    finally:
        sock.close()


def _name(db: str) -> str:
    return db if _PLAIN_NAME.match(db) else '"' + db.replace('"', '""') + '"'


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def pgbouncer_closed(settings: DatabaseSettings, dbname: str) -> dict[str, list[str]]:
    """pgbouncer's databases for ``dbname`` (the primary's) that are paused or disabled:
    ``{name: ["paused", "disabled"]}`` (empty when all are open). Read on its console."""
    console = admin_console(settings)
    try:
        rows = _console_rows(console, "SHOW DATABASES")
    finally:
        console.close()
    closed = {}
    for row in rows:
        if row["database"] != dbname or row["name"] == "pgbouncer":
            continue
        flags = [flag for flag in ("paused", "disabled") if int(row.get(flag) or 0)]
        if flags:
            closed[row["name"]] = flags
    return closed


@dataclass(frozen=True)
class PgbouncerLimits:
    """What bounds a client's wait at pgbouncer while the window holds it (its console)."""

    query_wait_timeout_s: float
    """How long a query may wait for a server; 0: for ever."""
    max_client_conn: int
    clients: int
    """Client connections to the primary's database now (active and waiting)."""


def pgbouncer_limits(settings: DatabaseSettings, dbname: str) -> PgbouncerLimits:
    """``query_wait_timeout`` and ``max_client_conn`` from ``SHOW CONFIG``, and the clients
    of ``dbname``'s pools from ``SHOW POOLS``, read on pgbouncer's console."""
    console = admin_console(settings)
    try:
        config = {row["key"]: row["value"] for row in _console_rows(console, "SHOW CONFIG")}
        ours = {row["name"] for row in _console_rows(console, "SHOW DATABASES")
                if row["database"] == dbname and row["name"] != "pgbouncer"}
        pools = _console_rows(console, "SHOW POOLS")
    finally:
        console.close()
    clients = sum(int(row.get("cl_active") or 0) + int(row.get("cl_waiting") or 0)
                  for row in pools if row.get("database") in ours)
    return PgbouncerLimits(_pgbouncer_seconds(config.get("query_wait_timeout", "0")),
                           int(config.get("max_client_conn") or 0), clients)


def _pgbouncer_seconds(value: str) -> float:
    """A pgbouncer time setting as ``SHOW CONFIG`` prints it: seconds, perhaps fractional
    or with a unit (``120``, ``120.0``, ``2min``...); plain numbers are seconds."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|min|h|d)?\s*", value)
    if match is None:
        raise ValueError(f"not a pgbouncer time: {value!r}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
    return float(match.group(1)) * scale[match.group(2) or "s"]

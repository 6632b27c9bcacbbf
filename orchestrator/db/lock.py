"""The deploy lock: a session advisory lock held for the whole run, plus a run record.

The lock lives on a dedicated connection, so it dies with the orchestrator's
process (PostgreSQL releases a session lock when its backend ends). The run
record in ``fastdowntime.run`` says who holds it, since when, and what plan;
a run whose backend is gone stays ``running`` until ``resume`` settles it
(preflight refuses to deploy over it). ``force_unlock`` (``unlock --force``)
ends the holder's backend once its orchestrator is known to be dead.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import CHECK_STATEMENT_TIMEOUT_S, Connection, connect
from orchestrator.db.schema import LOCK_KEY, ensure_schema, schema_exists, schema_version
from orchestrator.errors import Locked, Refused

_HOLDER = """
SELECT l.pid, r.id, r.who, r.started, r.host, r.pid
  FROM pg_locks l
  LEFT JOIN fastdowntime.run r ON r.backend_pid = l.pid AND r.outcome = 'running'
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.classid = %(hi)s AND l.objid = %(lo)s AND l.objsubid = 1
"""
_HOLDER_NO_SCHEMA = """
SELECT l.pid, NULL, NULL, NULL, NULL, NULL FROM pg_locks l
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.classid = %(hi)s AND l.objid = %(lo)s AND l.objsubid = 1
"""
_KEY = {"hi": LOCK_KEY >> 32, "lo": LOCK_KEY & 0xFFFFFFFF}


@dataclass(frozen=True)
class Holder:
    """Who holds the deploy lock: the backend, and its run record when there is one."""

    pid: int
    run_id: str | None
    who: str | None
    started: datetime | None
    host: str | None = None
    """The machine the run's orchestrator runs on (None: a record of before versions)."""
    process: int | None = None
    """The orchestrator's process id there."""

    def describe(self) -> str:
        if self.run_id is None:
            return f"a session without a run record (backend pid {self.pid})"
        started = self.started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") \
            if self.started else "?"
        return f"run {self.run_id} by {self.who}, started {started} (backend pid {self.pid})"


UNRESOLVED = ("crashed", "undo-failed", "commit-unknown")
"""Outcomes a run record keeps until ``resume`` settles it (besides a dead ``running``)."""


@dataclass(frozen=True)
class UnresolvedRun:
    """A run record left for ``resume``: ``outcome`` is ``crashed`` for a run still
    ``running`` whose session is gone (its orchestrator died holding the lock)."""

    id: str
    who: str
    outcome: str
    started: datetime | None


def unresolved_runs(conn: Connection,
                    outcomes: Sequence[str] = UNRESOLVED) -> list[UnresolvedRun]:
    """The run records, oldest first, whose outcome is one of ``outcomes`` or that are
    ``running`` with their session gone; none when the ``fastdowntime`` schema does not
    exist yet."""
    if not schema_exists(conn):
        return []
    with conn.cursor() as cur:
        cur.execute("""
            SELECT r.id, r.who, r.outcome, r.started
              FROM fastdowntime.run r
             WHERE r.outcome = ANY(%s)
                OR (r.outcome = 'running' AND NOT EXISTS (
                        SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.backend_pid))
             ORDER BY r.started""", (list(outcomes),))
        rows = cur.fetchall()
    if not conn.autocommit:
        conn.rollback()
    return [UnresolvedRun(run_id, who, "crashed" if outcome == "running" else outcome, started)
            for run_id, who, outcome, started in rows]


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYMMDD-HHMMSS-xxxx`` (UTC)."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def whoami() -> str:
    """The release manager: the sudo user when there is one, at this host."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


def holder(conn: Connection) -> Holder | None:
    """The current holder of the deploy lock, or None when it is free."""
    query = _HOLDER if (schema_version(conn) or 0) >= 2 else _HOLDER_NO_SCHEMA
    with conn.cursor() as cur:
        cur.execute(query, _KEY)
        row = cur.fetchone()
    if not conn.autocommit:
        conn.rollback()
    return Holder(*row) if row else None


class DeployLock:
    """Hold the deploy lock for a run: ``acquire`` (or ``with``), then ``finish``."""

    def __init__(self, settings: DatabaseSettings, run_id: str, who: str,
                 plan: dict[str, Any] | None = None,
                 approvals: list[dict[str, str]] | None = None) -> None:
        self.settings = settings
        self.run_id = run_id
        self.who = who
        self.plan = plan
        self.approvals = approvals or []
        self.conn: Connection | None = None

    def acquire(self) -> None:
        """Take the lock and write the run record; raise Locked naming the holder."""
        conn = connect(self.settings, what="deploy lock", autocommit=True,
                       application_name=f"fastdowntime lock {self.run_id}",
                       statement_timeout_s=CHECK_STATEMENT_TIMEOUT_S)
        try:
            ensure_schema(conn)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                row = cur.fetchone()
                if not (row and row[0]):
                    current = holder(conn)
                    detail = current.describe() if current else "a session that just ended"
                    raise Locked(f"another run holds the deploy lock: {detail}")
                cur.execute("INSERT INTO fastdowntime.run (id, who, backend_pid, plan, approvals,"
                            " host, pid) VALUES (%s, %s, pg_backend_pid(), %s, %s, %s, %s)",
                            (self.run_id, self.who, json.dumps(self.plan),
                             json.dumps(self.approvals), socket.gethostname(), os.getpid()))
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def finish(self, outcome: str, detail: str | None = None, *,
                 settles: str | None = None) -> bool:
        """Record the outcome (on this run, and on the run it ``settles`` for ``resume``) and
        release the lock. Best effort: when the lock's session is gone (the lock died with
        it) the outcome is recorded on a new session, so the record never stays
        ``running`` (which preflight would take for a crash to resume); when that fails
        too it is said on stderr, never raised. True when recorded."""
        if self.conn is None:
            return False
        try:
            with self.conn.cursor() as cur:
                self._record(cur, outcome, detail, settles)
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            return True
        except (psycopg2.Error, OSError) as exc:
            lost = " ".join(str(exc).split())
        finally:
            try:
                self.conn.close()
            except (psycopg2.Error, OSError) as exc:
                _warn(f"closing the deploy lock's session: {exc}")
            self.conn = None
        try:
            conn = connect(self.settings, what="deploy lock", autocommit=True,
                           application_name=f"fastdowntime finish {self.run_id}",
                           statement_timeout_s=CHECK_STATEMENT_TIMEOUT_S)
            try:
                with conn.cursor() as cur:
                    self._record(cur, outcome, detail, settles)
            finally:
                conn.close()
        except (Refused, psycopg2.Error, OSError) as exc:
            _warn(f"could not record run {self.run_id}'s outcome ({outcome}) in the database: "
                  f"{lost}, then {' '.join(str(exc).split())}; its lock ended with its "
                  "session")
            return False
        _warn(f"the deploy lock's session was gone ({lost}); run {self.run_id}'s outcome "
              f"({outcome}) is recorded on a new session")
        return True

    def _record(self, cur: Any, outcome: str, detail: str | None, settles: str | None) -> None:
        for run_id in (self.run_id, settles):
            if run_id is not None:
                cur.execute("UPDATE fastdowntime.run SET outcome = %s, detail = %s, "
                            "finished = clock_timestamp() WHERE id = %s",
                            (outcome, detail, run_id))

    def alive(self) -> bool:
        """True while the lock's session still answers (so the lock is still ours)."""
        if self.conn is None or self.conn.closed:
            return False
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            return True
        except (psycopg2.Error, OSError):
            return False

    def __enter__(self) -> DeployLock:
        self.acquire()
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        self.finish("done" if error is None else "failed", None if error is None else str(error))


def last_window_from(conn: Connection) -> tuple[str, str] | None:
    """(run id, the release that served before its window) of the newest run whose window
    committed; None when no run committed a window (or none was recorded)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('fastdowntime.run') IS NOT NULL")
        if not cur.fetchone()[0]:
            return None
        cur.execute("SELECT id, plan->>'from' FROM fastdowntime.run "
                    "WHERE outcome IN ('done', 'failed-after-commit') "
                    "AND jsonb_array_length(coalesce(plan->'fastdowntime'->'cold_patches', "
                    "'[]'::jsonb)) > 0 ORDER BY started DESC LIMIT 1")
        row = cur.fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def force_unlock(settings: DatabaseSettings,
                 is_running: Callable[[int], bool] | None = None) -> Holder | None:
    """End the backend holding the deploy lock and mark its run; None when it was free.

    Refused when the holder's orchestrator runs on this machine and its
    process is alive (``is_running``, default: it exists and is no zombie):
    ending its lock would let a second deploy start beside a live one.
    """
    conn = connect(settings, what="deploy lock", autocommit=True,
                   statement_timeout_s=CHECK_STATEMENT_TIMEOUT_S)
    try:
        current = holder(conn)
        if current is None:
            return None
        alive = is_running or process_alive
        if (current.host == socket.gethostname() and current.process is not None
                and alive(current.process)):
            raise Refused(f"the deploy lock's holder, {current.describe()}, is alive: its "
                          f"orchestrator runs here as process {current.process}; stop it "
                          "(Ctrl-C, or kill -TERM) and let it restore or finish, not unlock")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (current.pid,))
            if current.run_id is not None:
                cur.execute("UPDATE fastdowntime.run SET outcome = 'abandoned', "
                            "finished = clock_timestamp(), detail = 'unlock --force by ' || %s "
                            "WHERE id = %s", (whoami(), current.run_id))
        return current
    finally:
        conn.close()


def process_alive(pid: int) -> bool:
    """True when process ``pid`` exists on this machine and is not a zombie (PID 1 here does
    not reap orphans: a dead process can linger in state Z)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read()
    except OSError:
        return False
    return fields.rpartition(")")[2].split()[:1] != ["Z"]


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"fastdowntime: warning: {message}\n")
    except (OSError, ValueError):
        return

"""The deploy lock: a session advisory lock held for the whole run, plus a run record.

The lock lives on a dedicated connection, so it dies with the orchestrator's
process (PostgreSQL releases a session lock when its backend ends). The run
record in ``fastdowntime.run`` says who holds it, since when, and what plan;
a run whose backend is gone is marked ``abandoned`` by the next run.
``force_unlock`` (``unlock --force``) ends a live holder's backend.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import Connection, connect
from orchestrator.db.schema import LOCK_KEY, ensure_schema, schema_exists
from orchestrator.errors import Locked

_HOLDER = """
SELECT l.pid, r.id, r.who, r.started
  FROM pg_locks l
  LEFT JOIN fastdowntime.run r ON r.backend_pid = l.pid AND r.outcome = 'running'
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.classid = %(hi)s AND l.objid = %(lo)s AND l.objsubid = 1
"""
_HOLDER_NO_SCHEMA = """
SELECT l.pid, NULL, NULL, NULL FROM pg_locks l
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

    def describe(self) -> str:
        if self.run_id is None:
            return f"a session without a run record (backend pid {self.pid})"
        started = self.started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") \
            if self.started else "?"
        return f"run {self.run_id} by {self.who}, started {started} (backend pid {self.pid})"


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYMMDD-HHMMSS-xxxx`` (UTC)."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def whoami() -> str:
    """The release manager: the sudo user when there is one, at this host."""
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"{user}@{socket.gethostname()}"


def holder(conn: Connection) -> Holder | None:
    """The current holder of the deploy lock, or None when it is free."""
    query = _HOLDER if schema_exists(conn) else _HOLDER_NO_SCHEMA
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
                       application_name=f"fastdowntime lock {self.run_id}")
        try:
            ensure_schema(conn)
            with conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                row = cur.fetchone()
                if not (row and row[0]):
                    current = holder(conn)
                    detail = current.describe() if current else "a session that just ended"
                    raise Locked(f"another run holds the deploy lock: {detail}")
                cur.execute("UPDATE fastdowntime.run SET outcome = 'abandoned', "
                            "finished = clock_timestamp(), "
                            "detail = 'its orchestrator died holding the lock' "
                            "WHERE outcome = 'running' AND backend_pid IS DISTINCT FROM "
                            "pg_backend_pid()")
                cur.execute("INSERT INTO fastdowntime.run (id, who, backend_pid, plan, approvals)"
                            " VALUES (%s, %s, pg_backend_pid(), %s, %s)",
                            (self.run_id, self.who, json.dumps(self.plan),
                             json.dumps(self.approvals)))
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def finish(self, outcome: str, detail: str | None = None) -> None:
        """Record the outcome and release the lock (closing its session)."""
        if self.conn is None:
            return
        try:
            with self.conn.cursor() as cur:
                cur.execute("UPDATE fastdowntime.run SET outcome = %s, detail = %s, "
                            "finished = clock_timestamp() WHERE id = %s",
                            (outcome, detail, self.run_id))
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        finally:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> DeployLock:
        self.acquire()
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        self.finish("done" if error is None else "failed", None if error is None else str(error))


def force_unlock(settings: DatabaseSettings) -> Holder | None:
    """End the backend holding the deploy lock and mark its run; None when it was free."""
    conn = connect(settings, what="deploy lock", autocommit=True)
    try:
        current = holder(conn)
        if current is None:
            return None
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (current.pid,))
            if current.run_id is not None:
                cur.execute("UPDATE fastdowntime.run SET outcome = 'abandoned', "
                            "finished = clock_timestamp(), detail = 'unlock --force by ' || %s "
                            "WHERE id = %s", (whoami(), current.run_id))
        return current
    finally:
        conn.close()

"""The cold transaction before the window, rolled back: nothing changes, nothing is held after.

:func:`warm_cold` runs its reads once, so the window's connection has their catalogs
and tables cached. :func:`trial_cold` runs all of it, as the window will, and rolls
back: a rehearsal's trials, each timing every patch and statement once more (one run
on a busy staging machine is off by a quarter either way, and production scales the
rehearsed seconds, error included). A rolled-back UPDATE, INSERT or DELETE leaves its
rows dead in the table, so :func:`vacuum` clears them before the next run scans them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
import structlog

from orchestrator.db.cold import (
    ColdPatch,
    ColdPatchFailed,
    ColdResult,
    apply_cold,
    cold_transaction,
    error_text,
    rollback,
)
from orchestrator.db.connect import Connection
from orchestrator.db.schema import schema_exists
from orchestrator.errors import FailedBeforeCommit

WARM_TIMEOUT_S = 5.0
"""How long the warm-up's reads may wait for a lock or run (it holds nothing up)."""

TRIAL_LOCK_WAIT_S = 0.1
"""How long a trial's statement waits for a lock users hold. Short: the wait counts in
its timing, and the window waits for none (its cut leaves nobody to wait for). A trial
that cannot have its locks fails with SQLSTATE 55P03, and the rehearsal tries again."""

VACUUM_TIMEOUT_S = 600.0
"""How long the VACUUM of one table after a trial may run: a rolled-back UPDATE of a big
table leaves as many dead rows as it has; left, the next run would scan them too."""

TRANSIENT = {"55P03": "a lock users held", "40P01": "a deadlock with users' queries",
             "40001": "a serialization failure"}
"""SQLSTATEs of a trial that failed because of users' queries, not of its patches."""


def warm_cold(conn: Connection, patches: Sequence[ColdPatch], revision_table: str) -> None:
    """Run the cold transaction's reads once on ``conn`` (idle, not in a transaction) and
    roll back, before the window: the backend then has their catalogs and tables cached,
    and the window's first statements do not pay for it (2-6 ms each on a loaded machine,
    measured here). Raises FailedBeforeCommit naming the warm-up when a read fails (a
    revision table that is not there fails here, before anything is held)."""
    if conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        raise FailedBeforeCommit("warming the primary connection before the window: it is "
                                 "in a transaction already (a bug: it was opened for this)")
    try:
        with conn.cursor() as cur:
            ms = round(WARM_TIMEOUT_S * 1000)
            cur.execute(f"SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}")
            for step in cold_transaction(patches, None, revision_table):
                if step.kind == "begin":
                    cur.execute(step.sql)
                elif step.kind == "check" and step.patch is not None:
                    name = step.patch.report.name
                    assert name is not None
                    cur.execute(step.sql, (name.major, name.minor, name.point))
            if schema_exists(conn):
                cur.execute("SELECT 1 FROM fastdowntime.applied_patch WHERE filename = ''")
    except psycopg2.Error as exc:
        raise FailedBeforeCommit(f"warming the primary connection before the window (the "
                                 f"cold transaction's reads of {revision_table}, "
                                 f"[database] revision_table): {error_text(exc)}") from None
    finally:
        rollback(conn)


@dataclass(frozen=True)
class Vacuumed:
    """What :func:`vacuum` did: the tables it vacuumed, and why it left the others."""

    tables: tuple[str, ...]
    left: tuple[str, ...] = ()
    """``"name: why"`` of each table not vacuumed (locked, not owned, an error)."""


@dataclass(frozen=True)
class Trial:
    """One trial: its timings (as a window's) and the vacuum after it."""

    result: ColdResult
    vacuumed: Vacuumed


def trial_cold(conn: Connection, patches: Sequence[ColdPatch], *, deadline: float,
               permissions: str | None = None,
               revision_table: str = "LaunchpadDatabaseRevision",
               lock_timeout_s: float = TRIAL_LOCK_WAIT_S,
               vacuum_timeout_s: float = VACUUM_TIMEOUT_S,
               clock: Callable[[], float] = time.monotonic, log: Any = None) -> Trial:
    """Run the cold transaction as the window will (``deadline`` as its), and roll it back.

    Users' queries run meanwhile: each statement waits at most ``lock_timeout_s`` for
    their locks, and theirs wait behind the trial's. The tables it wrote rows to are
    vacuumed after the rollback (each for at most ``vacuum_timeout_s``). A trial that
    fails (ColdPatchFailed, rolled back, as :func:`apply_cold` raises it) has its patches'
    tables vacuumed first, when the connection still works: what it wrote before the
    failure can no longer be asked."""
    log = log or structlog.get_logger("cold")
    try:
        result = apply_cold(conn, patches, deadline=deadline, permissions=permissions,
                            revision_table=revision_table, clock=clock, log=log,
                            commit=False, lock_timeout_s=lock_timeout_s)
    except ColdPatchFailed as failed:
        if not conn.closed:
            named = sorted({t for p in patches for s in p.report.statements for t in s.tables})
            try:
                done = vacuum(conn, named, timeout_s=vacuum_timeout_s)
            except psycopg2.Error as exc:  # the connection is gone: the trial's error stands
                log.warning("cold.trial_vacuum_failed", error=error_text(exc),
                            trial_error=str(failed))
            else:
                log.info("cold.trial_vacuum", tables=list(done.tables), left=list(done.left))
        raise
    return Trial(result, vacuum(conn, result.written, timeout_s=vacuum_timeout_s))


def vacuum(conn: Connection, tables: Sequence[int | str], *, timeout_s: float) -> Vacuumed:
    """VACUUM (SKIP_LOCKED) each of ``tables`` (OIDs, or names as a patch writes them)
    that exists (one a rolled-back transaction created is gone), each within
    ``timeout_s``. Never raises for one table: a table left says why. Leaves ``conn`` idle
    in its old mode and settings (unless the connection is lost: its psycopg2 error is
    raised)."""
    oids = [t for t in tables if isinstance(t, int)]
    names = [t for t in tables if isinstance(t, str)]
    if not tables:
        return Vacuumed(())
    mode = conn.autocommit
    conn.autocommit = True
    done: list[str] = []
    left: list[str] = []
    before: str | None = None
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW statement_timeout")
            (before,) = cur.fetchone()
            cur.execute(f"SET statement_timeout = {max(1, round(timeout_s * 1000))}")
            try:
                cur.execute("SELECT DISTINCT format('%%I.%%I', n.nspname, c.relname) "
                            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE c.relkind IN ('r', 'm', 'p') AND (c.oid = ANY(%s::oid[]) OR "
                            "c.oid = ANY(SELECT to_regclass(t) FROM unnest(%s::text[]) t)) "
                            "ORDER BY 1", (oids, names))
                found = [name for (name,) in cur.fetchall()]
            except psycopg2.Error as exc:
                if conn.closed:
                    raise
                found, left = [], [f"{', '.join(map(str, tables))}: {error_text(exc)}"]
            for name in found:
                del conn.notices[:]  # psycopg2 keeps the last 50: only this VACUUM's
                try:
                    cur.execute(f"VACUUM (SKIP_LOCKED) {name}")
                except psycopg2.Error as exc:
                    if conn.closed:
                        raise
                    left.append(f"{name}: {error_text(exc)}")
                    continue
                skipped = [n.strip() for n in conn.notices if "skipping" in n]
                if skipped:
                    left.append(f"{name}: {skipped[0]}")
                else:
                    done.append(name)
    finally:
        if not conn.closed:
            if before is not None:
                with conn.cursor() as cur:
                    cur.execute("SELECT set_config('statement_timeout', %s, false)",
                                (before,))
            conn.autocommit = mode
    return Vacuumed(tuple(done), tuple(left))

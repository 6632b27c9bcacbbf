"""Apply one live patch online, before the window (SPEC section 4, "Live patches").

One statement at a time, each in its own short transaction (or in autocommit
when PostgreSQL refuses it inside one: CONCURRENTLY, VACUUM ...), each after
``SET lock_timeout``. A statement that times out waiting for a lock is tried
again with exponential backoff (tenacity); any other error stops the patch
at once. Nothing here holds a lock for long, so users never notice.

- A plain ``CREATE INDEX`` on a table that existed before the patch runs as
  ``CREATE INDEX CONCURRENTLY``; one on a table the patch creates runs as
  written.
- Before an index build, an INVALID index of that name (left by a failed
  concurrent build) is dropped concurrently and built again.
- Progress is kept in ``fastdowntime.live_progress`` (file, checksum,
  statement number). A statement that runs in a transaction commits together
  with its progress row, so a crash never leaves it done but unrecorded; a
  re-run of the same text skips what is recorded and resumes.
- At the end the revision row is inserted unless the patch inserted it,
  ``fastdowntime.applied_patch`` is upserted and the progress rows deleted,
  in one transaction; then the row is checked to exist.

:func:`review_live` writes what :func:`apply_live` sends as SQL a reviewer can run in psql
(``plan --sql``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import structlog
from psycopg2 import sql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from orchestrator.db.connect import Connection
from orchestrator.db.schema import ensure_schema, identifier
from orchestrator.errors import BadInput, FailedBeforeCommit
from orchestrator.history.git import blob_sha
from orchestrator.patches import PatchName, PatchReport, Statement
from orchestrator.patches.locks import Relation
from orchestrator.patches.rewrite import (
    IndexBuild,
    concurrent_form,
    index_build,
    runs_in_transaction,
)

_SHOWN_SQL = 80
T = TypeVar("T")


class LivePatchFailed(FailedBeforeCommit):
    """A live patch stopped (exit 1: live patches run before the window; users saw nothing).

    ``file`` and ``line`` locate the statement (``line`` is None for the
    orchestrator's own bookkeeping), ``statement`` is its shortened text,
    ``sqlstate`` and ``pg_message`` PostgreSQL's error (``sqlstate`` None when
    the connection failed). ``waits`` is how many times the statement waited
    out ``lock_timeout`` when it gave up on a lock on ``tables``, else None.
    """

    def __init__(self, file: str, line: int | None, statement: str, sqlstate: str | None,
                 pg_message: str, *, waits: int | None = None,
                 tables: tuple[str, ...] = ()) -> None:
        self.file = file
        self.line = line
        self.statement = statement
        self.sqlstate = sqlstate
        self.pg_message = pg_message
        self.waits = waits
        self.tables = tables
        where = f"{file} line {line}" if line is not None else file
        waited = ""
        if waits is not None:
            on = ", ".join(tables) or "the relations it names"
            waited = f"waited {waits} times for a lock on {on}, giving up; "
        code = f"SQLSTATE {sqlstate}" if sqlstate else "no SQLSTATE"
        super().__init__(f"{where}: {statement}: {waited}{code}: {pg_message} "
                         "(live patch stopped; the statements done so far are recorded "
                         "and a re-run resumes after them)")


@dataclass(frozen=True)
class LiveResult:
    """What :func:`apply_live` did to one patch."""

    filename: str
    skipped: bool
    """The revision row was already there and nothing was half done: nothing ran."""
    statements_run: int
    statements_skipped: int
    """Done by an earlier, interrupted run of the same text (``live_progress``)."""
    retries: int
    """Lock-timeout retries, in total."""
    rebuilt_indexes: tuple[str, ...]
    """Invalid indexes dropped and built again (``schema.name``)."""
    duration_s: float


def apply_live(conn: Connection, report: PatchReport, text: str, *,
               revision_table: str = "LaunchpadDatabaseRevision", lock_timeout_s: float = 1.0,
               retries: int = 5, backoff_s: float = 0.5,
               sleep: Callable[[float], None] = time.sleep, run_id: str | None = None,
               log: Any = None) -> LiveResult:
    """Apply the live patch ``report`` (analysed from ``text``) on ``conn``, online.

    ``conn`` is a connection to the primary as the schema owner; it is put in
    autocommit and left so. Whether the patch is live is the plan's decision,
    not checked here. The patch is skipped when ``revision_table`` (a plain
    identifier, optionally schema-qualified, folded to lower case as
    PostgreSQL does) already holds its row and no run of it is half done.
    Each statement waits at most ``lock_timeout_s`` (at least 1 ms) for a
    lock, and is retried ``retries`` times, sleeping ``backoff_s``, then
    twice that, and so on, through ``sleep``. Raises :class:`LivePatchFailed`
    on the first other error or when the retries run out, and BadInput when
    the file name or ``revision_table`` cannot be used. On return the
    revision row exists and ``fastdowntime.applied_patch`` records the
    patch's checksum (:func:`~orchestrator.history.git.blob_sha` of ``text``)
    with ``run_id``. Logs ``live.statement`` per statement run.
    """
    if report.name is None:
        raise BadInput(f"{report.file}: not named patch-MAJOR-MINOR-POINT.sql, so it cannot "
                       "be recorded in the revision table")
    table = sql.SQL(identifier(revision_table))
    run = _LiveRun(conn, report.name, report.statements, text, table,
                   lock_timeout_ms=_lock_timeout_ms(lock_timeout_s),
                   retries=retries, backoff_s=backoff_s, sleep=sleep, run_id=run_id,
                   log=log if log is not None else structlog.get_logger())
    return run.apply()


def sent_text(statement: Statement) -> str:
    """The text :func:`apply_live` sends for ``statement``: a plain ``CREATE INDEX`` on a
    table that existed before the patch as ``CREATE INDEX CONCURRENTLY``, else as written."""
    rewritten = concurrent_form(statement.sql) if statement.blocking else None
    return rewritten or statement.sql


def review_live(report: PatchReport, text: str, *, revision_table: str,
                lock_timeout_s: float) -> list[str]:
    """What :func:`apply_live` sends for the live patch ``report`` (analysed from ``text``),
    in order, as SQL a reviewer reads and can run by hand in psql: each statement after the
    ``SET lock_timeout`` it gets, as it is sent, then the revision row unless the patch
    inserted it. Comments say what the SQL does not: the skip when the row exists, the
    invalid index dropped before a build, the progress and checksum bookkeeping."""
    if report.name is None:
        raise BadInput(f"{report.file}: not named patch-MAJOR-MINOR-POINT.sql, so it cannot "
                       "be recorded in the revision table")
    table = identifier(revision_table)
    timeout = _SET_LOCK_TIMEOUT.format(_lock_timeout_ms(lock_timeout_s)) + ";"
    name = report.name
    lines = [f"-- {name.filename} ({blob_sha(text.encode())[:12]})",
             f"-- (skipped if its {table} row exists and no earlier run left it half done)"]
    if not report.statements:
        lines.append("-- no statement shown: " + (
            "PostgreSQL's parser refuses it (a plan violation)" if not report.parsed
            else "it holds no statement"))
    for statement in report.statements:
        sent = sent_text(statement)
        if sent != statement.sql:
            lines.append(f"-- line {statement.line}: a plain CREATE INDEX on an existing table "
                         "runs CONCURRENTLY")
        build = index_build(statement.sql)
        if build is not None and build.index is not None:
            lines.append(f"-- before it, an INVALID index {build.index} (a failed build's), "
                         "if any, is dropped CONCURRENTLY")
        lines += [timeout, f"{sent};"]
    now = "clock_timestamp() AT TIME ZONE 'UTC'"
    lines += [f"-- its {table} row unless the patch inserted it, in one transaction with its "
              "checksum",
              "-- (fastdowntime.applied_patch); the orchestrator sends the patch's start and end "
              "by its own clock", "-- (UTC), here the database's", timeout,
              _RECORD_ROW.format(table) % (*name.key, now, now, *name.key) + ";"]
    return lines


_SET_LOCK_TIMEOUT = "SET lock_timeout = {}"
_RECORD_ROW = ("INSERT INTO {0} (major, minor, patch, start_time, end_time)"
               " SELECT %s, %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM {0}"
               " WHERE major = %s AND minor = %s AND patch = %s)")
"""The revision row of a live patch, unless the patch inserted it."""


def _lock_timeout_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _short(text: str) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= _SHOWN_SQL else flat[: _SHOWN_SQL - 3].rstrip() + "..."


def _utcnow() -> datetime:
    """Now in UTC, without a time zone: Launchpad's revision table keeps ``timestamp``."""
    return datetime.now(UTC).replace(tzinfo=None)


class _LiveRun:
    """One application of one patch; holds the counters :class:`LiveResult` reports."""

    def __init__(self, conn: Connection, name: PatchName, statements: tuple[Statement, ...],
                 text: str, table: sql.Composable, *, lock_timeout_ms: int, retries: int,
                 backoff_s: float, sleep: Callable[[float], None], run_id: str | None,
                 log: Any) -> None:
        self.conn = conn
        self.name = name
        self.file = name.filename
        self.statements = statements
        self.checksum = blob_sha(text.encode())
        self.table = table
        self.lock_timeout_ms = lock_timeout_ms
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.run_id = run_id
        self.log = log
        self.retried = 0
        self.rebuilt: list[str] = []

    def apply(self) -> LiveResult:
        started, start_time = time.monotonic(), _utcnow()
        self.conn.autocommit = True
        self._guard(None, "creating the fastdowntime schema", lambda: ensure_schema(self.conn))
        done = self._guard(None, "reading live_progress", self._done)
        if not done and self._guard(None, "reading the revision table", self._has_row):
            self.log.info("live.skipped", file=self.file, reason="revision row present")
            return LiveResult(self.file, True, 0, 0, 0, (), time.monotonic() - started)
        ran = skipped = 0
        for number, statement in enumerate(self.statements, start=1):
            if number in done and not self._invalid_again(statement):
                self.log.info("live.statement_skipped", file=self.file, line=statement.line,
                              statement=number, reason="done by an earlier run")
                skipped += 1
                continue
            self._run(number, statement)
            ran += 1
        duration = time.monotonic() - started
        self._guard(None, "recording the patch",
                    lambda: self._record(start_time, _utcnow(), duration))
        if not self._guard(None, "checking the revision table", self._has_row):
            raise LivePatchFailed(self.file, None, "checking the revision table", None,
                                  f"no row {self.name.key} after the patch ran")
        self.log.info("live.applied", file=self.file, statements_run=ran,
                      statements_skipped=skipped, retries=self.retried,
                      rebuilt_indexes=list(self.rebuilt), duration_s=round(duration, 3))
        return LiveResult(self.file, False, ran, skipped, self.retried, tuple(self.rebuilt),
                          duration)

    # -- one statement -------------------------------------------------------------------

    def _run(self, number: int, statement: Statement) -> None:
        build = index_build(statement.sql)
        text = sent_text(statement)
        rewritten = text if text != statement.sql else None
        in_transaction = runs_in_transaction(text)
        started, retried_before = time.monotonic(), self.retried

        def attempt() -> None:
            self._set_lock_timeout()
            if build is not None:
                self._drop_if_invalid(build, statement)
            if in_transaction:
                with self._transaction() as cur:
                    cur.execute(text)
                    self._mark_done(cur, number)
            else:
                with self.conn.cursor() as cur:
                    cur.execute(text)

        self._guard(statement, _short(text), attempt)
        if not in_transaction:
            self._guard(statement, "recording progress", lambda: self._mark_done_now(number))
        self.log.info("live.statement", file=self.file, line=statement.line, statement=number,
                      duration_s=round(time.monotonic() - started, 3),
                      retries=self.retried - retried_before,
                      index_concurrently=rewritten is not None or bool(build and build.concurrent),
                      rewritten=rewritten is not None, transaction=in_transaction)

    def _drop_if_invalid(self, build: IndexBuild, statement: Statement) -> None:
        """Drop the index ``build`` makes when it exists and is INVALID (a failed build)."""
        found = self._index(build)
        if found is None or found[1]:
            return
        schema, name = found[0], build.index or ""
        shown = str(Relation(schema, name))
        self.log.warning("live.invalid_index", file=self.file, line=statement.line, index=shown)
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(schema, name)))
        if shown not in self.rebuilt:
            self.rebuilt.append(shown)

    def _invalid_again(self, statement: Statement) -> bool:
        """True when a statement recorded done built an index that is INVALID now."""
        build = index_build(statement.sql)
        if build is None:
            return False
        found = self._guard(statement, "checking the index", lambda: self._index(build))
        return found is not None and not found[1]

    def _index(self, build: IndexBuild) -> tuple[str, bool] | None:
        """(schema, valid) of the index ``build`` names, in its table's schema, if it exists."""
        if build.index is None:
            return None
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT n.nspname, i.indisvalid FROM pg_class t"
                " JOIN pg_class c ON c.relnamespace = t.relnamespace AND c.relname = %s"
                " JOIN pg_index i ON i.indexrelid = c.oid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE t.oid = to_regclass(%s)",
                (build.index, str(build.table)),
            )
            row = cur.fetchone()
        return (row[0], bool(row[1])) if row else None

    # -- retries and errors --------------------------------------------------------------

    def _guard(self, statement: Statement | None, what: str, action: Callable[[], T]) -> T:
        """Run ``action``, retrying lock timeouts; any database error becomes LivePatchFailed."""
        line = statement.line if statement else None
        tables = statement.tables if statement else ()

        def waited(state: RetryCallState) -> None:
            self.retried += 1
            pause = state.next_action.sleep if state.next_action else 0.0
            self.log.warning("live.lock_timeout", file=self.file, line=line, what=what,
                             attempt=state.attempt_number, tables=list(tables), sleep_s=pause)

        retrying = Retrying(
            retry=retry_if_exception_type(psycopg2.errors.LockNotAvailable),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.backoff_s),
            sleep=self.sleep,
            before_sleep=waited,
            reraise=True,
        )
        try:
            return retrying(action)
        except psycopg2.errors.LockNotAvailable as error:
            raise LivePatchFailed(self.file, line, what, error.pgcode or "55P03", _message(error),
                                  waits=self.retries + 1, tables=tables) from error
        except psycopg2.Error as error:
            raise LivePatchFailed(self.file, line, what, error.pgcode,
                                  _message(error)) from error

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in one transaction, committed at the end, rolled back on any error."""
        self.conn.autocommit = False
        try:
            with self.conn.cursor() as cur:
                yield cur
            self.conn.commit()
        except BaseException:
            if not self.conn.closed:
                self.conn.rollback()
            raise
        finally:
            if not self.conn.closed:
                self.conn.autocommit = True

    def _set_lock_timeout(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(_SET_LOCK_TIMEOUT).format(sql.Literal(self.lock_timeout_ms)))

    # -- bookkeeping ---------------------------------------------------------------------

    def _done(self) -> set[int]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT statement, checksum = %s FROM fastdowntime.live_progress"
                        " WHERE filename = %s", (self.checksum, self.file))
            rows = cur.fetchall()
        if any(not same for _, same in rows):
            self.log.warning("live.stale_progress", file=self.file,
                             detail="progress of an earlier text of this file is ignored")
        return {number for number, same in rows if same}

    def _has_row(self) -> bool:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT 1 FROM {} WHERE major = %s AND minor = %s AND patch = %s")
                        .format(self.table), self.name.key)
            return cur.fetchone() is not None

    def _mark_done(self, cur: Any, number: int) -> None:
        cur.execute("INSERT INTO fastdowntime.live_progress (filename, checksum, statement)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (self.file, self.checksum, number))

    def _mark_done_now(self, number: int) -> None:
        self._set_lock_timeout()
        with self.conn.cursor() as cur:
            self._mark_done(cur, number)

    def _record(self, start_time: datetime, end_time: datetime, duration: float) -> None:
        """Revision row (unless the patch wrote it), applied_patch, no more progress: at once."""
        self._set_lock_timeout()
        with self._transaction() as cur:
            cur.execute(sql.SQL(_RECORD_ROW).format(self.table),
                        (*self.name.key, start_time, end_time, *self.name.key))
            cur.execute(
                "INSERT INTO fastdowntime.applied_patch"
                " (filename, major, minor, point, checksum, duration_s, run_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (filename) DO UPDATE SET major = EXCLUDED.major,"
                " minor = EXCLUDED.minor, point = EXCLUDED.point, checksum = EXCLUDED.checksum,"
                " applied_at = clock_timestamp(), duration_s = EXCLUDED.duration_s,"
                " run_id = EXCLUDED.run_id",
                (self.file, *self.name.key, self.checksum, duration, self.run_id),
            )
            cur.execute("DELETE FROM fastdowntime.live_progress WHERE filename = %s",
                        (self.file,))


def _message(error: psycopg2.Error) -> str:
    """PostgreSQL's primary message (or psycopg2's, for a broken connection), on one line."""
    diag = getattr(error, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return " ".join((primary or str(error)).split())

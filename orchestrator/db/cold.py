"""Cold patches: all of them and the permissions step in one transaction, inside a deadline.

Each statement runs with ``statement_timeout`` set from what is left of the
deadline, so the transaction can never outlive it by more than PostgreSQL's
cancel latency. Each patch is timed by the database's ``clock_timestamp()``
and its revision-table row is checked, or inserted when the patch did not
insert it itself. COMMIT is the commit point. Any error before it, the
deadline included, rolls everything back and raises
:class:`ColdPatchFailed` naming the patch, the statement and the time spent.

The ``fastdowntime`` schema must exist beforehand (the deploy lock creates
it), so the window runs no DDL of the orchestrator's own. Round trips are
few: one per statement (as ``psql -f`` does), one per patch for its end
time and row check, and one each to begin, to record the rows and checksums,
for the permissions and for COMMIT.

The transaction is described once, by :func:`cold_transaction`: :func:`apply_cold`
executes it, :func:`render_cold` shows it for ``--dry-run``, :func:`review_cold`
writes it as SQL a reviewer can run in psql (``plan --sql``), and
:mod:`orchestrator.db.trial` runs it before the window and rolls back: its reads
(warming the connection) or all of it (a rehearsal's trials, ``apply_cold(commit=False)``).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.extensions
import structlog

from orchestrator.db.connect import Connection
from orchestrator.db.schema import identifier, schema_exists
from orchestrator.errors import CommitUnknown, FailedBeforeCommit
from orchestrator.patches import PatchReport
from orchestrator.patches.rewrite import inserts_into

QUERY_CANCELED = "57014"
_SHOWN = 120


@dataclass(frozen=True)
class ColdPatch:
    """A cold patch to apply: its analysis, its text and its checksum (git blob id)."""

    report: PatchReport
    text: str
    checksum: str

    @property
    def filename(self) -> str:
        assert self.report.name is not None
        return self.report.name.filename


@dataclass(frozen=True)
class PatchTiming:
    """How long one patch took inside the transaction, by the database's clock."""

    filename: str
    duration_s: float
    statements: int
    statement_s: tuple[float, ...] = ()
    """Each statement's own seconds, in order (as the orchestrator timed its round trip)."""


@dataclass(frozen=True)
class ColdResult:
    """What the committed transaction did; ``commit_at`` is the clock() of the commit point."""

    timings: tuple[PatchTiming, ...]
    total_s: float
    commit_at: float
    """(A trial, rolled back: the clock() of its ROLLBACK.)"""
    written: tuple[int, ...] = ()
    """A trial's: the OIDs of the tables it wrote rows to (dead once it rolled back)."""


class ColdPatchFailed(FailedBeforeCommit):
    """The cold-patch transaction failed and was rolled back: nothing changed."""

    def __init__(self, filename: str, line: int | None, statement: str, elapsed_s: float,
                 reason: str, sqlstate: str | None = None, deadline: bool = False) -> None:
        self.filename = filename
        self.line = line
        self.statement = statement
        self.elapsed_s = elapsed_s
        self.sqlstate = sqlstate
        self.deadline = deadline
        where = f"{filename} line {line}" if line else filename
        shown = statement if len(statement) <= _SHOWN else statement[:_SHOWN - 3] + "..."
        cause = "the window deadline passed" if deadline else reason
        super().__init__(f"{where}: {shown}: {cause} after {elapsed_s:.3f} s; rolled back, "
                         "nothing changed")


@dataclass(frozen=True)
class Backend:
    """One server process: its pid and start time (a pid alone may have been reused)."""

    pid: int
    started: datetime

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started": self.started.isoformat()}

    @classmethod
    def from_json(cls, data: Any) -> Backend | None:
        """The backend a journal recorded, or None where it recorded none (or garbage)."""
        try:
            return cls(int(data["pid"]), datetime.fromisoformat(data["started"]))
        except (TypeError, KeyError, ValueError):
            return None


class CommitLost(CommitUnknown):
    """The connection broke during COMMIT, so the transaction may have committed.

    ``backend`` is the server process that ran it (:func:`committed_by` ends it and
    waits for it to exit before it asks) and ``result`` the timings, valid if it did
    commit.
    """

    def __init__(self, backend: Backend, result: ColdResult, reason: str) -> None:
        self.backend = backend
        self.result = result
        super().__init__(f"the connection to the primary was lost during COMMIT ({reason}); "
                         "it may have committed")


def committed_by(conn: Connection, run_id: str, filenames: Sequence[str], *,
                 backend: Backend | None = None, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> bool:
    """Whether run ``run_id``'s cold patches ``filenames`` committed (they commit together),
    asked on ``conn``, a connection of its own in autocommit.

    With ``backend`` (the server process whose COMMIT was cut off) it first ends that
    process, if it is still there (same pid, same start), and waits up to ``timeout_s``
    for it to exit: until then its COMMIT may still land, and over a half-open
    connection it would wait for its client for hours. Ending it cannot undo a commit
    already written; a COMMIT not yet written aborts. Raises :class:`CommitUnknown` if it
    does not exit in time.
    """
    deadline = clock() + timeout_s
    same = "pid = %s AND backend_start = %s"
    with conn.cursor() as cur:
        if backend is not None:
            cur.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {same}",
                        (backend.pid, backend.started))
        while backend is not None:
            cur.execute(f"SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE {same})",
                        (backend.pid, backend.started))
            if not _one(cur):
                break
            if clock() >= deadline:
                raise CommitUnknown(f"the server process {backend.pid} that ran COMMIT is "
                                    f"still there after {timeout_s:g} s")
            sleep(0.01)
    if not schema_exists(conn):
        return False
    with conn.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM fastdowntime.applied_patch "
                    "WHERE run_id = %s AND filename = ANY(%s))", (run_id, list(filenames)))
        return bool(_one(cur))


BEGIN_SQL = ("SELECT clock_timestamp(), pg_backend_pid(), backend_start "
             "FROM pg_stat_activity WHERE pid = pg_backend_pid()")
"""The transaction's first statement: when it began, and which server process runs it."""


@dataclass(frozen=True)
class ColdStep:
    """One round trip of the cold-patch transaction, as :func:`apply_cold` sends it and a
    dry run shows it. ``kind``: ``begin``, ``statement`` (of ``patch``), ``check`` (the
    revision row of ``patch``, which closes its timing), ``record`` (the rows and
    checksums of ``patches``), ``permissions`` or ``commit``."""

    kind: str
    sql: str
    patch: ColdPatch | None = None
    line: int | None = None
    note: str = ""
    """What a dry run says of a step whose SQL it does not print (``check``, ``record``)."""
    table: str = ""
    """The revision table, as SQL text (``check`` and ``record``)."""
    patches: tuple[ColdPatch, ...] = ()
    """``record``: the patches whose rows and checksums it records, in their order."""

    @property
    def what(self) -> str:
        """What a failure names: the patch, or the part of the transaction."""
        if self.patch is not None:
            return self.patch.filename
        return "permissions" if self.kind == "permissions" else ""

    @property
    def shown(self) -> list[str]:
        """The lines a dry run prints for this step."""
        if self.kind == "statement":
            assert self.patch is not None
            return [*self._head(), f"{self.sql};"]
        if self.kind == "permissions":
            return ["-- permissions", self.sql.strip()]
        if self.kind in ("begin", "commit"):
            return [self.kind.upper()]
        return [f"-- {self.note}"]

    def review(self, timeout_ms: int) -> list[str]:
        """This step as SQL a reviewer reads and can run by hand in psql: what
        :func:`apply_cold` sends, in order, each ``begin``, ``statement`` and
        ``permissions`` step after the ``SET LOCAL statement_timeout`` it gets
        (``timeout_ms``), parameters as literals. The database's clock readings, which
        time each patch and its revision row, are kept in psql variables (``\\gset``) and
        used where the orchestrator sends the values it read (``:'name'``)."""
        timeout = f"SET LOCAL statement_timeout = {timeout_ms};"
        if self.kind == "begin":
            return ["BEGIN;", timeout, f"{self.sql} \\gset {_BEGIN_VARS}"]
        if self.kind == "statement":
            return [*self._head(), timeout, f"{self.sql};"]
        if self.kind == "check":
            return self._review_check()
        if self.kind == "record":
            return self._review_record()
        if self.kind == "permissions":
            text = self.sql.strip()
            return ["-- the permissions step", timeout, text,
                    *(() if text.endswith(";") else (";",))]
        return [f"{self.sql};"]

    @property
    def failed(self) -> str:
        """What a failure names as the statement that failed."""
        if self.kind in ("statement", "commit"):
            return self.sql
        if self.kind == "permissions":
            return "the permissions step"
        return "BEGIN" if self.kind == "begin" else self.note

    def _head(self) -> list[str]:
        """The patch's heading, before its first statement."""
        assert self.patch is not None
        if self.line != self.patch.report.statements[0].line:
            return []
        return [f"-- {self.patch.filename} ({self.patch.checksum[:12]})"]

    def _review_check(self) -> list[str]:
        assert self.patch is not None and self.patch.report.name is not None
        patch, name = self.patch, self.patch.report.name
        own = _inserts_own_row(patch, self.table)
        lines = []
        if not patch.report.statements:
            why = ("PostgreSQL's parser refuses it (a plan violation)" if not patch.report.parsed
                   else "it holds no statement")
            lines.append(f"-- {patch.filename} ({patch.checksum[:12]}): no statement shown: {why}")
        lines += [f"-- {patch.filename} done: the clock; does its row exist? (the patch "
                  f"{'inserts it' if own else 'does not insert it'})",
                  f"{self.sql % (name.major, name.minor, name.point)} \\gset {_vars(patch)}"]
        return lines

    def _review_record(self) -> list[str]:
        if not self.patches:
            return []  # no row to record: apply_cold sends nothing
        starts = [None, *self.patches[:-1]]
        timed = list(zip(self.patches, starts, strict=True))
        own = {p.filename for p in self.patches if _inserts_own_row(p, self.table)}

        def row(patch: ColdPatch) -> tuple[int, int, int]:
            assert patch.report.name is not None
            return patch.report.name.key

        inserted = [_ROW_INSERT_TEMPLATE % (*row(p), _at(s), _at(p)) for p, s in timed
                    if p.filename not in own]
        updated = [_ROW_UPDATE_TEMPLATE % (*row(p), _at(s), _at(p)) for p, s in timed
                   if p.filename in own]
        checksums = [_CHECKSUM_TEMPLATE % (_literal(p.filename), *row(p), _literal(p.checksum),
                                          f"extract(epoch FROM {_at(p)} - {_at(s)})", "NULL")
                     for p, s in timed]
        lines = [f"-- the {self.table} rows, each patch timed from the clock reading "
                 "before it to its own;",
                 "-- at run time the checks above decide: a missing row is inserted, a row "
                 "the patch inserted",
                 "-- gets its times. Here as the patches read:",
                 *(f"--   {p.filename} {'inserts' if p.filename in own else 'does not insert'} "
                   "its row" for p in self.patches)]
        if inserted:
            lines += _rows(_ROW_INSERT.format(table=self.table), inserted)
        if updated:
            lines += _rows(_ROW_UPDATE.format(table=self.table), updated)
        return [*lines, "-- each patch's checksum (its git blob id) and seconds; run_id: the "
                "run's id (NULL here)", *_rows(_CHECKSUMS, checksums)]


_BEGIN_VARS = "begin_"
"""The psql prefix of BEGIN_SQL's clock reading in a review: ``begin_clock_timestamp``."""

_ROW_INSERT = "INSERT INTO {table} (major, minor, patch, start_time, end_time) VALUES %s"
"""The revision rows the patches did not insert (``%s``: :data:`_ROW_INSERT_TEMPLATE` rows)."""
_ROW_INSERT_TEMPLATE = "(%s, %s, %s, %s AT TIME ZONE 'UTC', %s AT TIME ZONE 'UTC')"
_ROW_UPDATE = ("UPDATE {table} t SET start_time = v.s AT TIME ZONE 'UTC', "
              "end_time = v.e AT TIME ZONE 'UTC' FROM (VALUES %s) v(ma, mi, pa, s, e) "
              "WHERE t.major = v.ma AND t.minor = v.mi AND t.patch = v.pa")
"""The times of the revision rows the patches inserted themselves."""
_ROW_UPDATE_TEMPLATE = "(%s, %s, %s, %s::timestamptz, %s::timestamptz)"
_CHECKSUMS = ("INSERT INTO fastdowntime.applied_patch "
             "(filename, major, minor, point, checksum, duration_s, run_id) VALUES %s "
             "ON CONFLICT (filename) DO UPDATE SET checksum = EXCLUDED.checksum, "
             "duration_s = EXCLUDED.duration_s, run_id = EXCLUDED.run_id, "
             "applied_at = clock_timestamp()")
"""Every patch's checksum, seconds and run, for ``fastdowntime.applied_patch``."""
_CHECKSUM_TEMPLATE = "(%s, %s, %s, %s, %s, %s, %s)"


def _vars(patch: ColdPatch) -> str:
    """The psql prefix a review keeps ``patch``'s check in (``patch_2200_01_0_``)."""
    return patch.filename.removesuffix(".sql").replace("-", "_") + "_"


def _at(patch: ColdPatch | None) -> str:
    """The clock reading that ends ``patch`` (None: BEGIN's), as a review writes the value
    :func:`apply_cold` sends (psycopg2 sends a datetime as ``'...'::timestamptz``)."""
    prefix = _BEGIN_VARS if patch is None else _vars(patch)
    return f":'{prefix}clock_timestamp'::timestamptz"


def _rows(query: str, rows: Sequence[str]) -> list[str]:
    """``query`` with its ``%s`` as ``rows``, one a line, as :func:`_values` sends them (on
    one line)."""
    text = query % ("\n  " + ",\n  ".join(rows)) + ";"
    return [line.rstrip() for line in text.splitlines()]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _inserts_own_row(patch: ColdPatch, table: str) -> bool:
    """Whether a statement of ``patch`` inserts into the revision table (its own row)."""
    return any(inserts_into(s.sql, table) for s in patch.report.statements)


def cold_transaction(patches: Sequence[ColdPatch], permissions: str | None,
                     revision_table: str) -> tuple[ColdStep, ...]:
    """The cold-patch transaction, step by step: the one description :func:`apply_cold`
    executes, :func:`render_cold` shows and :func:`review_cold` writes as SQL. Each
    statement runs with ``statement_timeout`` set from what is left of the deadline."""
    table = identifier(revision_table)
    ordered = _ordered(patches)
    steps = [ColdStep("begin", BEGIN_SQL)]
    for patch in ordered:
        steps += [ColdStep("statement", s.sql, patch, s.line) for s in patch.report.statements]
        steps.append(ColdStep("check", f"SELECT clock_timestamp(), EXISTS (SELECT 1 FROM {table} "
                              "WHERE major = %s AND minor = %s AND patch = %s)", patch,
                              note=f"check or insert the {table} row of {patch.filename}",
                              table=table))
    steps.append(ColdStep("record", "", note=f"set the {table} rows' times and record the "
                          "checksums in fastdowntime.applied_patch", table=table,
                          patches=tuple(ordered)))
    if permissions:
        steps.append(ColdStep("permissions", permissions))
    steps.append(ColdStep("commit", "COMMIT"))
    return tuple(steps)


def render_cold(patches: Sequence[ColdPatch], permissions: str | None,
                revision_table: str) -> list[str]:
    """What :func:`apply_cold` sends, in order, for ``--dry-run``."""
    return [line for step in cold_transaction(patches, permissions, revision_table)
            for line in step.shown]


def review_cold(patches: Sequence[ColdPatch], permissions: str | None, revision_table: str,
                remaining_s: float) -> list[str]:
    """What :func:`apply_cold` sends, in order, as SQL for a reviewer (:meth:`ColdStep.review`),
    every statement with the ``statement_timeout`` it gets when ``remaining_s`` of the
    deadline are left (at run time, what is left when it is sent)."""
    timeout = _timeout_ms(remaining_s)
    return [line for step in cold_transaction(patches, permissions, revision_table)
            for line in step.review(timeout)]


def apply_cold(conn: Connection, patches: Sequence[ColdPatch], *, deadline: float,
               permissions: str | None = None,
               revision_table: str = "LaunchpadDatabaseRevision", run_id: str | None = None,
               clock: Callable[[], float] = time.monotonic, log: Any = None,
               on_begin: Callable[[Backend], object] | None = None,
               on_commit: Callable[[ColdResult], object] | None = None,
               commit: bool = True, lock_timeout_s: float | None = None) -> ColdResult:
    """Apply ``patches`` (numeric order) and ``permissions`` in one transaction, then COMMIT
    (``commit=False``: ROLLBACK, see :func:`orchestrator.db.trial.trial_cold`).

    ``deadline`` is an absolute ``clock()`` value. Raises ColdPatchFailed
    (rolled back) on any error or when the deadline passes before COMMIT, and
    :class:`CommitLost` when the connection breaks during COMMIT itself (never for a
    trial: it sends no COMMIT, and a connection lost at its end is a ColdPatchFailed).
    ``on_begin(backend)`` hears of the server process first (a journal keeps it, so a
    COMMIT cut off with the orchestrator can be settled by :func:`committed_by`).
    ``on_commit(result)`` hears of the COMMIT before anything else can happen: Ctrl-C,
    SIGTERM and SIGHUP are held from COMMIT until it has returned, then raised, so no
    interrupt can land between a COMMIT the server made and the caller knowing it.
    ``lock_timeout_s``: how long each statement may wait for a lock (None: until the
    deadline; the window's cut leaves nothing to wait for).
    """
    log = log or structlog.get_logger("cold")
    limits = "SET LOCAL statement_timeout = {}; "
    if lock_timeout_s is not None:
        limits += f"SET LOCAL lock_timeout = {_timeout_ms(lock_timeout_s)}; "
    steps = cold_transaction(patches, permissions, revision_table)
    ordered = _ordered(patches)
    conn.autocommit = False
    backend: Backend | None = None
    started = clock()
    timings: list[PatchTiming] = []
    current = steps[0]
    begin: datetime = datetime.min  # each patch's start, by the database's clock
    try:
        with conn.cursor() as cur:
            rows: list[tuple[Any, ...]] = []
            spent: list[float] = []
            for current in steps:
                if current.kind == "commit":
                    _ms(deadline, clock)
                    break
                if current.kind == "record":
                    _record(cur, current.table, rows, current.patches, timings, run_id)
                    continue
                if current.kind == "check":
                    patch = current.patch
                    assert patch is not None and patch.report.name is not None
                    name = patch.report.name
                    cur.execute(current.sql, (name.major, name.minor, name.point))
                    end, present = cur.fetchone()
                    rows.append((name.major, name.minor, name.point, begin, end, present))
                    duration = (end - begin).total_seconds()
                    timings.append(PatchTiming(patch.filename, duration,
                                               len(patch.report.statements), tuple(spent)))
                    spent = []
                    log.info("cold.patch", file=patch.filename, duration_s=round(duration, 6))
                    begin = end
                    continue
                sent = clock()
                cur.execute(limits.format(_ms(deadline, clock)) + current.sql)
                if current.kind == "statement":
                    spent.append(round(clock() - sent, 6))
                if current.kind == "begin":
                    begin, pid, backend_start = cur.fetchone()
                    backend = Backend(pid, backend_start)
                    if on_begin is not None:
                        on_begin(backend)
            written = () if commit else _written(cur)
        if not commit:
            conn.rollback()
            done = clock()
            log.info("cold.trial", patches=len(ordered), total_s=round(done - started, 6))
            return ColdResult(tuple(timings), done - started, done, written)
        with interrupts_held("COMMIT"):
            conn.commit()
            commit_at = clock()
            result = ColdResult(tuple(timings), commit_at - started, commit_at)
            if on_commit is not None:
                on_commit(result)
    except KeyboardInterrupt:
        rollback(conn)  # never leave the patches' locks held behind an interrupted run
        raise
    except (psycopg2.Error, _DeadlinePassed) as exc:
        rollback(conn)
        elapsed = clock() - started
        filename, line, sql = current.what, current.line, current.failed
        if not commit and current.kind == "commit":
            sql = "the trial's end (what it wrote, then ROLLBACK)"
        if isinstance(exc, _DeadlinePassed):
            raise ColdPatchFailed(filename or "cold patches", line, sql, elapsed,
                                  "deadline", deadline=True) from None
        sqlstate = getattr(exc, "pgcode", None)
        reason = error_text(exc)
        if commit and current.kind == "commit" and conn.closed and backend is not None:
            # the server may have committed before the connection broke: say so, never
            # "rolled back"
            raise CommitLost(backend, ColdResult(tuple(timings), elapsed, clock()),
                             reason) from None
        raise ColdPatchFailed(filename or "cold patches", line, sql, elapsed,
                              f"{reason} (SQLSTATE {sqlstate})", sqlstate,
                              deadline=sqlstate == QUERY_CANCELED) from None
    log.info("cold.commit", patches=len(ordered), total_s=round(result.total_s, 6))
    return result


@contextmanager
def interrupts_held(what: str) -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while the body runs; raise KeyboardInterrupt after it
    when one came (naming ``what``). In a thread other than the main one signals cannot be
    held, and none is delivered there either: the body just runs."""
    caught: list[int] = []
    previous: dict[signal.Signals, Any] = {}
    held = threading.current_thread() is threading.main_thread()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if held else ():
        previous[sig] = signal.signal(sig, lambda n, _frame: caught.append(n))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt(f"{signal.Signals(caught[0]).name} received during {what}")


def _ordered(patches: Sequence[ColdPatch]) -> list[ColdPatch]:
    """The order :func:`apply_cold` applies (and :func:`render_cold` shows) the patches."""
    return sorted(patches, key=lambda p: p.report.name.key if p.report.name else (0, 0, 0))


class _DeadlinePassed(Exception):
    pass


def _ms(deadline: float, clock: Callable[[], float]) -> int:
    remaining = deadline - clock()
    if remaining <= 0:
        raise _DeadlinePassed
    return _timeout_ms(remaining)


def _timeout_ms(remaining_s: float) -> int:
    """The ``statement_timeout`` a statement gets with ``remaining_s`` of the deadline left."""
    return max(1, int(remaining_s * 1000))


def _written(cur: Any) -> tuple[int, ...]:
    """The tables this transaction has written rows to so far."""
    cur.execute("SELECT relid FROM pg_stat_xact_user_tables "
                "WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY relid")
    return tuple(int(oid) for (oid,) in cur.fetchall())


def _one(cur: Any) -> Any:
    row = cur.fetchone()
    return row[0]


def _record(cur: Any, table: str, rows: list[tuple[Any, ...]], patches: Sequence[ColdPatch],
            timings: Sequence[PatchTiming], run_id: str | None) -> None:
    """Insert missing revision rows, set every row's times, and store the checksums, in one
    round trip (each costs the held requests a few milliseconds more under load)."""
    missing = [r[:5] for r in rows if not r[5]]
    present = [r[:5] for r in rows if r[5]]
    checksums = [(p.filename, p.report.name.major, p.report.name.minor, p.report.name.point,  # type: ignore[union-attr]
                  p.checksum, t.duration_s, run_id)
                 for p, t in zip(patches, timings, strict=True)]
    statements = [_values(cur, query, template, values) for query, template, values in (
        (_ROW_INSERT.format(table=table), _ROW_INSERT_TEMPLATE, missing),
        (_ROW_UPDATE.format(table=table), _ROW_UPDATE_TEMPLATE, present),
        (_CHECKSUMS, _CHECKSUM_TEMPLATE, checksums)) if values]
    if statements:
        cur.execute(b";\n".join(statements))


def _values(cur: Any, query: str, template: str, rows: Sequence[tuple[Any, ...]]) -> bytes:
    """``query`` with its one ``%s`` as ``rows`` through ``template``, each quoted by the
    connection, in the connection's encoding. ``query`` holds no other ``%`` (its table
    name is an :func:`~orchestrator.db.schema.identifier`: letters, digits, ``_``)."""
    encoding = psycopg2.extensions.encodings[cur.connection.encoding]
    return query.encode(encoding) % b",".join(cur.mogrify(template, row) for row in rows)


def error_text(exc: BaseException) -> str:
    """The server's message of a psycopg2 error (else the error's own), on one line."""
    return " ".join(str(getattr(exc, "pgerror", None) or exc).split())


def rollback(conn: Connection) -> None:
    """Roll ``conn`` back if it is open; a failure to is logged (the server ends the
    transaction with the connection anyway)."""
    if conn.closed:
        return
    try:
        conn.rollback()
    except psycopg2.Error as exc:
        structlog.get_logger("cold").error("cold.rollback_failed", error=str(exc))

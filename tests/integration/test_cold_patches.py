"""Cold patches against the real primary: one transaction, a deadline, nothing half-done."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import psycopg2
import psycopg2.extensions
import pytest

from orchestrator.config import DatabaseSettings
from orchestrator.db.cold import (
    Backend,
    ColdPatch,
    ColdPatchFailed,
    CommitLost,
    apply_cold,
    committed_by,
    render_cold,
)
from orchestrator.db.connect import DatabaseUnreachable, connect
from orchestrator.db.schema import ensure_schema
from orchestrator.db.trial import trial_cold, vacuum, warm_cold
from orchestrator.errors import FailedBeforeCommit
from orchestrator.history.git import blob_sha
from orchestrator.patches import analyse
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PRIMARY_PORT

pytestmark = pytest.mark.integration


def cold(name: str, text: str) -> ColdPatch:
    return ColdPatch(analyse(name, text), text, blob_sha(text.encode()))


def columns(settings: DatabaseSettings, table: str = "item") -> set[str]:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                    (table,))
        out = {row[0] for row in cur.fetchall()}
    conn.close()
    return out


def revisions(settings: DatabaseSettings) -> list[tuple[int, int, int, bool]]:
    conn = connect(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT major, minor, patch, end_time IS NOT NULL "
                    "FROM LaunchpadDatabaseRevision ORDER BY 1, 2, 3")
        out = cur.fetchall()
    conn.close()
    return out


@pytest.fixture
def conn(scratch_db: DatabaseSettings):  # type: ignore[no-untyped-def]
    conn = connect(scratch_db)
    ensure_schema(conn)
    yield conn
    conn.close()


def test_patches_and_permissions_commit_together(scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """Patches apply in numeric order, rows are checked or inserted, checksums are stored."""
    patches = [
        cold("patch-2200-10-0.sql", "ALTER TABLE item ADD COLUMN later text;\n"),
        cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN note text;\n"
             "UPDATE item SET note = 'n';\n"
             "INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 9, 0);\n"),
    ]
    result = apply_cold(conn, patches, deadline=time.monotonic() + 10,
                        permissions="GRANT SELECT ON item TO fragile;", run_id="test-run")
    assert [t.filename for t in result.timings] == ["patch-2200-09-0.sql", "patch-2200-10-0.sql"]
    assert all(t.duration_s >= 0 for t in result.timings)
    assert {"note", "later"} <= columns(scratch_db)
    assert revisions(scratch_db) == [(2200, 0, 0, False), (2200, 9, 0, True), (2200, 10, 0, True)]
    with conn.cursor() as cur:
        cur.execute("SELECT filename, checksum, run_id FROM fastdowntime.applied_patch "
                    "ORDER BY filename")
        assert cur.fetchall() == [(p.filename, p.checksum, "test-run") for p in reversed(patches)]
        cur.execute("SELECT has_table_privilege('fragile', 'item', 'SELECT')")
        assert cur.fetchone()[0] is True


def test_warm_up_reads_and_leaves_nothing(scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """Before the window, the cold transaction's reads run once and roll back: no row, no
    open transaction, no lock; a revision table that is not there fails it before the
    window, as it would fail the window."""
    patches = [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN note text;\n")]
    warm_cold(conn, patches, "LaunchpadDatabaseRevision")
    assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert revisions(scratch_db) == [(2200, 0, 0, False)]
    assert "note" not in columns(scratch_db)
    with pytest.raises(FailedBeforeCommit, match='warming the primary.*"nosuchrevisiontable" '
                       'does not exist'):
        warm_cold(conn, patches, "NoSuchRevisionTable")
    assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    with conn.cursor() as cur:
        cur.execute("SELECT 1")  # a transaction of someone else's: not warm_cold's to end
    with pytest.raises(FailedBeforeCommit, match="in a transaction already"):
        warm_cold(conn, patches, "LaunchpadDatabaseRevision")
    conn.rollback()
    result = apply_cold(conn, patches, deadline=time.monotonic() + 10, run_id="warmed")
    assert [t.filename for t in result.timings] == ["patch-2200-09-0.sql"]
    assert revisions(scratch_db) == [(2200, 0, 0, False), (2200, 9, 0, True)]


def test_trial_times_everything_and_leaves_the_tables_as_they_were(
        scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """A rehearsal's trial runs the whole transaction, times each patch and statement and
    rolls back: no column, no row, no table, no open transaction. The rows its UPDATE wrote
    are dead after the rollback and doubled the table: it is vacuumed back to its size, so
    the window that follows scans what the trial scanned."""
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE bulk WITH (autovacuum_enabled = off) AS "  # ours to vacuum
                    "SELECT g FROM generate_series(1, 20000) AS g")
    conn.commit()

    def pages() -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_relation_size('bulk') / current_setting('block_size')::int")
            (count,) = cur.fetchone()
        conn.rollback()
        return int(count)

    before = pages()
    patches = [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN note text;\n"
                    "UPDATE bulk SET g = g + 1;\n"),
               cold("patch-2200-10-0.sql", "CREATE TABLE tag (id int);\n"
                    "INSERT INTO tag VALUES (1);\n")]
    trial = trial_cold(conn, patches, deadline=time.monotonic() + 10, lock_timeout_s=1)
    result = trial.result
    assert [(t.filename, t.statements, len(t.statement_s)) for t in result.timings] == [
        ("patch-2200-09-0.sql", 2, 2), ("patch-2200-10-0.sql", 2, 2)]
    assert all(t.duration_s > 0 for t in result.timings)
    assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    assert conn.autocommit is False
    assert "note" not in columns(scratch_db)
    assert revisions(scratch_db) == [(2200, 0, 0, False)]
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('tag') IS NULL, count(*) FROM fastdowntime.applied_patch")
        assert cur.fetchone() == (True, 0)
        cur.execute("SELECT 'bulk'::regclass::oid")
        (bulk,) = cur.fetchone()
    conn.rollback()
    assert bulk in result.written  # the UPDATE's rows: dead once rolled back
    assert "public.bulk" in trial.vacuumed.tables and trial.vacuumed.left == ()
    assert pages() == before, "the rolled-back UPDATE's pages were not vacuumed away"
    # the window's run after it commits as before
    done = apply_cold(conn, patches, deadline=time.monotonic() + 10, run_id="after-trial")
    assert [t.filename for t in done.timings] == ["patch-2200-09-0.sql", "patch-2200-10-0.sql"]
    assert "note" in columns(scratch_db)


def test_trial_waits_for_users_locks_no_longer_than_lock_timeout(
        scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """Outside the window users hold locks: a trial waits lock_timeout_s for them, then
    fails with SQLSTATE 55P03, rolled back (the rehearsal skips that trial)."""
    user = connect(scratch_db)
    try:
        with user.cursor() as cur:
            cur.execute("SELECT count(*) FROM item")  # holds ACCESS SHARE until it ends
        started = time.monotonic()
        with pytest.raises(ColdPatchFailed) as caught:
            trial_cold(conn, [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN n int;\n")],
                       deadline=started + 10, lock_timeout_s=0.2)
        assert caught.value.sqlstate == "55P03", caught.value
        assert time.monotonic() - started < 2
    finally:
        user.close()
    assert "n" not in columns(scratch_db)
    assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def test_a_failed_trial_still_vacuums_what_it_may_have_written(
        scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """A trial failing in its second patch cannot say what it wrote (the transaction is
    aborted): every table its patches name is vacuumed, so the first patch's rolled-back
    UPDATE does not double the table the next run scans."""
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE bulk WITH (autovacuum_enabled = off) AS "  # ours to vacuum
                    "SELECT g FROM generate_series(1, 20000) AS g")
        cur.execute("SELECT pg_relation_size('bulk')")
        (before,) = cur.fetchone()
    conn.commit()
    patches = [cold("patch-2200-09-0.sql", "UPDATE bulk SET g = g + 1;\n"),
               cold("patch-2200-10-0.sql", "ALTER TABLE nosuchtable ADD COLUMN y int;\n")]
    with pytest.raises(ColdPatchFailed) as caught:
        trial_cold(conn, patches, deadline=time.monotonic() + 10)
    assert caught.value.sqlstate == "42P01" and caught.value.filename == "patch-2200-10-0.sql"
    with conn.cursor() as cur:
        cur.execute("SELECT pg_relation_size('bulk')")
        assert cur.fetchone() == (before,)
    conn.rollback()


def test_vacuum_leaves_a_locked_table_and_says_why(scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """A table users hold locked is skipped, not waited for; a name that is not a table is
    nothing to vacuum; the connection is left in its mode."""
    user = connect(scratch_db)
    try:
        with user.cursor() as cur:
            cur.execute("LOCK TABLE item IN SHARE UPDATE EXCLUSIVE MODE")
        started = time.monotonic()
        done = vacuum(conn, ["item", "LaunchpadDatabaseRevision", "nosuchtable"], timeout_s=5)
        assert time.monotonic() - started < 2
    finally:
        user.close()
    assert done.tables == ("public.launchpaddatabaserevision",)
    assert len(done.left) == 1 and done.left[0].startswith("public.item: ")
    assert "lock not available" in done.left[0]
    assert conn.autocommit is False
    with conn.cursor() as cur:
        cur.execute("SHOW statement_timeout")  # the window's connection keeps its own
        assert cur.fetchone() == ("0",)
    conn.rollback()


def test_a_connection_lost_at_a_trials_end_is_no_commit(
        scratch_db: DatabaseSettings, conn, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A trial sends no COMMIT: losing the connection at its end is a failed trial naming
    its end, never "COMMIT may have happened"."""
    from orchestrator.db import cold as cold_module

    def lost(cur):  # type: ignore[no-untyped-def]
        cur.connection.close()
        raise psycopg2.InterfaceError("connection already closed")

    monkeypatch.setattr(cold_module, "_written", lost)
    with pytest.raises(ColdPatchFailed) as caught:
        trial_cold(conn, [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN n int;\n")],
                   deadline=time.monotonic() + 10)
    assert not isinstance(caught.value, CommitLost)
    assert "trial's end" in str(caught.value), caught.value
    assert "n" not in columns(scratch_db)


def test_failure_halfway_rolls_everything_back(scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """A statement failing in the second patch leaves no trace of the first: nothing changed."""
    before = columns(scratch_db)
    patches = [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN note text;\n"),
               cold("patch-2200-10-0.sql", "-- two statements\nALTER TABLE item ADD COLUMN x int;"
                    "\nALTER TABLE nosuchtable ADD COLUMN y int;\n")]
    with pytest.raises(ColdPatchFailed) as caught:
        apply_cold(conn, patches, deadline=time.monotonic() + 10)
    error = caught.value
    assert error.filename == "patch-2200-10-0.sql" and error.line == 3
    assert "nosuchtable" in str(error) and error.sqlstate == "42P01"
    assert "rolled back" in str(error) and error.exit_code == 1
    assert columns(scratch_db) == before
    assert revisions(scratch_db) == [(2200, 0, 0, False)]


def test_slow_patch_is_cut_at_the_deadline(scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """pg_sleep(10) with a 2 s deadline is rolled back within 2.5 s; the schema is unchanged."""
    before = columns(scratch_db)
    patches = [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN note text;\n"
                    "SELECT pg_sleep(10);\n")]
    started = time.monotonic()
    with pytest.raises(ColdPatchFailed) as caught:
        apply_cold(conn, patches, deadline=started + 2)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"took {elapsed:.3f} s"
    assert caught.value.deadline and "deadline" in str(caught.value)
    assert caught.value.line == 2
    assert columns(scratch_db) == before
    assert revisions(scratch_db) == [(2200, 0, 0, False)]


def test_deadline_already_passed_runs_nothing(scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """With no time left, nothing is sent and the error says the deadline passed."""
    with pytest.raises(ColdPatchFailed, match="deadline"):
        apply_cold(conn, [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN n int;\n")],
                   deadline=time.monotonic() - 1)
    assert "n" not in columns(scratch_db)


def test_missing_revision_table_is_named(scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """A revision table that does not exist fails the transaction, naming it."""
    with pytest.raises(ColdPatchFailed, match="nosuch_revision") as caught:
        apply_cold(conn, [cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN n int;\n")],
                   deadline=time.monotonic() + 5, revision_table="nosuch_revision")
    assert caught.value.filename == "patch-2200-09-0.sql"
    assert "n" not in columns(scratch_db)


def test_render_lists_the_sql(conn) -> None:  # type: ignore[no-untyped-def]
    """The dry-run rendering shows every statement between BEGIN and COMMIT."""
    lines = render_cold([cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN n int;\n")],
                        "GRANT SELECT ON item TO app;", "LaunchpadDatabaseRevision")
    assert lines[0] == "BEGIN" and lines[-1] == "COMMIT"
    assert "ALTER TABLE item ADD COLUMN n int;" in lines


def test_unreachable_and_wrong_password_name_host_not_password(
        scratch_db: DatabaseSettings, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Connection failures name host and port, exit 3, and never show the password."""
    import dataclasses

    nowhere = dataclasses.replace(scratch_db, dsn="host=127.0.0.1 port=1 dbname=app user=x")
    with pytest.raises(DatabaseUnreachable) as caught:
        connect(nowhere)
    assert "127.0.0.1:1" in str(caught.value) and caught.value.exit_code == 3
    monkeypatch.setenv("PGPASSWORD", "not-the-password-x9")
    wrong = dataclasses.replace(scratch_db, passfile=str(tmp_path / "empty"))
    (tmp_path / "empty").write_text("")
    with pytest.raises(DatabaseUnreachable) as caught:
        connect(wrong)
    assert "127.0.0.1:15432" in str(caught.value)
    assert "password authentication failed" in str(caught.value)
    assert "not-the-password-x9" not in str(caught.value)


class CommitCutter:
    """A TCP proxy to the primary that breaks the connection at its COMMIT: ``before`` the
    server gets it, ``after`` it (the server committed, its answer never arrives), or
    ``silent``ly: COMMIT never arrives and the server is not told the client is gone (a
    half-open connection, as a dead network leaves it)."""

    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"

    def __init__(self, drop: str) -> None:
        self.drop = drop
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent_commit = threading.Event()
        self.sockets: list[socket.socket] = []

    def __enter__(self) -> CommitCutter:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return  # closed before anyone connected
        server = socket.create_connection(("127.0.0.1", PRIMARY_PORT))
        self.sockets += [client, server]
        for source, sink, upstream in ((client, server, True), (server, client, False)):
            threading.Thread(target=self._pump, args=(source, sink, upstream), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while data := source.recv(65536):
                if upstream and self.COMMIT in data:
                    if self.drop != "after":
                        break
                    self.sent_commit.set()  # before the server can answer it
                    sink.sendall(data)
                    continue
                if not upstream and self.sent_commit.is_set():
                    break  # the server's answer to COMMIT: dropped with the connection
                sink.sendall(data)
        except OSError:
            return  # the other direction has closed both sockets already
        # silent: only the client hears of the break; the server's side stays open
        for sock in (source,) if self.drop == "silent" else (source, sink):
            with contextlib.suppress(OSError):  # not connected any more
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.parametrize("drop", ["before", "after", "silent"])
def test_connection_lost_at_commit_is_settled_by_asking_the_database(
        sandbox: Context, scratch_db: DatabaseSettings, conn, drop: str) -> None:  # type: ignore[no-untyped-def]
    """A connection lost during COMMIT is never reported as a rollback: it may have
    committed. Asked on a new connection once the old server process is gone (ended if
    it still waits on a half-open connection), the database says which: committed when
    only the answer was lost, not when COMMIT never arrived."""
    patch = cold("patch-2200-09-0.sql", "ALTER TABLE item ADD COLUMN note text;\n")
    conn.autocommit = True
    with CommitCutter(drop) as cutter:
        via = psycopg2.connect(scratch_db.dsn.replace(f"port={PRIMARY_PORT}",
                                                      f"port={cutter.port}") + " sslmode=disable",
                               password=sandbox.passwords["fdt_admin"])
        try:
            with pytest.raises(CommitLost) as lost:
                apply_cold(via, [patch], deadline=time.monotonic() + 10, run_id="lost-run")
        finally:
            via.close()
        started = time.monotonic()
        committed = committed_by(conn, "lost-run", [patch.filename],
                                 backend=lost.value.backend, timeout_s=5)
        assert time.monotonic() - started < 2
    assert "lost during COMMIT" in str(lost.value) and "may have committed" in str(lost.value)
    assert [t.filename for t in lost.value.result.timings] == [patch.filename]
    assert committed is (drop == "after")
    assert ("note" in columns(scratch_db)) is committed
    assert committed_by(conn, "another-run", [patch.filename]) is False


def test_settling_never_ends_a_process_that_only_shares_the_pid(
        scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """A journal's backend whose pid now belongs to another session (same user) is gone:
    that session is left alone and the answer comes at once."""
    conn.autocommit = True
    other = connect(scratch_db, autocommit=True)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), backend_start - interval '1 hour' "
                        "FROM pg_stat_activity WHERE pid = pg_backend_pid()")
            pid, earlier = cur.fetchone()
        started = time.monotonic()
        assert committed_by(conn, "lost-run", ["patch-2200-09-0.sql"],
                            backend=Backend(pid, earlier), timeout_s=5) is False
        assert time.monotonic() - started < 1
        with other.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        other.close()


class InterruptedAtCommit:
    """The primary's connection, but Ctrl-C arrives the instant COMMIT returns."""

    def __init__(self, conn: psycopg2.extensions.connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: object) -> None:
        if name == "_conn":
            object.__setattr__(self, name, value)
        else:
            setattr(self._conn, name, value)

    def commit(self) -> None:
        self._conn.commit()
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_during_commit_is_never_a_rollback(scratch_db: DatabaseSettings, conn) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C that lands as COMMIT returns is held until the caller has heard of the COMMIT
    (on_commit), then raised: the run can never report a rollback of committed patches."""
    heard = []
    patch = cold("patch-2200-11-0.sql", "ALTER TABLE item ADD COLUMN eleven text;\n")
    with pytest.raises(KeyboardInterrupt, match="SIGINT received during COMMIT"):
        apply_cold(InterruptedAtCommit(conn), [patch],  # type: ignore[arg-type]
                   deadline=time.monotonic() + 10, run_id="test-run",
                   on_commit=lambda result: heard.append(result))
    assert len(heard) == 1 and heard[0].timings[0].filename == "patch-2200-11-0.sql"
    assert "eleven" in columns(scratch_db)
    assert (2200, 11, 0, True) in revisions(scratch_db)

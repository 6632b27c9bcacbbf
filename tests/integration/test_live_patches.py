"""Live patches against the sandbox primary: lock waits, invalid indexes, CONCURRENTLY, resume.

Every test works on its own tables (``fdt_live_test_*``) and patch numbers
(``9901-*``) in the sample database and removes them, their revision rows and
their ``fastdowntime`` rows afterwards; the sample app's tables are not touched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg2
import pytest
from structlog.testing import capture_logs

from orchestrator.config import DatabaseSettings, load_config
from orchestrator.db.connect import Connection, connect
from orchestrator.db.live import LivePatchFailed, LiveResult, apply_live
from orchestrator.errors import ExitCode
from orchestrator.history.git import blob_sha
from orchestrator.patches import analyse, parse_name
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PROJECT_ROOT

pytestmark = pytest.mark.integration

WAIT_S = 30.0
"""Upper bound for anything a test waits for; reached only when something is broken."""
_SLACK = timedelta(seconds=2)
"""Clock difference allowed between this process and the server (same host)."""


@dataclass
class Scratch:
    """The database settings, and what a test created there, to remove afterwards."""

    settings: DatabaseSettings
    tables: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    session: Connection | None = None

    def connect(self, *, autocommit: bool = True) -> Connection:
        conn = connect(self.settings, autocommit=autocommit, application_name="fdt_live_test")
        self.connections.append(conn)
        return conn

    def table(self, name: str, ddl: str) -> str:
        """Create ``fdt_live_test_<name>`` with ``ddl`` (``{t}`` is the table's name)."""
        table = f"fdt_live_test_{name}"
        self.tables.append(table)
        self.execute(f"DROP TABLE IF EXISTS {table} CASCADE; " + ddl.format(t=table))
        return table

    def patch(self, filename: str, text: str) -> tuple[Any, str]:
        self.files.append(filename)
        return analyse(filename, text, revision_table=self.settings.revision_table), text

    def apply(self, filename: str, text: str, **kwargs: Any) -> LiveResult:
        report, text = self.patch(filename, text)
        kwargs.setdefault("revision_table", self.settings.revision_table)
        return apply_live(self.connect(), report, text, **kwargs)

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run ``query`` in autocommit on the scratch's own session; its rows, if any."""
        if self.session is None or self.session.closed:
            self.session = self.connect()
        with self.session.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def index_valid(self, name: str) -> bool | None:
        rows = self.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c"
                            " ON c.oid = i.indexrelid WHERE c.relname = %s", (name,))
        return rows[0][0] if rows else None

    def revision_rows(self, key: tuple[int, int, int]) -> list[tuple[Any, ...]]:
        return self.execute("SELECT start_time, end_time FROM LaunchpadDatabaseRevision"
                            " WHERE (major, minor, patch) = (%s, %s, %s)", key)

    def clean(self) -> None:
        """Close every connection (ending their transactions), then drop and delete."""
        for conn in self.connections:
            conn.close()
        self.connections.clear()
        try:
            for table in self.tables:
                self.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            for file in self.files:
                self.execute("DELETE FROM LaunchpadDatabaseRevision"
                             " WHERE (major, minor, patch) = (%s, %s, %s)", parse_name(file).key)
                self.execute("DELETE FROM fastdowntime.applied_patch WHERE filename = %s",
                             (file,))
                self.execute("DELETE FROM fastdowntime.live_progress WHERE filename = %s",
                             (file,))
        finally:
            for conn in self.connections:
                conn.close()


@pytest.fixture
def scratch(sandbox: Context) -> Iterator[Scratch]:
    """A Scratch on the sandbox primary as fdt_admin; everything it made is removed after."""
    settings = load_config(PROJECT_ROOT / "config" / "sandbox.toml").database
    assert settings is not None
    scratch = Scratch(settings)
    try:
        yield scratch
    finally:
        scratch.clean()


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_index_build_waits_out_a_lock_and_then_succeeds(scratch: Scratch) -> None:
    """A live index build retries while another session holds a conflicting lock, then builds."""
    table = scratch.table("wait", "CREATE TABLE {t} (id integer, name text);"
                          " INSERT INTO {t} SELECT i, 'n' || i FROM generate_series(1, 9) i")
    holder = scratch.connect(autocommit=False)
    with holder.cursor() as cur:
        cur.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    release = threading.Timer(1.5, holder.rollback)
    release.start()
    try:
        with capture_logs() as logs:
            result = scratch.apply(
                "patch-9901-1-0.sql",
                f"CREATE INDEX CONCURRENTLY {table}__name__idx ON {table} (name);\n",
                lock_timeout_s=0.2, retries=20, backoff_s=0.1)
    finally:
        release.cancel()
        release.join()
    assert result.retries >= 1
    assert result.statements_run == 1 and not result.skipped
    assert scratch.index_valid(f"{table}__name__idx") is True
    waits = events(logs, "live.lock_timeout")
    assert waits and all(w["tables"] == [table] for w in waits)
    assert scratch.revision_rows((9901, 1, 0))


def test_invalid_index_is_dropped_and_built_again(scratch: Scratch) -> None:
    """An INVALID index left by a failed concurrent build is dropped and rebuilt, ending valid."""
    table = scratch.table("invalid", "CREATE TABLE {t} (id integer, code integer);"
                                     " INSERT INTO {t} VALUES (1, 1), (2, 1), (3, 3)")
    index = f"{table}__code__key"
    with pytest.raises(psycopg2.errors.UniqueViolation):
        scratch.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON {table} (code)")
    assert scratch.index_valid(index) is False
    scratch.execute(f"DELETE FROM {table} WHERE id = 2")

    with capture_logs() as logs:
        result = scratch.apply(
            "patch-9901-2-0.sql",
            f"-- fastdowntime: live\nCREATE UNIQUE INDEX {index} ON {table} (code);\n")
    assert result.rebuilt_indexes == (f"public.{index}",)
    assert scratch.index_valid(index) is True
    assert [e["index"] for e in events(logs, "live.invalid_index")] == [f"public.{index}"]


def test_plain_create_index_runs_concurrently(scratch: Scratch) -> None:
    """A plain CREATE INDEX on an existing table builds CONCURRENTLY: writers are never queued."""
    # A writer holds an open INSERT transaction. The build takes SHARE UPDATE
    # EXCLUSIVE (a plain CREATE INDEX would queue for SHARE) and, while it waits
    # for the writer, another session still inserts at once.
    table = scratch.table("concurrent", "CREATE TABLE {t} (id integer, name text);"
                                        " INSERT INTO {t} VALUES (1, 'one')")
    writer = scratch.connect(autocommit=False)
    with writer.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (2, 'two')")
    applier = scratch.connect()
    report, text = scratch.patch("patch-9901-3-0.sql",
                                 f"CREATE INDEX {table}__name__idx ON {table} (name);\n")
    assert report.statements[0].blocking  # as written, it would block writers

    def build() -> LiveResult:
        return apply_live(applier, report, text, lock_timeout_s=1.0, retries=100,
                          backoff_s=0.02)

    with capture_logs() as logs, ThreadPoolExecutor(1) as pool:
        running = pool.submit(build)
        try:
            assert _wait_for_lock(scratch, applier.get_backend_pid(), table,
                                  "ShareUpdateExclusiveLock"), "the build never took its lock"
            other = scratch.connect()
            with other.cursor() as cur:
                cur.execute("SET lock_timeout = '200ms'")
                cur.execute(f"INSERT INTO {table} VALUES (3, 'three')")
        finally:
            writer.commit()
        result = running.result(timeout=WAIT_S)
    assert result.statements_run == 1
    assert scratch.index_valid(f"{table}__name__idx") is True
    (statement,) = events(logs, "live.statement")
    assert statement["index_concurrently"] is True and statement["rewritten"] is True


def _wait_for_lock(scratch: Scratch, pid: int, table: str, mode: str) -> bool:
    """Poll pg_locks (a readiness check, with a deadline) until ``pid`` holds ``mode`` on table."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        held = scratch.execute("SELECT 1 FROM pg_locks WHERE pid = %s AND granted"
                               " AND relation = %s::regclass AND mode = %s", (pid, table, mode))
        if held:
            return True
        time.sleep(0.01)
    return False


def test_rerun_skips_an_applied_patch(scratch: Scratch) -> None:
    """A patch applied again runs nothing and is skipped, however the revision table is spelled."""
    table = "fdt_live_test_rerun"
    scratch.tables.append(table)
    text = f"CREATE TABLE {table} (id integer);\n"
    first = scratch.apply("patch-9901-4-0.sql", text)
    again = scratch.apply("patch-9901-4-0.sql", text,
                          revision_table="public.LAUNCHPADDATABASEREVISION")
    assert (first.skipped, first.statements_run) == (False, 1)
    assert (again.skipped, again.statements_run, again.statements_skipped) == (True, 0, 0)
    assert len(scratch.revision_rows((9901, 4, 0))) == 1


def test_half_applied_patch_resumes(scratch: Scratch) -> None:
    """Statements recorded done by an interrupted run are skipped; the rest run; progress ends."""
    first, second = "fdt_live_test_resume_a", "fdt_live_test_resume_b"
    scratch.tables += [first, second]
    file = "patch-9901-5-0.sql"
    text = (f"CREATE TABLE {first} (id integer);\n"
            f"CREATE INDEX {first}__id__idx ON {first} (id);\n"
            f"CREATE TABLE {second} (id integer);\n")
    scratch.execute(f"CREATE TABLE {first} (id integer)")
    scratch.execute(f"CREATE INDEX {first}__id__idx ON {first} (id)")
    scratch.execute("INSERT INTO fastdowntime.live_progress (filename, checksum, statement)"
                    " VALUES (%s, %s, 1), (%s, %s, 2)",
                    (file, blob_sha(text.encode()), file, blob_sha(text.encode())))

    result = scratch.apply(file, text)
    assert (result.statements_skipped, result.statements_run) == (2, 1)
    assert scratch.execute("SELECT to_regclass(%s) IS NOT NULL", (second,)) == [(True,)]
    assert scratch.execute("SELECT count(*) FROM fastdowntime.live_progress"
                           " WHERE filename = %s", (file,)) == [(0,)]
    assert scratch.execute("SELECT checksum FROM fastdowntime.applied_patch"
                           " WHERE filename = %s", (file,)) == [(blob_sha(text.encode()),)]


def test_failing_statement_names_file_line_and_sqlstate(scratch: Scratch) -> None:
    """An error stops the patch with file, line and SQLSTATE, and writes no revision row."""
    scratch.tables.append("fdt_live_test_fail")
    text = ("CREATE TABLE fdt_live_test_fail (id integer);\n"
            "\n"
            "CREATE INDEX fdt_live_test_fail__idx ON fdt_live_test_no_such_table (id);\n")
    with pytest.raises(LivePatchFailed) as caught:
        scratch.apply("patch-9901-6-0.sql", text)
    error = caught.value
    assert (error.file, error.line, error.sqlstate) == ("patch-9901-6-0.sql", 3, "42P01")
    assert "fdt_live_test_no_such_table" in error.pg_message
    assert "patch-9901-6-0.sql line 3" in str(error) and "SQLSTATE 42P01" in str(error)
    assert error.exit_code == ExitCode.FAILED_BEFORE_COMMIT
    assert scratch.revision_rows((9901, 6, 0)) == []
    assert scratch.execute("SELECT 1 FROM fastdowntime.applied_patch WHERE filename = %s",
                           ("patch-9901-6-0.sql",)) == []


def test_revision_row_is_inserted_when_the_patch_lacks_it(scratch: Scratch) -> None:
    """Without its own INSERT the patch gets a row with UTC start and end times."""
    scratch.tables.append("fdt_live_test_row")
    before = scratch.execute("SELECT now() AT TIME ZONE 'UTC'")[0][0]
    result = scratch.apply("patch-9901-7-0.sql", "CREATE TABLE fdt_live_test_row (id integer);\n",
                           run_id="run-live-test")
    after = scratch.execute("SELECT clock_timestamp() AT TIME ZONE 'UTC'")[0][0]
    ((start, end),) = scratch.revision_rows((9901, 7, 0))
    assert before - _SLACK <= start <= end <= after + _SLACK
    ((run_id, duration),) = scratch.execute(
        "SELECT run_id, duration_s FROM fastdowntime.applied_patch WHERE filename = %s",
        ("patch-9901-7-0.sql",))
    assert run_id == "run-live-test" and duration == pytest.approx(result.duration_s, abs=0.5)


def test_revision_row_written_by_the_patch_is_not_doubled(scratch: Scratch) -> None:
    """A patch that inserts its own revision row keeps exactly that row."""
    scratch.tables.append("fdt_live_test_own_row")
    text = ("CREATE TABLE fdt_live_test_own_row (id integer);\n"
            "INSERT INTO LaunchpadDatabaseRevision VALUES (9901, 8, 0);\n")
    result = scratch.apply("patch-9901-8-0.sql", text)
    assert result.statements_run == 2
    rows = scratch.revision_rows((9901, 8, 0))
    assert len(rows) == 1 and rows[0][1] is None  # the patch's row, not ours (ours has end_time)


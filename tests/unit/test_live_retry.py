"""apply_live against a fake connection: lock-timeout retries, backoff, errors, what is sent."""

from __future__ import annotations

from typing import Any

import psycopg2.errors
import pytest
from psycopg2 import sql
from structlog.testing import capture_logs

from orchestrator.db.live import LivePatchFailed, apply_live
from orchestrator.errors import BadInput, ExitCode, FailedBeforeCommit
from orchestrator.patches import analyse

FILE = "patch-9901-01-0.sql"
PATCH = """\
CREATE TABLE fresh (id integer PRIMARY KEY, name text);
CREATE INDEX fresh__name__idx ON fresh (name);
CREATE INDEX item__name__idx ON item (name);
"""


def render(query: Any) -> str:
    """psycopg2.sql objects as text, without the real connection as_string() needs."""
    if isinstance(query, str):
        return query
    if isinstance(query, sql.Composed):
        return "".join(render(part) for part in query.seq)
    if isinstance(query, sql.SQL):
        return query.string
    if isinstance(query, sql.Identifier):
        return ".".join(f'"{s}"' for s in query.strings)
    if isinstance(query, sql.Literal):
        return repr(query.wrapped)
    raise TypeError(query)


class FakeConnection:
    """Records every statement; raises ``errors[needle]`` (a list, used up in order) on a
    statement containing ``needle``; knows whether the revision row was inserted."""

    def __init__(self, errors: dict[str, list[Exception]] | None = None) -> None:
        self.errors = errors or {}
        self.sent: list[str] = []
        self.autocommit = False
        self.closed = False
        self.revision_row = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        self.sent.append("COMMIT")

    def rollback(self) -> None:
        self.sent.append("ROLLBACK")


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.last = ""

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, query: Any, params: Any = None) -> None:
        text = render(query)
        self.conn.sent.append(text)
        self.last = text
        for needle, pending in self.conn.errors.items():
            if needle in text and pending:
                raise pending.pop(0)
        if text.lower().startswith("insert into launchpaddatabaserevision"):
            self.conn.revision_row = True

    def fetchone(self) -> tuple[int] | None:
        if "launchpaddatabaserevision" in self.last.lower() and self.conn.revision_row:
            return (1,)
        return None

    def fetchall(self) -> list[Any]:
        return []


def lock_timeout() -> Exception:
    return psycopg2.errors.LockNotAvailable("canceling statement due to lock timeout")


def apply(conn: FakeConnection, sleeps: list[float], **kwargs: Any) -> Any:
    report = analyse(FILE, PATCH)
    return apply_live(conn, report, PATCH, sleep=sleeps.append, **kwargs)


def test_lock_timeouts_are_retried_with_exponential_backoff() -> None:
    """Two lock timeouts, then success: sleeps are backoff_s, 2*backoff_s; retries counted."""
    conn = FakeConnection({"ON item": [lock_timeout(), lock_timeout()]})
    sleeps: list[float] = []
    result = apply(conn, sleeps, backoff_s=0.25, retries=5)
    assert sleeps == [0.25, 0.5]
    assert result.retries == 2
    assert result.statements_run == 3
    assert conn.revision_row
    assert sum("CREATE INDEX CONCURRENTLY item__name__idx ON item" in s for s in conn.sent) == 3


def test_retries_exhausted_name_the_tables_and_the_waits() -> None:
    """After `retries` retries LivePatchFailed says it waited retries+1 times on the table."""
    conn = FakeConnection({"ON item": [lock_timeout() for _ in range(10)]})
    sleeps: list[float] = []
    with pytest.raises(LivePatchFailed) as caught:
        apply(conn, sleeps, backoff_s=1.0, retries=3)
    error = caught.value
    assert sleeps == [1.0, 2.0, 4.0]
    assert (error.file, error.line, error.sqlstate, error.waits) == (FILE, 3, "55P03", 4)
    assert error.tables == ("item",)
    assert "waited 4 times for a lock on item" in str(error)
    assert isinstance(error, FailedBeforeCommit)
    assert error.exit_code == ExitCode.FAILED_BEFORE_COMMIT
    assert not conn.revision_row


def test_other_errors_stop_at_once() -> None:
    """An error other than lock_not_available is not retried and names file and line."""
    missing = psycopg2.errors.UndefinedTable('relation "item" does not exist')
    conn = FakeConnection({"ON item": [missing]})
    sleeps: list[float] = []
    with pytest.raises(LivePatchFailed) as caught:
        apply(conn, sleeps)
    assert sleeps == []
    assert (caught.value.line, caught.value.waits) == (3, None)
    assert 'relation "item" does not exist' in str(caught.value)
    assert not conn.revision_row


def test_index_on_existing_table_is_sent_concurrently_and_on_new_table_as_written() -> None:
    """The plain CREATE INDEX on item goes out CONCURRENTLY; the one on the new table does not."""
    conn = FakeConnection()
    apply(conn, [])
    assert "CREATE INDEX fresh__name__idx ON fresh (name)" in conn.sent
    assert "CREATE INDEX item__name__idx ON item (name)" not in conn.sent
    assert "CREATE INDEX CONCURRENTLY item__name__idx ON item (name)" in conn.sent


def test_every_statement_follows_set_lock_timeout() -> None:
    """Each patch statement is sent after its own SET lock_timeout, in milliseconds."""
    conn = FakeConnection()
    apply(conn, [], lock_timeout_s=0.2)
    statements = [
        "CREATE TABLE fresh (id integer PRIMARY KEY, name text)",
        "CREATE INDEX fresh__name__idx ON fresh (name)",
        "CREATE INDEX CONCURRENTLY item__name__idx ON item (name)",
    ]
    previous = 0
    for statement in statements:
        at = conn.sent.index(statement)
        assert "SET lock_timeout = 200" in conn.sent[previous:at]
        previous = at


def test_each_statement_is_logged_as_an_event() -> None:
    """live.statement carries file, line, retries and whether the index was built concurrently."""
    conn = FakeConnection({"ON item": [lock_timeout()]})
    with capture_logs() as logs:
        apply(conn, [])
    statements = [e for e in logs if e["event"] == "live.statement"]
    assert [(e["file"], e["line"], e["retries"]) for e in statements] == [
        (FILE, 1, 0), (FILE, 2, 0), (FILE, 3, 1)]
    assert [e["index_concurrently"] for e in statements] == [False, False, True]


@pytest.mark.parametrize("table", ["bad name", "a.b.c", "x; DROP TABLE item", '"Quoted"', ""])
def test_revision_table_must_be_a_plain_name(table: str) -> None:
    """A revision table that is not a plain (optionally qualified) name is refused, unsent."""
    conn = FakeConnection()
    with pytest.raises(BadInput, match="revision table"):
        apply(conn, [], revision_table=table)
    assert conn.sent == []

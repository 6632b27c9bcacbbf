"""The orchestrator's own schema is versioned: created, adopted, upgraded once, never written
when it is newer than this orchestrator knows; older data stays readable."""

from __future__ import annotations

import threading

import pytest

from orchestrator.config import DatabaseSettings
from orchestrator.db import schema
from orchestrator.db.connect import connect
from orchestrator.db.timings import read_timings, record_timings

pytestmark = pytest.mark.integration


def versions(settings: DatabaseSettings) -> list[int]:
    conn = connect(settings, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM fastdowntime.schema_version ORDER BY version")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def test_a_new_database_gets_the_latest_version(scratch_db: DatabaseSettings) -> None:
    """ensure_schema on a database without the schema creates it at the latest version."""
    conn = connect(scratch_db, autocommit=True)
    try:
        assert schema.schema_version(conn) is None
        assert schema.ensure_schema(conn) == schema.latest_version()
        assert schema.schema_version(conn) == schema.latest_version()
        assert conn.autocommit, "the caller's autocommit is given back"
    finally:
        conn.close()
    assert versions(scratch_db) == [v for v, _ in schema.MIGRATIONS]


def test_an_unversioned_schema_is_adopted_and_its_data_kept(
        scratch_db: DatabaseSettings) -> None:
    """A schema written before versions existed reads as version 1, is adopted without losing
    a row, and its timings stay readable."""
    conn = connect(scratch_db)
    with conn.cursor() as cur:
        cur.execute("CREATE SCHEMA fastdowntime")
        cur.execute(schema.MIGRATIONS[0][1])
        # a timing as an orchestrator of that time wrote it (no statement records)
        cur.execute("INSERT INTO fastdowntime.patch_timing (filename, checksum, duration_s, "
                    "run_id) VALUES ('patch-2200-01-0.sql', 'aaa', 1.25, 'old-run')")
    conn.commit()
    assert schema.schema_version(conn) == 1
    assert read_timings(scratch_db) == {("patch-2200-01-0.sql", "aaa"): 1.25}
    schema.ensure_schema(conn)
    conn.close()
    assert versions(scratch_db) == [v for v, _ in schema.MIGRATIONS]
    assert read_timings(scratch_db) == {("patch-2200-01-0.sql", "aaa"): 1.25}


def test_a_later_migration_is_applied_once(scratch_db: DatabaseSettings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An orchestrator that knows one more version upgrades an older database in place, once,
    even when two upgrade at the same time."""
    conn = connect(scratch_db)
    schema.ensure_schema(conn)
    record_timings(conn, [("patch-2200-01-0.sql", "aaa", 2.0, ())], "run-1")
    conn.close()
    latest = schema.latest_version()
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, (
        latest + 1, "ALTER TABLE fastdowntime.patch_timing ADD COLUMN note text DEFAULT ''")))
    errors: list[BaseException] = []

    def upgrade() -> None:
        c = connect(scratch_db)
        try:
            schema.ensure_schema(c)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert versions(scratch_db)[-1] == latest + 1
    assert read_timings(scratch_db) == {("patch-2200-01-0.sql", "aaa"): 2.0}


def test_a_newer_schema_is_never_written(scratch_db: DatabaseSettings) -> None:
    """A database ahead of this orchestrator is refused by name, and nothing is changed."""
    conn = connect(scratch_db)
    schema.ensure_schema(conn)
    ahead = schema.latest_version() + 5
    with conn.cursor() as cur:
        cur.execute("INSERT INTO fastdowntime.schema_version (version) VALUES (%s)", (ahead,))
    conn.commit()
    with pytest.raises(schema.SchemaTooNew, match=f"version {ahead}"):
        schema.ensure_schema(conn)
    assert schema.schema_version(conn) == ahead
    conn.close()

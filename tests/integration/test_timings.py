"""Rehearsal timings: recorded per patch version, read back, exported and read from a file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import connect
from orchestrator.db.schema import ensure_schema
from orchestrator.db.timings import (
    export,
    load_export,
    read_rehearsals,
    read_timings,
    record_timings,
    table_sizes,
)
from orchestrator.errors import BadInput
from orchestrator.estimate import StatementTiming, TableSize
from orchestrator.plan import timings_for

pytestmark = pytest.mark.integration

RECORDS = (StatementTiming(0.25, False, {"item": TableSize(8192, 3.0)}),
           StatementTiming(1.5, True, {"item": TableSize(8192, 3.0), "tag": None}))


def test_record_read_export_roundtrip(scratch_db: DatabaseSettings, tmp_path: Path) -> None:
    """The latest timing per (file, checksum) is read; an export file reads back the same."""
    conn = connect(scratch_db)
    ensure_schema(conn)
    record_timings(conn, [("patch-2200-01-0.sql", "aaa", 3.0, ()),
                          ("patch-2200-02-0.sql", "bbb", 1.5, ())], "run-1")
    record_timings(conn, [("patch-2200-01-0.sql", "aaa", 2.0, RECORDS),
                          ("patch-2200-01-0.sql", "old", 99.0, ())], "run-2")
    conn.close()
    timings = read_timings(scratch_db)
    assert timings == {("patch-2200-01-0.sql", "aaa"): 2.0, ("patch-2200-02-0.sql", "bbb"): 1.5,
                       ("patch-2200-01-0.sql", "old"): 99.0}
    rehearsals = read_rehearsals(scratch_db)
    assert rehearsals[("patch-2200-01-0.sql", "aaa")] == (2.0, RECORDS)
    assert rehearsals[("patch-2200-02-0.sql", "bbb")] == (1.5, ())
    file = tmp_path / "timings.json"
    file.write_text(json.dumps(export(timings, {k: r for k, (_, r) in rehearsals.items()})))
    from_file = dataclasses.replace(scratch_db, timings_file=str(file))
    assert read_timings(from_file) == timings
    assert read_rehearsals(from_file) == rehearsals
    assert timings_for({"patch-2200-01-0.sql": "aaa", "patch-2200-03-0.sql": "ccc"}, timings) == {
        "patch-2200-01-0.sql": 2.0}


def test_no_schema_means_no_timings(scratch_db: DatabaseSettings) -> None:
    """A database that never rehearsed has no timings (and reading creates nothing)."""
    assert read_timings(scratch_db) == {}


def test_bad_export_file_is_named(tmp_path: Path) -> None:
    """A timings file that is missing or malformed is bad input naming it."""
    with pytest.raises(BadInput, match="no such timings file"):
        load_export(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text('{"x": 1}')
    with pytest.raises(BadInput, match="bad.json: not a timings export"):
        load_export(tmp_path / "bad.json")


def test_table_sizes_as_the_database_reports_them(scratch_db: DatabaseSettings) -> None:
    """Bytes on disk and estimated rows of each table as a patch names it; None for a table
    that does not exist."""
    conn = connect(scratch_db, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE sized (id int, pad text)")
            cur.execute("INSERT INTO sized "
                        "SELECT g, repeat('x', 100) FROM generate_series(1, 5000) g")
            cur.execute("ANALYZE sized")
        sizes = table_sizes(conn, ["sized", "public.sized", "nosuch"])
    finally:
        conn.close()
    assert sizes["nosuch"] is None
    assert sizes["sized"] == sizes["public.sized"]
    got = sizes["sized"]
    assert got is not None and got.bytes >= 5000 * 100 and got.rows == 5000

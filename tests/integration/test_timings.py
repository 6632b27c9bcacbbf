"""Rehearsal timings: recorded per patch version, read back, exported and read from a file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import connect
from orchestrator.db.schema import ensure_schema
from orchestrator.db.timings import export, load_export, read_timings, record_timings
from orchestrator.errors import BadInput
from orchestrator.plan import timings_for

pytestmark = pytest.mark.integration


def test_record_read_export_roundtrip(scratch_db: DatabaseSettings, tmp_path: Path) -> None:
    """The latest timing per (file, checksum) is read; an export file reads back the same."""
    conn = connect(scratch_db)
    ensure_schema(conn)
    record_timings(conn, [("patch-2200-01-0.sql", "aaa", 3.0),
                          ("patch-2200-02-0.sql", "bbb", 1.5)], "run-1")
    record_timings(conn, [("patch-2200-01-0.sql", "aaa", 2.0),
                          ("patch-2200-01-0.sql", "old", 99.0)], "run-2")
    conn.close()
    timings = read_timings(scratch_db)
    assert timings == {("patch-2200-01-0.sql", "aaa"): 2.0, ("patch-2200-02-0.sql", "bbb"): 1.5,
                       ("patch-2200-01-0.sql", "old"): 99.0}
    file = tmp_path / "timings.json"
    file.write_text(json.dumps(export(timings)))
    assert read_timings(dataclasses.replace(scratch_db, timings_file=str(file))) == timings
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

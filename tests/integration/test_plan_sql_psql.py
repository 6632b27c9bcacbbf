"""``plan --sql`` against a real primary: psql runs the printed SQL by hand, and the database
ends as a deploy leaves it: the patches applied, their revision rows timed, the checksums
recorded, the permissions granted."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import connect
from orchestrator.db.schema import ensure_schema
from orchestrator.history.git import blob_sha
from tests.gitrepo import GitRepo, patch

pytestmark = pytest.mark.integration

PERMISSIONS = "database/schema/security.sql"
COLD_A = "ALTER TABLE item ADD COLUMN note text;\nUPDATE item SET note = name;\n"
COLD_B = ("ALTER TABLE item ADD COLUMN price integer;\n"
          "INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 3, 0);\n")


def plan_sql(tmp_path: Path) -> str:
    """The --sql text of a range with a live patch before the cut, two cold patches (the
    later one records its own row), new permissions, and a live patch after the cut."""
    repo = GitRepo(tmp_path / "repo")
    base = repo.commit("Initial", {"app/main.py": "v0\n", PERMISSIONS: "SELECT 1;\n"})
    repo.commit("Live", {patch(2200, 1): "-- fastdowntime: live\n"
                                         "CREATE INDEX CONCURRENTLY item_name ON item (name);\n"})
    repo.commit("Cold B", {patch(2200, 3): COLD_B})
    repo.commit("Cold A", {patch(2200, 2): COLD_A,
                           PERMISSIONS: "GRANT SELECT (note, price) ON item TO PUBLIC;\n"})
    repo.commit("Live after", {patch(2200, 4): "-- fastdowntime: live\n"
                                               "CREATE TABLE tag (id integer);\n"
                                               "CREATE INDEX tag_id ON tag (id);\n"})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "--repo", str(repo.path), "--from", base, "--sql",
                     "--permissions", PERMISSIONS]) == 0
    return out.getvalue()


def test_psql_runs_the_sql_as_a_deploy_would(scratch_db: DatabaseSettings,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """psql -v ON_ERROR_STOP=1 runs plan --sql's text: every patch applied in its order,
    each revision row with its start and end, each checksum, the permissions."""
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("no psql on PATH")
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "plan.sql"
    script.write_text(plan_sql(tmp_path))
    conn = connect(scratch_db, autocommit=True)
    try:
        ensure_schema(conn)
        env = dict(os.environ)
        if scratch_db.passfile:
            env["PGPASSFILE"] = scratch_db.passfile
        done = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", scratch_db.dsn,
                               "-f", str(script)], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        with conn.cursor() as cur:
            cur.execute("SELECT major, minor, patch, start_time <= end_time "
                        "FROM LaunchpadDatabaseRevision WHERE major = 2200 AND minor > 0 "
                        "ORDER BY 1, 2, 3")
            assert cur.fetchall() == [(2200, m, 0, True) for m in (1, 2, 3, 4)]
            cur.execute("SELECT filename, checksum, duration_s >= 0 FROM "
                        "fastdowntime.applied_patch ORDER BY 1")
            assert cur.fetchall() == [("patch-2200-02-0.sql", blob_sha(COLD_A.encode()), True),
                                      ("patch-2200-03-0.sql", blob_sha(COLD_B.encode()), True)]
            cur.execute("SELECT count(*) FROM item WHERE note = name AND price IS NULL")
            assert cur.fetchone() == (1000,)
            cur.execute("SELECT has_column_privilege('public', 'item', 'note', 'SELECT'), "
                        "to_regclass('tag_id') IS NOT NULL, to_regclass('item_name') IS NOT NULL")
            assert cur.fetchone() == (True, True, True)
    finally:
        conn.close()

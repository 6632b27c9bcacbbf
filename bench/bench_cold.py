"""Cold-patch application vs ``psql -1 -f`` on the same 50 patches, side by side.

Both run against the sandbox's real primary, each time on a fresh copy of
the same database (CREATE DATABASE ... TEMPLATE), connection included.
Runs alternate, five each; the medians are compared. Target: <= 1.10x.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

from orchestrator.config import load_config
from orchestrator.db.cold import ColdPatch, apply_cold
from orchestrator.db.connect import connect
from orchestrator.db.schema import ensure_schema
from orchestrator.history.git import blob_sha
from orchestrator.patches import analyse
from orchestrator.sandbox import manager
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PRIMARY_PORT, PROJECT_ROOT

PATCHES = 50
RUNS = 5
TEMPLATE = "fdt_bench_template"

BASE = """
CREATE TABLE LaunchpadDatabaseRevision (major integer, minor integer, patch integer,
    start_time timestamp DEFAULT (now() AT TIME ZONE 'UTC'), end_time timestamp,
    PRIMARY KEY (major, minor, patch));
CREATE TABLE bug (id serial PRIMARY KEY, title text NOT NULL, status integer NOT NULL);
INSERT INTO bug (title, status) SELECT 'bug ' || i, i % 7 FROM generate_series(1, 20000) i;
"""


def patch_text(i: int) -> str:
    """A realistic cold patch: a column, a backfill, an index, a constraint, its row."""
    return (f"SET client_min_messages=ERROR;\n"
            f"ALTER TABLE bug ADD COLUMN c{i} integer;\n"
            f"UPDATE bug SET c{i} = status * {i} WHERE id % 50 = {i % 50};\n"
            f"CREATE INDEX bug__c{i}__idx ON bug (c{i});\n"
            f"ALTER TABLE bug ADD CONSTRAINT bug_c{i}_check CHECK (c{i} >= 0);\n"
            f"COMMENT ON COLUMN bug.c{i} IS 'bench column {i}';\n"
            f"INSERT INTO LaunchpadDatabaseRevision VALUES (3000, {i}, 0);\n")


def main() -> None:
    layout = manager.up()
    ctx = Context.load(layout)
    settings = load_config(PROJECT_ROOT / "config" / "sandbox.toml").database
    assert settings is not None
    admin = psycopg2.connect(host="127.0.0.1", port=PRIMARY_PORT, user="postgres",
                             dbname="postgres", password=ctx.passwords["postgres"])
    admin.autocommit = True
    texts = [patch_text(i) for i in range(1, PATCHES + 1)]
    patches = [ColdPatch(analyse(f"patch-3000-{i:02d}-0.sql", t), t, blob_sha(t.encode()))
               for i, t in enumerate(texts, 1)]

    def fresh(name: str) -> Any:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
            cur.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} OWNER fdt_admin")
        return dataclasses.replace(settings, dsn=f"host=127.0.0.1 port={PRIMARY_PORT} "
                                                 f"dbname={name} user=fdt_admin")

    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        cur.execute(f"CREATE DATABASE {TEMPLATE} OWNER fdt_admin")
    conn = connect(dataclasses.replace(settings, dsn=f"host=127.0.0.1 port={PRIMARY_PORT} "
                                                     f"dbname={TEMPLATE} user=fdt_admin"))
    with conn.cursor() as cur:
        cur.execute(BASE)
    conn.commit()
    ensure_schema(conn)
    conn.close()
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "all.sql"
        script.write_text("".join(texts))
        env = {**os.environ, "PGPASSFILE": str(layout.pgpass)}
        for _ in range(RUNS):
            target = fresh("fdt_bench_psql")
            started = time.perf_counter()
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(script),
                            target.dsn], env=env, check=True, capture_output=True)
            theirs.append(time.perf_counter() - started)
            target = fresh("fdt_bench_ours")
            started = time.perf_counter()
            conn = connect(target)
            apply_cold(conn, patches, deadline=time.monotonic() + 60)
            conn.close()
            ours.append(time.perf_counter() - started)
    with admin.cursor() as cur:
        for name in ("fdt_bench_psql", "fdt_bench_ours", TEMPLATE):
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
    admin.close()
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"cold patches: {PATCHES} patches, {sum(len(p.report.statements) for p in patches)} "
          f"statements, median of {RUNS} runs each, connection included")
    print(f"psql -1 -f:          {b:.3f} s")
    print(f"fastdowntime cold:   {a:.3f} s (per-statement deadline, per-patch timing, "
          "row checks, checksums)")
    verdict = "ok" if a <= 1.10 * b else "OVER TARGET"
    print(f"ratio cold / psql: {a / b:.3f}x (target <= 1.10x) {verdict}")

"""Patch analysis over 1,000 realistic patch files: read + ``analyse`` must take well under 10 s.

The files are generated from a fixed seed into a temporary directory: a mix
of live and cold Launchpad-style patches of 1 to 30 statements, with the
copyright comment, ``SET client_min_messages=ERROR``, plpgsql functions in
dollar quotes, multi-subcommand ALTER TABLEs, comments everywhere and the
revision-table insert at the end.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.patches import analyse

FILES = 1_000
BUDGET_S = 10.0
SEED = 2211

TABLES = ("bug", "bugtask", "person", "product", "distribution", "branch", "archive", "item")
COLUMNS = ("heat", "status", "date_last_updated", "owner", "importance", "title", "tags")

_FUNCTION = """CREATE OR REPLACE FUNCTION {name}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Keep the summary in step; {table} rows change often.
    IF TG_OP = 'INSERT' THEN
        UPDATE {table}summary SET count = count + 1 WHERE id = NEW.id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE {table}summary SET count = count - 1 WHERE id = OLD.id;
    ELSE
        PERFORM 1 FROM {table} WHERE id = NEW.id FOR UPDATE;
    END IF;
    RETURN NULL; -- an AFTER trigger; the result is ignored
END;
$$;"""


def _live_statement(rng: random.Random, n: int) -> str:
    table, column = rng.choice(TABLES), rng.choice(COLUMNS)
    choices: list[Callable[[], str]] = [
        lambda: f"CREATE INDEX CONCURRENTLY {table}__{column}__{n}__idx ON {table} ({column});",
        lambda: _FUNCTION.format(name=f"{table}_maintain_{n}", table=table),
        lambda: f"COMMENT ON COLUMN {table}.{column} IS 'What the {column} of a {table} means.';",
        lambda: f"GRANT SELECT, UPDATE ON {table} TO launchpad_main;",
        lambda: f"ALTER TABLE {table} VALIDATE CONSTRAINT {table}__{column}__{n}__fk;",
        lambda: (
            f"CREATE TABLE {table}job_{n} (\n    id serial PRIMARY KEY,\n"
            f"    job integer NOT NULL UNIQUE,\n    -- when it ran\n"
            f"    date_run timestamp without time zone\n);"
        ),
        lambda: (
            f"CREATE OR REPLACE VIEW {table}_view_{n} AS\n"
            f"    SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL;"
        ),
    ]
    return rng.choice(choices)()


def _cold_statement(rng: random.Random, n: int) -> str:
    table, column = rng.choice(TABLES), rng.choice(COLUMNS)
    choices: list[Callable[[], str]] = [
        lambda: f"ALTER TABLE {table} ADD COLUMN {column}_{n} integer DEFAULT 0 NOT NULL;",
        lambda: (
            f"ALTER TABLE ONLY {table}\n    ALTER COLUMN {column} SET NOT NULL,\n"
            f"    ALTER COLUMN {column} SET DEFAULT 0;"
        ),
        lambda: (
            f"CREATE INDEX {table}__{column}__{n}__idx ON {table} ({column}) WHERE {column} > 0;"
        ),
        lambda: f"UPDATE {table} SET {column} = 0 WHERE {column} IS NULL; -- backfill",
        lambda: (
            f"CREATE TRIGGER {table}_maintain_{n}_t AFTER INSERT OR UPDATE OR DELETE ON {table}\n"
            f"    FOR EACH ROW EXECUTE PROCEDURE {table}_maintain_{n}();"
        ),
        lambda: f"DROP INDEX IF EXISTS {table}__{column}__old__idx;",
        lambda: "DO $$ BEGIN RAISE NOTICE 'cleaning up'; END $$;",
    ]
    return rng.choice(choices)()


def patch_text(rng: random.Random, number: int) -> str:
    """One realistic patch: mostly live (about 60%) or with cold statements mixed in."""
    live = rng.random() < 0.6
    lines = [
        "-- Copyright 2024 Canonical Ltd.  This software is licensed under the",
        "-- GNU Affero General Public License version 3 (see the file LICENSE).",
    ]
    if rng.random() < 0.3:
        lines.append(f"-- fastdowntime: {'live' if live else 'cold'}")
    lines += ["", "SET client_min_messages=ERROR;", ""]
    for n in range(rng.randint(1, 30)):
        if rng.random() < 0.2:
            lines.append(f"-- Step {n}: see bug {rng.randint(1000, 99999)}.")
        cold = not live and rng.random() < 0.4
        lines.append(_cold_statement(rng, n) if cold else _live_statement(rng, n))
    lines += ["", f"INSERT INTO LaunchpadDatabaseRevision VALUES (2300, {number}, 0);", ""]
    return "\n".join(lines)


def main() -> None:
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="bench-patches-") as tmp:
        paths = []
        for number in range(FILES):
            path = Path(tmp) / f"patch-2300-{number:02d}-0.sql"
            path.write_text(patch_text(rng, number), encoding="utf-8")
            paths.append(path)
        per_file = []
        kinds = {"live": 0, "cold": 0}
        start = time.perf_counter()
        for path in paths:
            began = time.perf_counter()
            report = analyse(path.name, path.read_text(encoding="utf-8"))
            per_file.append(time.perf_counter() - began)
            kinds[report.kind] += 1
        total = time.perf_counter() - start
    verdict = "within budget" if total < BUDGET_S else "OVER BUDGET"
    print(
        f"patches over {FILES:,} files: {total:.2f} s (budget {BUDGET_S:.0f} s), "
        f"per-file median {statistics.median(per_file) * 1000:.1f} ms: {verdict} "
        f"({kinds['live']} live, {kinds['cold']} cold)"
    )

"""The lock each statement takes, after PostgreSQL 15's documentation, and whether it is live-safe.

Each row is one statement, analysed as the last statement of a patch whose
earlier statements create the tables ``newt`` and ``measurement_new`` (so
"new table" cases can be told from existing ones: every other table exists).
"""

from __future__ import annotations

import pytest

from orchestrator.patches import Statement, analyse
from orchestrator.patches.locks import LEVELS, blocks_normal_use

AE = "ACCESS EXCLUSIVE"
EX = "EXCLUSIVE"
SRE = "SHARE ROW EXCLUSIVE"
SH = "SHARE"
SUE = "SHARE UPDATE EXCLUSIVE"
RE = "ROW EXCLUSIVE"
RS = "ROW SHARE"
AS = "ACCESS SHARE"

SETUP = """\
CREATE TABLE newt (id serial PRIMARY KEY, name text);
CREATE TABLE measurement_new (id int, at date) PARTITION BY RANGE (at);
"""

FUNCTION = """CREATE OR REPLACE FUNCTION bug_heat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE bug SET heat = heat + 1 WHERE id = NEW.id; -- bug is not locked by CREATE FUNCTION
    RETURN NEW;
END;
$$"""

# (sql, lock, tables, blocking, live_safe)
CASES: list[tuple[str, str | None, tuple[str, ...], bool, bool]] = [
    # ALTER TABLE: column changes take ACCESS EXCLUSIVE
    ("ALTER TABLE bug ADD COLUMN heat integer", AE, ("bug",), True, False),
    ("ALTER TABLE bug ADD COLUMN heat integer DEFAULT 0 NOT NULL", AE, ("bug",), True, False),
    ("ALTER TABLE bug DROP COLUMN heat", AE, ("bug",), True, False),
    ("ALTER TABLE bug ALTER COLUMN heat TYPE bigint", AE, ("bug",), True, False),
    ("ALTER TABLE bug ALTER COLUMN heat SET NOT NULL", AE, ("bug",), True, False),
    ("ALTER TABLE bug ALTER COLUMN heat DROP NOT NULL", AE, ("bug",), True, False),
    ("ALTER TABLE bug ALTER COLUMN heat SET DEFAULT 0", AE, ("bug",), True, False),
    ("ALTER TABLE bug ALTER COLUMN heat DROP DEFAULT", AE, ("bug",), True, False),
    ("ALTER TABLE bug RENAME COLUMN heat TO warmth", AE, ("bug",), True, False),
    ("ALTER TABLE bug RENAME TO issue", AE, ("bug",), True, False),
    ("ALTER TABLE bug OWNER TO launchpad", AE, ("bug",), True, False),
    ("ALTER TABLE bug SET TABLESPACE fast", AE, ("bug",), True, False),
    # constraints
    ("ALTER TABLE bug VALIDATE CONSTRAINT bug_heat_check", SUE, ("bug",), False, True),
    ("ALTER TABLE bug ADD CONSTRAINT c CHECK (heat >= 0) NOT VALID", AE, ("bug",), True, True),
    (
        "ALTER TABLE bug ADD CONSTRAINT bug_owner_fk FOREIGN KEY (owner)"
        " REFERENCES person NOT VALID",
        SRE,
        ("bug", "person"),
        True,
        True,
    ),
    (
        "ALTER TABLE bug ADD CONSTRAINT bug_owner_fk FOREIGN KEY (owner) REFERENCES person (id)",
        SRE,
        ("bug", "person"),
        True,
        False,
    ),
    ("ALTER TABLE bug ADD COLUMN owner int REFERENCES person", AE, ("bug",), True, False),
    ("ALTER TABLE bug ADD CONSTRAINT c CHECK (heat >= 0)", AE, ("bug",), True, False),
    ("ALTER TABLE bug ADD CONSTRAINT bug_pkey PRIMARY KEY (id)", AE, ("bug",), True, False),
    (
        "ALTER TABLE bug ADD CONSTRAINT bug_key UNIQUE USING INDEX bug_idx",
        AE,
        ("bug",),
        True,
        False,
    ),
    ("ALTER TABLE bug DROP CONSTRAINT bug_heat_check", AE, ("bug",), True, False),
    # maintenance settings: SHARE UPDATE EXCLUSIVE, not blocking, but not in the live-safe set
    ("ALTER TABLE bug ALTER COLUMN heat SET STATISTICS 1000", SUE, ("bug",), False, False),
    ("ALTER TABLE bug ALTER COLUMN heat SET (n_distinct = 100)", SUE, ("bug",), False, False),
    ("ALTER TABLE bug SET (fillfactor = 70, parallel_workers = 4)", SUE, ("bug",), False, False),
    (
        "ALTER TABLE bug SET (autovacuum_vacuum_scale_factor = 0.01,"
        " toast.autovacuum_enabled = off)",
        SUE,
        ("bug",),
        False,
        False,
    ),
    ("ALTER TABLE bug RESET (fillfactor)", SUE, ("bug",), False, False),
    ("ALTER VIEW bug_view SET (security_barrier = true)", AE, ("bug_view",), True, False),
    ("ALTER TABLE bug CLUSTER ON bug_pkey", SUE, ("bug",), False, False),
    ("ALTER TABLE bug SET WITHOUT CLUSTER", SUE, ("bug",), False, False),
    # triggers: SHARE ROW EXCLUSIVE
    ("ALTER TABLE bug ENABLE TRIGGER bug_t", SRE, ("bug",), True, False),
    ("ALTER TABLE bug DISABLE TRIGGER ALL", SRE, ("bug",), True, False),
    # partitions: SHARE UPDATE EXCLUSIVE on the parent, ACCESS EXCLUSIVE on the one attached
    (
        "ALTER TABLE measurement ATTACH PARTITION measurement_y2024"
        " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        AE,
        ("measurement_y2024",),
        True,
        False,
    ),
    (
        "ALTER TABLE measurement DETACH PARTITION measurement_y2020 CONCURRENTLY",
        SUE,
        ("measurement", "measurement_y2020"),
        False,
        False,
    ),
    (
        "ALTER TABLE measurement DETACH PARTITION measurement_y2020",
        AE,
        ("measurement", "measurement_y2020"),
        True,
        False,
    ),
    # the strongest subcommand wins
    (
        "ALTER TABLE bug ALTER COLUMN heat SET STATISTICS 100, ADD COLUMN x int",
        AE,
        ("bug",),
        True,
        False,
    ),
    (
        "ALTER TABLE bug ALTER COLUMN heat SET STATISTICS 100, ENABLE TRIGGER t",
        SRE,
        ("bug",),
        True,
        False,
    ),
    (
        "ALTER TABLE bug VALIDATE CONSTRAINT c, ALTER COLUMN x SET STATISTICS 10",
        SUE,
        ("bug",),
        False,
        False,
    ),
    (
        "ALTER TABLE bug VALIDATE CONSTRAINT c, ADD CONSTRAINT d CHECK (x > 0) NOT VALID",
        AE,
        ("bug",),
        True,
        True,
    ),
    # ONLY, quoting and schemas, as written
    ("ALTER TABLE ONLY bug ADD COLUMN x int", AE, ("bug",), True, False),
    ("ALTER TABLE public.bug ADD COLUMN x int", AE, ("public.bug",), True, False),
    ('ALTER TABLE "Odd"."Bug Table" ADD COLUMN x int', AE, ('"Odd"."Bug Table"',), True, False),
    ("ALTER TABLE ONLY BugTask ADD COLUMN x int", AE, ("BugTask",), True, False),
    # indexes, sequences
    (
        "ALTER INDEX bug__heat__idx RENAME TO bug__warmth__idx",
        SUE,
        ("bug__heat__idx",),
        False,
        False,
    ),
    ("ALTER INDEX bug__heat__idx SET TABLESPACE fast", AE, ("bug__heat__idx",), True, False),
    ("ALTER SEQUENCE bug_id_seq RESTART WITH 1000", SRE, ("bug_id_seq",), True, False),
    ("CREATE INDEX bug__heat__idx ON bug (heat)", SH, ("bug",), True, False),
    (
        "CREATE UNIQUE INDEX bug__name__key ON bug (name) WHERE name IS NOT NULL",
        SH,
        ("bug",),
        True,
        False,
    ),
    ("CREATE INDEX CONCURRENTLY bug__heat__idx ON bug (heat)", SUE, ("bug",), False, True),
    ("CREATE UNIQUE INDEX CONCURRENTLY bug__name__key ON bug (name)", SUE, ("bug",), False, True),
    ("CREATE INDEX newt__name__idx ON newt (name)", SH, ("newt",), False, True),
    ("CREATE UNIQUE INDEX ON public.newt (lower(name))", SH, ("public.newt",), False, True),
    ("CREATE SEQUENCE job_id_seq", None, (), False, True),
    # tables
    (
        "CREATE TABLE job (id serial PRIMARY KEY, name text NOT NULL UNIQUE, CHECK (id > 0))",
        None,
        (),
        False,
        True,
    ),
    ("CREATE TABLE job (id int, bug int REFERENCES bug)", SRE, ("bug",), True, False),
    (
        "CREATE TABLE job (id int, FOREIGN KEY (id) REFERENCES public.person (id))",
        SRE,
        ("public.person",),
        True,
        False,
    ),
    ("CREATE TABLE job (id int PRIMARY KEY, parent int REFERENCES job)", None, (), False, True),
    ("CREATE TABLE job (id int REFERENCES newt)", SRE, ("newt",), False, True),
    ("CREATE TABLE job (LIKE bug INCLUDING DEFAULTS)", AS, ("bug",), False, True),
    ("CREATE TABLE job () INHERITS (bug)", SUE, ("bug",), False, False),
    (
        "CREATE TABLE measurement_y2025 PARTITION OF measurement"
        " FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
        AE,
        ("measurement",),
        True,
        False,
    ),
    (
        "CREATE TABLE measurement_y2025 PARTITION OF measurement_new"
        " FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
        AE,
        ("measurement_new",),
        False,
        True,
    ),
    ("CREATE TABLE job AS SELECT id FROM bug", AS, ("bug",), False, True),
    ("SELECT id INTO job FROM bug", AS, ("bug",), False, True),
    ("ALTER TABLE newt ADD COLUMN x int", AE, ("newt",), False, True),
    (
        "ALTER TABLE newt ADD CONSTRAINT newt_bug_fk FOREIGN KEY (id) REFERENCES bug",
        SRE,
        ("bug",),
        True,
        False,
    ),
    # triggers, rules
    (
        "CREATE TRIGGER bug_t AFTER INSERT ON bug FOR EACH ROW EXECUTE FUNCTION bug_heat()",
        SRE,
        ("bug",),
        True,
        False,
    ),
    (
        "CREATE TRIGGER newt_t AFTER INSERT ON newt FOR EACH ROW EXECUTE FUNCTION f()",
        SRE,
        ("newt",),
        False,
        True,
    ),
    ("CREATE RULE r AS ON INSERT TO bug DO INSTEAD NOTHING", AE, ("bug",), True, False),
    # drops
    ("DROP TABLE bug", AE, ("bug",), True, False),
    (
        "DROP TABLE IF EXISTS bug, public.bugtask CASCADE",
        AE,
        ("bug", "public.bugtask"),
        True,
        False,
    ),
    ("DROP TABLE newt", AE, ("newt",), False, True),
    ("DROP INDEX bug__heat__idx", AE, ("bug__heat__idx",), True, False),
    ("DROP INDEX CONCURRENTLY bug__heat__idx", SUE, ("bug__heat__idx",), False, False),
    ("DROP TRIGGER bug_t ON bug", AE, ("bug",), True, False),
    ("DROP VIEW bug_view", AE, ("bug_view",), True, False),
    ("DROP FUNCTION bug_heat()", None, (), False, False),
    # maintenance
    ("TRUNCATE bug", AE, ("bug",), True, False),
    ("VACUUM bug", SUE, ("bug",), False, False),
    ("VACUUM FULL bug", AE, ("bug",), True, False),
    ("VACUUM FULL", AE, ("*",), True, False),
    ("ANALYZE bug", SUE, ("bug",), False, False),
    ("REINDEX TABLE bug", AE, ("bug",), True, False),
    ("REINDEX INDEX CONCURRENTLY bug__heat__idx", SUE, ("bug__heat__idx",), False, False),
    ("CLUSTER bug USING bug_pkey", AE, ("bug",), True, False),
    ("LOCK TABLE bug IN SHARE MODE", SH, ("bug",), True, False),
    ("LOCK TABLE bug", AE, ("bug",), True, False),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY bug_summary", EX, ("bug_summary",), True, False),
    ("CREATE STATISTICS bug_stats ON heat, status FROM bug", SUE, ("bug",), False, False),
    ("DO $$ BEGIN UPDATE bug SET heat = 0; END $$", None, (), False, False),
    # data
    (
        "INSERT INTO LaunchpadDatabaseRevision VALUES (2211, 3, 0)",
        RE,
        ("LaunchpadDatabaseRevision",),
        False,
        True,
    ),
    (
        "INSERT INTO public.launchpaddatabaserevision VALUES (2211, 3, 0)",
        RE,
        ("public.launchpaddatabaserevision",),
        False,
        True,
    ),
    ("INSERT INTO bug (id) VALUES (1)", RE, ("bug",), False, False),
    ("UPDATE bug SET heat = 0 WHERE heat IS NULL", RE, ("bug",), False, False),
    ("UPDATE bug SET owner = p.id FROM person p WHERE p.name = 'x'", RE, ("bug",), False, False),
    ("DELETE FROM bug WHERE heat IS NULL", RE, ("bug",), False, False),
    ("INSERT INTO newt (name) SELECT title FROM bug", AS, ("bug",), False, True),
    ("INSERT INTO newt (name) VALUES ('a'), ('b')", RE, ("newt",), False, True),
    (
        "WITH gone AS (DELETE FROM bug RETURNING id) SELECT count(*) FROM gone",
        RE,
        ("bug",),
        False,
        False,
    ),
    ("SELECT count(*) FROM bug", AS, ("bug",), False, False),
    ("SELECT * FROM bug FOR UPDATE", RS, ("bug",), False, False),
    # the live-safe set without table locks, and comments
    (FUNCTION, None, (), False, True),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", None, (), False, True),
    (
        "CREATE OR REPLACE VIEW bug_view AS SELECT b.id FROM bug b JOIN person p ON p.id = b.owner",
        AS,
        ("bug", "person"),
        False,
        True,
    ),
    ("GRANT SELECT, UPDATE ON bug TO launchpad_main", None, (), False, True),
    ("REVOKE ALL ON bug FROM public", None, (), False, True),
    ("COMMENT ON TABLE bug IS 'A bug.'", SUE, ("bug",), False, True),
    ("COMMENT ON COLUMN public.bug.heat IS 'How hot.'", SUE, ("public.bug",), False, True),
    ("COMMENT ON FUNCTION bug_heat() IS 'Heat.'", None, (), False, True),
    ("SET client_min_messages=ERROR", None, (), False, True),
    ("SET LOCAL statement_timeout = 0", None, (), False, True),
    ("RESET client_min_messages", None, (), False, True),
    ("CREATE SCHEMA reports", None, (), False, True),
    ("CREATE TYPE mood AS ENUM ('sad', 'ok')", None, (), False, True),
    ("CREATE DOMAIN positive AS integer CHECK (VALUE > 0)", None, (), False, True),
    ("CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS 'SELECT 1'", None, (), False, True),
    ("GRANT launchpad_main TO buildd", None, (), False, True),
    ("CREATE MATERIALIZED VIEW bug_mv AS SELECT id FROM bug", AS, ("bug",), False, True),
    # more cold ones
    ("ALTER TABLE bug SET SCHEMA archive", AE, ("bug",), True, False),
    ("ALTER TABLE bug ALTER COLUMN title SET STORAGE EXTERNAL", AE, ("bug",), True, False),
    ("COPY bug TO STDOUT", AS, ("bug",), False, False),
    (
        "MERGE INTO bug b USING person p ON b.owner = p.id WHEN MATCHED THEN DO NOTHING",
        RE,
        ("bug",),
        False,
        False,
    ),
    ("SELECT * FROM bug JOIN person USING (id) FOR SHARE", RS, ("bug", "person"), False, False),
    # cold without a table lock; unknown statement types
    ("CREATE EXTENSION pg_trgm", None, (), False, False),
    ("ALTER TYPE mood ADD VALUE 'happy'", None, (), False, False),
    ("CHECKPOINT", None, (), False, False),
    (
        "ALTER INDEX bug__heat__idx DEPENDS ON EXTENSION pg_trgm",
        AE,
        ("bug__heat__idx",),
        True,
        False,
    ),
]


def last_statement(sql: str) -> Statement:
    report = analyse("patch-2211-3-0.sql", SETUP + sql + ";\n")
    assert len(report.statements) == 3, report.statements
    return report.statements[-1]


def test_table_covers_enough_statements() -> None:
    """The table below pins at least 40 statements, and every lock level appears in it."""
    assert len(CASES) >= 40
    assert {lock for _, lock, *_ in CASES} >= set(LEVELS)


@pytest.mark.parametrize(("sql", "lock", "tables", "blocking", "live_safe"), CASES)
def test_statement_lock(
    sql: str, lock: str | None, tables: tuple[str, ...], blocking: bool, live_safe: bool
) -> None:
    """Each statement reports PostgreSQL's lock level, the tables, blocking and live-safety."""
    statement = last_statement(sql)
    assert (statement.lock, statement.tables, statement.blocking, statement.live_safe) == (
        lock,
        tables,
        blocking,
        live_safe,
    )


def test_blocking_levels_are_those_conflicting_with_reads_or_writes() -> None:
    """SHARE and stronger block normal reads or writes; SHARE UPDATE EXCLUSIVE and weaker do not."""
    assert [level for level in LEVELS if blocks_normal_use(level)] == [SH, SRE, EX, AE]


def test_revision_table_name_is_configurable() -> None:
    """The insert into a configured revision table is live-safe; the default one then is not."""
    sql = (
        "INSERT INTO ops.PatchLog VALUES (1, 2, 3);\n"
        "INSERT INTO LaunchpadDatabaseRevision VALUES (1);\n"
    )
    report = analyse("patch-1-2-3.sql", sql, revision_table="ops.patchlog")
    assert [s.live_safe for s in report.statements] == [True, False]


def test_rename_of_a_new_table_keeps_it_new() -> None:
    """A table created and then renamed in the same patch is still the patch's own table."""
    sql = (
        "CREATE TABLE job (id int);\nALTER TABLE job RENAME TO task;\nCREATE INDEX ON task (id);\n"
    )
    report = analyse("patch-1-2-3.sql", sql)
    assert report.kind == "live"
    assert [s.blocking for s in report.statements] == [False, False, False]


def test_create_table_if_not_exists_does_not_make_the_table_new() -> None:
    """After CREATE TABLE IF NOT EXISTS the table may be an old one: later statements block."""
    sql = "CREATE TABLE IF NOT EXISTS job (id int);\nCREATE INDEX ON job (id);\n"
    report = analyse("patch-1-2-3.sql", sql)
    assert report.statements[0].live_safe
    assert report.statements[1].blocking and report.kind == "cold"


def test_unqualified_and_public_names_are_the_same_new_table() -> None:
    """A table created as public.job is the same new table as job later on."""
    sql = "CREATE TABLE public.job (id int);\nCREATE INDEX ON job (id);\n"
    assert analyse("patch-1-2-3.sql", sql).kind == "live"


def test_new_table_in_other_schema_is_not_the_unqualified_name() -> None:
    """A table created as reports.job does not make an unqualified job new (cold: safe side)."""
    sql = "CREATE TABLE reports.job (id int);\nCREATE INDEX ON job (id);\n"
    assert analyse("patch-1-2-3.sql", sql).kind == "cold"

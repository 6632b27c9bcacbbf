"""Advisory rules: rewrites, full scans, plain index builds, whole-table DML, changes that
break the old code; their positions, locks, and the fastdowntime-ignore comment."""

from __future__ import annotations

import pytest

from orchestrator.patches import Problem, lint


def problems(sql: str, file: str = "patch-1-0-0.sql") -> list[Problem]:
    """The problems of ``sql`` as a patch."""
    return list(lint(file, sql).problems)


def rules(sql: str) -> list[str]:
    """The rule codes of the problems of ``sql``, in report order."""
    return [p.rule for p in problems(sql)]


# --- rewrites -------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "ALTER TABLE bug ALTER COLUMN heat TYPE bigint;",
    "ALTER TABLE bug ALTER heat SET DATA TYPE text USING heat::text;",
])
def test_column_type_change_is_a_rewrite(sql: str) -> None:
    """ALTER COLUMN ... TYPE on an existing table is rewrite-column-type under ACCESS EXCLUSIVE."""
    [problem] = problems(sql)
    assert problem.rule == "rewrite-column-type" and problem.severity == "error"
    assert problem.lock == "ACCESS EXCLUSIVE" and problem.blocks == "reads"
    assert "heat" in problem.message and "bug" in problem.message


def test_column_type_change_on_a_new_table_is_fine() -> None:
    """A type change on a table created earlier in the patch rewrites nothing anyone uses."""
    assert rules("CREATE TABLE job (id int);\nALTER TABLE job ALTER COLUMN id TYPE bigint;\n") == []


@pytest.mark.parametrize("default", [
    "now()", "timezone('UTC'::text, now())", "CURRENT_TIMESTAMP", "0", "'x'",
    "'{}'::jsonb", "lower('X')",
])
def test_add_column_with_a_non_volatile_default_is_not_a_rewrite(default: str) -> None:
    """ADD COLUMN with a constant or stable default (now() included) only changes the catalog."""
    assert rules(f"ALTER TABLE bug ADD COLUMN c timestamp DEFAULT {default} NOT NULL;") == []


@pytest.mark.parametrize(("column", "named"), [
    ("u uuid DEFAULT gen_random_uuid()", "gen_random_uuid()"),
    ("u uuid DEFAULT public.uuid_generate_v4()", "uuid_generate_v4()"),
    ("r float DEFAULT random() * 10", "random()"),
    ("t timestamptz DEFAULT clock_timestamp()", "clock_timestamp()"),
    ("n int DEFAULT nextval('bug_n_seq')", "nextval()"),
    ("t text DEFAULT timeofday()", "timeofday()"),
    ("f int DEFAULT my_function()", "my_function()"),
])
def test_add_column_with_a_volatile_default_is_a_rewrite(column: str, named: str) -> None:
    """A volatile (or unknown) function in the default makes ADD COLUMN rewrite the table."""
    [problem] = problems(f"ALTER TABLE bug ADD COLUMN {column};")
    assert problem.rule == "rewrite-volatile-default" and problem.lock == "ACCESS EXCLUSIVE"
    assert named in problem.message


def test_unknown_function_is_said_to_count_as_volatile() -> None:
    """A function not on either list is reported as counting as volatile, not as volatile."""
    [problem] = problems("ALTER TABLE bug ADD COLUMN f int DEFAULT my_function();")
    assert "not known to be stable or immutable" in problem.message


@pytest.mark.parametrize("column", [
    "id bigserial", "id serial", "id smallserial",
    "id int GENERATED ALWAYS AS IDENTITY",
    "double_heat int GENERATED ALWAYS AS (heat * 2) STORED",
])
def test_serial_identity_and_stored_generated_columns_rewrite(column: str) -> None:
    """Columns that fill every row from a sequence or an expression rewrite the table."""
    assert rules(f"ALTER TABLE bug ADD COLUMN {column};") == ["rewrite-volatile-default"]


def test_volatile_default_on_a_new_table_is_fine() -> None:
    """ADD COLUMN with a volatile default on a table the patch created has no rows to fill."""
    sql = ("CREATE TABLE job (id int);\n"
           "ALTER TABLE job ADD COLUMN u uuid DEFAULT gen_random_uuid();\n")
    assert rules(sql) == []


def test_set_default_alone_is_not_a_rewrite() -> None:
    """ALTER COLUMN ... SET DEFAULT random() only affects new rows."""
    assert rules("ALTER TABLE bug ALTER COLUMN r SET DEFAULT random();") == []


@pytest.mark.parametrize("sql", [
    "ALTER TABLE bug SET TABLESPACE slow;", "ALTER TABLE bug SET LOGGED;",
    "ALTER TABLE bug SET UNLOGGED;", "CLUSTER bug USING bug_pkey;",
])
def test_statements_that_copy_the_table_are_rewrites(sql: str) -> None:
    """SET TABLESPACE, SET LOGGED/UNLOGGED and CLUSTER copy the whole table."""
    assert rules(sql) == ["rewrite-table"]


def test_vacuum_full_in_a_live_patch_is_a_rewrite() -> None:
    """VACUUM FULL copies the table (in a cold patch it also cannot run at all)."""
    sql = "-- fastdowntime: cold\nVACUUM FULL bug;\n"
    assert sorted(rules(sql)) == ["no-transaction-in-cold", "rewrite-table"]
    assert "rewrite-table" not in rules("VACUUM bug;")


# --- full scans ---------------------------------------------------------------------


def test_set_not_null_scans_and_hints_at_the_check_constraint() -> None:
    """SET NOT NULL on an existing table scans it; the hint names CHECK ... NOT VALID."""
    [problem] = problems("ALTER TABLE bug ALTER COLUMN heat SET NOT NULL;")
    assert problem.rule == "set-not-null-scan" and problem.lock == "ACCESS EXCLUSIVE"
    assert problem.hint is not None
    assert "CHECK (heat IS NOT NULL) NOT VALID" in problem.hint
    assert "VALIDATE CONSTRAINT" in problem.hint


def test_set_not_null_on_a_table_created_in_the_patch_is_fine() -> None:
    """SET NOT NULL on a table the same patch created has no rows to scan."""
    sql = "CREATE TABLE job (id int, bug int);\nALTER TABLE job ALTER COLUMN bug SET NOT NULL;\n"
    assert rules(sql) == []


def test_set_not_null_on_a_column_just_added_still_scans() -> None:
    """A column the patch added to an existing table is on every row: SET NOT NULL scans."""
    sql = ("ALTER TABLE bug ADD COLUMN x int DEFAULT 0;\n"
           "ALTER TABLE bug ALTER COLUMN x SET NOT NULL;\n")
    assert rules(sql) == ["set-not-null-scan"]


@pytest.mark.parametrize(("constraint", "lock"), [
    ("CHECK (heat >= 0)", "ACCESS EXCLUSIVE"),
    ("FOREIGN KEY (owner) REFERENCES person", "SHARE ROW EXCLUSIVE"),
])
def test_constraint_without_not_valid_scans(constraint: str, lock: str) -> None:
    """ADD CONSTRAINT CHECK/FOREIGN KEY without NOT VALID checks every row under its lock."""
    [problem] = problems(f"ALTER TABLE bug ADD CONSTRAINT c {constraint};")
    assert problem.rule == "constraint-validation-scan" and problem.lock == lock
    assert problem.hint is not None and "NOT VALID" in problem.hint
    assert "VALIDATE CONSTRAINT c" in problem.hint


@pytest.mark.parametrize("constraint", [
    "CHECK (heat >= 0) NOT VALID", "FOREIGN KEY (owner) REFERENCES person NOT VALID",
])
def test_constraint_not_valid_is_fine(constraint: str) -> None:
    """ADD CONSTRAINT ... NOT VALID checks only new rows: no problem."""
    assert rules(f"ALTER TABLE bug ADD CONSTRAINT c {constraint};") == []


@pytest.mark.parametrize("column", [
    "x int CHECK (x > 0)", "owner int REFERENCES person",
])
def test_add_column_with_a_validating_constraint_scans(column: str) -> None:
    """ADD COLUMN with a CHECK or REFERENCES checks every row."""
    assert rules(f"ALTER TABLE bug ADD COLUMN {column};") == ["constraint-validation-scan"]


@pytest.mark.parametrize("constraint", ["PRIMARY KEY (id)", "UNIQUE (name)",
                                        "EXCLUDE USING gist (during WITH &&)"])
def test_unique_constraints_without_an_index_build_one(constraint: str) -> None:
    """ADD PRIMARY KEY/UNIQUE/EXCLUDE builds an index under ACCESS EXCLUSIVE."""
    [problem] = problems(f"ALTER TABLE bug ADD CONSTRAINT k {constraint};")
    assert problem.rule == "constraint-index-build" and problem.blocks == "reads"


def test_unique_constraint_using_an_index_is_fine() -> None:
    """ADD CONSTRAINT ... UNIQUE USING INDEX reuses an index built concurrently: no problem."""
    assert rules("ALTER TABLE bug ADD CONSTRAINT k UNIQUE USING INDEX bug_name_key;") == []


def test_primary_key_hint_names_create_unique_index_concurrently() -> None:
    """The hint for ADD PRIMARY KEY is the concurrent index and USING INDEX."""
    [problem] = problems("ALTER TABLE bug ADD PRIMARY KEY (id);")
    assert problem.hint is not None
    assert "CREATE UNIQUE INDEX CONCURRENTLY" in problem.hint and "USING INDEX" in problem.hint


def test_constraints_on_a_new_table_are_fine() -> None:
    """Constraints added to a table created in the same patch scan nothing."""
    sql = ("CREATE TABLE job (id int, bug int);\n"
           "ALTER TABLE job ADD PRIMARY KEY (id), ADD CONSTRAINT c CHECK (bug > 0);\n")
    assert rules(sql) == []


# --- whole-table DML and plain index builds --------------------------------------------


@pytest.mark.parametrize("sql", ["UPDATE bug SET heat = 0;", "DELETE FROM bug;",
                                 "DELETE FROM ONLY bug USING person;"])
def test_update_or_delete_without_where_is_whole_table_dml(sql: str) -> None:
    """UPDATE/DELETE without WHERE on an existing table touches every row."""
    [problem] = problems(sql)
    assert problem.rule == "whole-table-dml" and problem.lock == "ROW EXCLUSIVE"
    assert problem.blocks == "ddl" and "inside the window" in problem.message


def test_update_with_where_is_fine() -> None:
    """UPDATE with a WHERE clause is a targeted change, not a whole-table one."""
    assert rules("UPDATE bug SET heat = 0 WHERE id < 1000;") == []


def test_update_of_a_new_table_is_fine() -> None:
    """UPDATE without WHERE of a table the patch created touches only the patch's rows."""
    assert rules("CREATE TABLE job (id int);\nUPDATE job SET id = 1;\n") == []


def test_whole_table_update_in_a_live_patch_says_rows_stay_locked() -> None:
    """In a live patch the message says every changed row stays locked until it ends."""
    [problem] = problems("-- fastdowntime: live\nUPDATE bug SET heat = 0;\n")
    assert problem.rule == "whole-table-dml" and "locked until it ends" in problem.message


def test_create_index_on_an_existing_table_in_a_cold_patch() -> None:
    """A plain CREATE INDEX on an existing table in a cold patch holds SHARE: writes wait."""
    [problem] = problems("CREATE INDEX bug__heat__idx ON bug (heat);")
    assert problem.rule == "index-not-concurrently"
    assert (problem.lock, problem.blocks) == ("SHARE", "writes")
    assert problem.hint is not None and "CREATE INDEX CONCURRENTLY bug__heat__idx" in problem.hint


def test_create_index_on_a_new_table_is_fine() -> None:
    """CREATE INDEX on a table created in the same patch is live-safe and no problem."""
    assert rules("CREATE TABLE job (id int);\nCREATE INDEX job_id ON job (id);\n") == []


def test_create_index_concurrently_is_fine() -> None:
    """CREATE INDEX CONCURRENTLY in a live patch is the recommended form."""
    assert rules("CREATE INDEX CONCURRENTLY bug__heat__idx ON bug (heat);") == []


# --- changes that break the old code -----------------------------------------------------


@pytest.mark.parametrize(("sql", "rule"), [
    ("ALTER TABLE bug DROP COLUMN heat;", "drop-column"),
    ("DROP TABLE bugheat;", "drop-table"),
    ("ALTER TABLE bug RENAME COLUMN heat TO warmth;", "rename-column"),
    ("ALTER TABLE bug RENAME TO defect;", "rename-table"),
])
def test_changes_that_break_the_old_code_are_warnings(sql: str, rule: str) -> None:
    """Dropping or renaming what the old code uses is a warning under ACCESS EXCLUSIVE."""
    [problem] = problems(sql)
    assert (problem.rule, problem.severity, problem.lock) == (rule, "warning", "ACCESS EXCLUSIVE")
    assert "old code" in problem.message


def test_dropping_or_renaming_what_the_patch_created_is_fine() -> None:
    """A table or a column the patch itself created is unknown to the old code."""
    sql = (
        "CREATE TABLE job (id int);\nALTER TABLE job RENAME COLUMN id TO job_id;\n"
        "ALTER TABLE job RENAME TO task;\nDROP TABLE task;\n"
        "ALTER TABLE bug ADD COLUMN x int;\nALTER TABLE bug RENAME COLUMN x TO y;\n"
        "ALTER TABLE bug DROP COLUMN y;\n"
    )
    assert rules(sql) == []


# --- positions, severities and silencing -------------------------------------------------


def test_problems_point_at_the_line_and_column_of_the_part_concerned() -> None:
    """A default's problem is placed at its DEFAULT, a statement's at the statement's start."""
    sql = (
        "-- Grüße 🐛\n"
        "SET client_min_messages = ERROR;   UPDATE bug SET heat = 0;\n"
        "ALTER TABLE bug\n    ADD COLUMN u uuid DEFAULT gen_random_uuid();\n"
    )
    whole, rewrite = problems(sql)
    assert (whole.rule, whole.line, whole.col) == ("whole-table-dml", 2, 36)
    assert (rewrite.rule, rewrite.line, rewrite.col) == ("rewrite-volatile-default", 4, 23)


def test_statement_columns_count_characters() -> None:
    """Statement.col is the 1-based column of its first character, after non-ASCII text."""
    report = lint("patch-1-0-0.sql", "SELECT 'ü🐛';  SELECT 2;\n  SELECT 3;\n")
    assert [(s.line, s.col) for s in report.statements] == [(1, 1), (1, 15), (2, 3)]


def test_ignore_comment_silences_the_next_statement_only() -> None:
    """fastdowntime-ignore before a statement silences its advisory codes, not the next one's."""
    sql = (
        "-- fastdowntime-ignore: set-not-null-scan -- validated in patch-2211-40-0\n"
        "ALTER TABLE bug ALTER COLUMN heat SET NOT NULL;\n"
        "ALTER TABLE bug ALTER COLUMN owner SET NOT NULL;\n"
    )
    [problem] = problems(sql)
    assert (problem.rule, problem.line) == ("set-not-null-scan", 3)


def test_trailing_ignore_comment_belongs_to_the_statement_on_its_line() -> None:
    """An ignore comment after a statement, on its last line, silences that statement."""
    sql = (
        "UPDATE config SET value = 1; -- fastdowntime-ignore: whole-table-dml\n"
        "ALTER TABLE bug ADD COLUMN u uuid DEFAULT my_uuid(); -- fastdowntime-ignore: "
        "rewrite-volatile-default, whole-table-dml\n"
    )
    assert rules(sql) == []


def test_ignore_comment_cannot_silence_a_refusing_rule_and_flags_unknown_codes() -> None:
    """Naming a rule the plan refuses, or no rule at all, is a bad-ignore warning."""
    sql = (
        "-- fastdowntime: live\n"
        "-- fastdowntime-ignore: live-blocks, no-such-rule\n"
        "ALTER TABLE bug ADD COLUMN x int;\n"
    )
    found = problems(sql)
    assert sorted(p.rule for p in found) == ["bad-ignore", "bad-ignore", "live-blocks"]
    bad = [p for p in found if p.rule == "bad-ignore"]
    assert all((p.severity, p.line, p.col) == ("warning", 2, 1) for p in bad)
    assert "'live-blocks'" in bad[0].message and "'no-such-rule'" in bad[1].message


def test_one_statement_can_have_several_problems() -> None:
    """Each subcommand of an ALTER TABLE is judged on its own."""
    sql = "ALTER TABLE bug ALTER COLUMN a TYPE bigint, ALTER COLUMN b SET NOT NULL, DROP COLUMN c;"
    assert sorted(rules(sql)) == ["drop-column", "rewrite-column-type", "set-not-null-scan"]

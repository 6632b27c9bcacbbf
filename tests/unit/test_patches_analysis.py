"""Whole patches: kind from header or analysis, violations, problems, syntax errors, JSON."""

from __future__ import annotations

import pytest

from orchestrator.errors import BadInput, ExitCode
from orchestrator.patches import PatchSyntaxError, analyse

COPYRIGHT = """\
-- Copyright 2011 Canonical Ltd.  This software is licensed under the
-- GNU Affero General Public License version 3 (see the file LICENSE).
"""

LAUNCHPAD_COLD = (
    COPYRIGHT
    + """
SET client_min_messages=ERROR;

-- Heat is recomputed nightly.
ALTER TABLE Bug
    ADD COLUMN heat integer DEFAULT 0 NOT NULL,
    ADD COLUMN heat_last_updated timestamp without time zone;

CREATE INDEX bug__heat__idx ON Bug (heat);

INSERT INTO LaunchpadDatabaseRevision VALUES (2211, 3, 0);
"""
)

LAUNCHPAD_LIVE = (
    COPYRIGHT
    + """
SET client_min_messages=ERROR;

CREATE TABLE BugHeatJob (
    id serial PRIMARY KEY,
    bug integer NOT NULL, -- not a foreign key: that would lock bug
    date_created timestamp without time zone DEFAULT now() NOT NULL
);
CREATE INDEX bugheatjob__bug__idx ON BugHeatJob (bug);

CREATE OR REPLACE FUNCTION bug_heat_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- enqueue; a ';' in here must not end the statement
    INSERT INTO BugHeatJob (bug) VALUES (NEW.id);
    RETURN NULL;
END;
$$;

COMMENT ON TABLE BugHeatJob IS 'Bugs whose heat must be recomputed.';
GRANT SELECT, INSERT ON BugHeatJob TO launchpad_main;
CREATE INDEX CONCURRENTLY bug__date_last_updated__idx ON Bug (date_last_updated);

INSERT INTO LaunchpadDatabaseRevision VALUES (2211, 4, 0);
"""
)


def test_static_live_patch() -> None:
    """A patch of only live-safe statements is live without a header."""
    report = analyse("patch-2211-04-0.sql", LAUNCHPAD_LIVE)
    assert report.kind == "live"
    assert report.reason == "every statement is live-safe"
    assert report.header is None
    assert report.problems == () and report.violations == ()
    assert report.name is not None and report.name.key == (2211, 4, 0)
    assert len(report.statements) == 8


def test_static_cold_patch_names_the_first_blocking_statement() -> None:
    """A blocking statement makes the patch cold; the reason names statement, line, lock, table."""
    report = analyse("patch-2211-03-0.sql", LAUNCHPAD_COLD)
    assert report.kind == "cold"
    assert report.reason == (
        "statement 2 (line 7) ALTER TABLE ... ADD COLUMN takes ACCESS EXCLUSIVE on Bug"
        " (1 more statement not live-safe)"
    )
    assert [p.rule for p in report.problems] == ["index-not-concurrently"]


def test_cold_reason_for_a_statement_without_a_lock() -> None:
    """A cold verdict caused by a statement that locks no table says it is not live-safe."""
    report = analyse("patch-1-0-0.sql", "DO $$ BEGIN NULL; END $$;\n")
    assert report.kind == "cold"
    assert report.reason == "statement 1 (line 1) DO block is not in the live-safe set"


def test_cold_reason_for_a_non_blocking_statement() -> None:
    """An UPDATE blocks nobody but is not live-safe: the reason gives its lock and says so."""
    report = analyse("patch-1-0-0.sql", "\n\nUPDATE bug SET heat = 0;\n")
    assert report.reason == (
        "statement 1 (line 3) UPDATE takes ROW EXCLUSIVE on bug and is not in the live-safe set"
    )


@pytest.mark.parametrize(
    "line",
    [
        "-- fastdowntime: cold",
        "-- FASTDOWNTIME: Cold",
        "--fastdowntime:cold",
        "  -- fastdowntime :  COLD  ",
    ],
)
def test_cold_header_wins_over_analysis(line: str) -> None:
    """A cold header (any case and spacing) makes a live-safe patch cold, without a violation."""
    report = analyse("patch-2211-04-0.sql", line + "\n" + LAUNCHPAD_LIVE)
    assert report.kind == "cold" and report.header == "cold"
    assert report.reason == f'header "{line.strip()}"'
    assert report.violations == ()


def test_live_header_among_leading_comments() -> None:
    """A live header after the copyright comment and a blank line still counts."""
    sql = COPYRIGHT + "\n-- fastdowntime: live\n" + "UPDATE bug SET heat = 0 WHERE id = 1;\n"
    report = analyse("patch-2211-05-0.sql", sql)
    assert report.kind == "live" and report.header == "live"
    assert report.reason == 'header "-- fastdowntime: live"'
    assert report.violations == () and report.problems == ()


def test_header_inside_a_block_comment_region() -> None:
    """Block comments are part of the leading comments; a header after them counts."""
    sql = "/* Copyright\n   Canonical */\n-- fastdowntime: cold\nCOMMENT ON TABLE bug IS 'x';\n"
    assert analyse("patch-1-0-0.sql", sql).kind == "cold"


def test_live_header_on_a_blocking_patch_is_a_violation() -> None:
    """A live header on a blocking statement: a violation naming statement, lock and table."""
    sql = "-- fastdowntime: live\n\n\nALTER TABLE bug ADD COLUMN x int;\n"
    report = analyse("patch-2211-03-0.sql", sql)
    expected = (
        "patch-2211-03-0.sql line 4: ALTER TABLE bug ADD COLUMN x int takes ACCESS EXCLUSIVE"
        " on bug, but the file says live"
    )
    assert [str(v) for v in report.violations] == [expected]
    assert expected in [str(p) for p in report.problems]
    assert report.kind == "live"


def test_violation_shortens_long_statements_and_names_every_table() -> None:
    """A long statement is shown on one line, cut; every table at the lock level is named."""
    columns = ",\n".join(f"    ADD COLUMN c{i} integer" for i in range(20))
    sql = (
        "-- fastdowntime: live\n"
        "ALTER TABLE bug ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES person;\n"
        f"ALTER TABLE bug\n{columns};\n"
    )
    report = analyse("patch-1-0-0.sql", sql)
    first, second = (str(v) for v in report.violations)
    assert "takes SHARE ROW EXCLUSIVE on bug, person, but the file says live" in first
    assert "\n" not in second and "..." in second and len(second) < 200


def test_live_header_allows_non_blocking_statements_outside_the_set() -> None:
    """A live header on an UPDATE or a live-safe NOT VALID foreign key is no violation."""
    sql = (
        "-- fastdowntime: live\nUPDATE bug SET heat = 0 WHERE id < 100;\n"
        "ALTER TABLE bug ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES person NOT VALID;\n"
    )
    assert analyse("patch-1-0-0.sql", sql).violations == ()


def test_unknown_header_value_is_a_problem_and_analysis_decides() -> None:
    """An unknown header value is a problem naming the line; the kind falls back to analysis."""
    sql = "-- Copyright\n-- fastdowntime: maybe\nALTER TABLE bug ADD COLUMN x int;\n"
    report = analyse("patch-1-0-0.sql", sql)
    assert report.header is None and report.kind == "cold"
    assert [str(p) for p in report.problems] == [
        "patch-1-0-0.sql line 2: unknown fastdowntime header value 'maybe'; "
        "write '-- fastdowntime: live' or '-- fastdowntime: cold'",
    ]


def test_contrary_headers_are_a_problem_and_the_first_counts() -> None:
    """Two headers that disagree: the first decides, the second is a problem naming both lines."""
    sql = "-- fastdowntime: cold\n-- fastdowntime: live\n-- fastdowntime: cold\nSELECT 1;\n"
    report = analyse("patch-1-0-0.sql", sql)
    assert report.kind == "cold"
    assert [str(p) for p in report.problems] == [
        "patch-1-0-0.sql line 2: this fastdowntime header says live but line 1 says cold; keep one",
    ]


def test_header_with_trailing_words_is_a_problem() -> None:
    """Anything after the word is an unknown value, not a header."""
    report = analyse("patch-1-0-0.sql", "-- fastdowntime: live, honest\nSELECT 1;\n")
    assert report.header is None and "'live, honest'" in str(report.problems[0])


def test_header_after_the_first_statement_is_ignored_with_a_problem() -> None:
    """A header below SET client_min_messages is ignored and reported with its line."""
    sql = (
        "SET client_min_messages=ERROR;\n-- fastdowntime: live\nALTER TABLE bug ADD COLUMN x int;\n"
    )
    report = analyse("patch-1-0-0.sql", sql)
    assert report.header is None and report.kind == "cold"
    assert len(report.problems) == 1
    assert str(report.problems[0]).startswith("patch-1-0-0.sql line 2: ")


def test_header_like_text_inside_a_function_body_is_not_a_header() -> None:
    """A line in a dollar-quoted body that looks like a header is neither header nor problem."""
    sql = (
        "CREATE FUNCTION f() RETURNS int AS $$\n-- fastdowntime: cold\nSELECT 1\n$$ LANGUAGE sql;\n"
    )
    report = analyse("patch-1-0-0.sql", sql)
    assert report.kind == "live" and report.problems == ()


def test_missing_final_semicolon_is_a_problem() -> None:
    """A last statement without ';' is a problem naming the line where it ends."""
    sql = (
        "SET client_min_messages=ERROR;\n"
        "INSERT INTO LaunchpadDatabaseRevision\n    VALUES (1, 0, 0) -- done\n"
    )
    report = analyse("patch-1-0-0.sql", sql)
    assert [str(p) for p in report.problems] == [
        "patch-1-0-0.sql line 3: the last statement does not end with ';'"
    ]
    assert (
        report.statements[-1].sql == "INSERT INTO LaunchpadDatabaseRevision\n    VALUES (1, 0, 0)"
    )


def test_final_semicolon_followed_by_comments_is_fine() -> None:
    """Comments and blank lines after the last ';' are not a missing semicolon."""
    report = analyse("patch-1-0-0.sql", "SELECT 1;\n-- the end\n/* really */\n\n")
    assert report.problems == ()


@pytest.mark.parametrize("sql", ["", "\n\n", "-- only a comment\n", "/* nothing */ ;\n;\n"])
def test_empty_patch_is_a_problem(sql: str) -> None:
    """A patch with no statements is a problem; there is nothing to lock, so it is live."""
    report = analyse("patch-1-0-0.sql", sql)
    assert [str(p) for p in report.problems] == ["patch-1-0-0.sql: the patch has no SQL statements"]
    assert report.statements == () and report.kind == "live"


@pytest.mark.parametrize(
    "control", ["BEGIN", "COMMIT", "ROLLBACK", "START TRANSACTION", "SAVEPOINT a"]
)
def test_transaction_control_is_a_problem(control: str) -> None:
    """BEGIN, COMMIT and the like in a patch are problems: the orchestrator owns the transaction."""
    sql = f"SET client_min_messages=ERROR;\n{control};\nALTER TABLE bug ADD COLUMN x int;\n"
    report = analyse("patch-1-0-0.sql", sql)
    assert len(report.problems) == 1
    assert str(report.problems[0]).startswith("patch-1-0-0.sql line 2: ")
    assert "owns the transaction" in str(report.problems[0])


def test_concurrently_in_a_cold_patch_is_a_problem() -> None:
    """CREATE INDEX CONCURRENTLY in a cold patch is a problem: it cannot run in a transaction."""
    sql = "ALTER TABLE bug ADD COLUMN x int;\nCREATE INDEX CONCURRENTLY bug__x__idx ON bug (x);\n"
    report = analyse("patch-1-0-0.sql", sql)
    assert report.kind == "cold"
    assert [str(p) for p in report.problems] == [
        "patch-1-0-0.sql line 2: CREATE INDEX CONCURRENTLY cannot run inside a transaction block,"
        " and a cold patch runs in the cold-patch transaction; move it to a live patch",
    ]


def test_concurrently_in_a_cold_headed_patch_is_a_problem_too() -> None:
    """A cold header on a CONCURRENTLY patch makes the same problem."""
    sql = "-- fastdowntime: cold\nCREATE INDEX CONCURRENTLY i ON bug (x);\n"
    assert len(analyse("patch-1-0-0.sql", sql).problems) == 1


def test_concurrently_and_vacuum_in_a_live_patch_are_fine() -> None:
    """A live patch runs each statement in autocommit, so CONCURRENTLY and VACUUM are allowed."""
    sql = "-- fastdowntime: live\nCREATE INDEX CONCURRENTLY i ON bug (x);\nVACUUM ANALYZE bug;\n"
    assert analyse("patch-1-0-0.sql", sql).problems == ()


def test_non_conforming_name_is_a_problem_not_an_error() -> None:
    """analyse reports a bad file name as a problem and leaves name None."""
    report = analyse("database/schema/patch-foo.sql", "SELECT 1;\n")
    assert report.name is None
    assert [str(p) for p in report.problems] == [
        "database/schema/patch-foo.sql: name does not match patch-MAJOR-MINOR-POINT.sql",
    ]


def test_statement_text_and_lines_as_written() -> None:
    """Each statement's text is as written, without comments around it or ';', at its line."""
    report = analyse("patch-2211-04-0.sql", LAUNCHPAD_LIVE)
    first = report.statements[0]
    assert (first.sql, first.line) == ("SET client_min_messages=ERROR", 4)
    function = report.statements[3]
    assert function.line == 13
    assert function.sql.startswith("CREATE OR REPLACE FUNCTION bug_heat_job()")
    assert function.sql.endswith("$$")
    assert report.statements[-1].line == 26


def test_syntax_error_line_after_comments_and_multiline_statement() -> None:
    """A syntax error on line 4, after comments and a two-line statement, is reported on line 4."""
    sql = (
        "-- comment\nALTER TABLE bug\n    ADD COLUMN x int; /* done */\nCREATE TABL job (id int);\n"
    )
    with pytest.raises(PatchSyntaxError) as caught:
        analyse("patch-2200-07-0.sql", sql)
    assert str(caught.value) == 'patch-2200-07-0.sql line 4: syntax error at or near "TABL"'
    assert (caught.value.file, caught.value.line) == ("patch-2200-07-0.sql", 4)
    assert isinstance(caught.value, BadInput) and caught.value.exit_code == ExitCode.BAD_INPUT


def test_syntax_error_line_after_non_ascii_text() -> None:
    """Non-ASCII text (2-, 3- and 4-byte characters) before the error does not shift the line."""
    sql = (
        "-- Müller’s patch 🐛\n"
        "COMMENT ON TABLE bug IS 'Fehler — ünïcödé 🐛🐛🐛🐛🐛🐛🐛🐛';\n"
        "\n"
        "CREATE TABL job (id int);\n"
        "SELECT 1;\n"
    )
    with pytest.raises(PatchSyntaxError) as caught:
        analyse("patch-2200-07-0.sql", sql)
    assert caught.value.line == 4


def test_syntax_error_at_end_of_input_names_the_last_line() -> None:
    """An error at the end of the input (an unclosed parenthesis) names the last line with text."""
    with pytest.raises(PatchSyntaxError) as caught:
        analyse("patch-1-0-0.sql", "SELECT 1;\nSELECT (1\n\n\n")
    assert caught.value.line == 2


def test_unterminated_dollar_quote_is_a_syntax_error() -> None:
    """An unterminated dollar-quoted body is a syntax error at the line where it opens."""
    sql = "SELECT 1;\nCREATE FUNCTION f() RETURNS int AS $$\nSELECT 1;\n"
    with pytest.raises(PatchSyntaxError) as caught:
        analyse("patch-1-0-0.sql", sql)
    assert caught.value.line == 2 and "dollar" in caught.value.problem


def test_nul_character_is_a_syntax_error() -> None:
    """A NUL character would end the text for the C parser and hide what follows: refused."""
    with pytest.raises(PatchSyntaxError) as caught:
        analyse("patch-1-0-0.sql", "SELECT 1;\n-- \x00\nALTER TABLE bug ADD COLUMN x int;\n")
    assert caught.value.line == 2 and "NUL" in caught.value.problem


def test_non_ascii_statements_keep_text_and_lines() -> None:
    """Statements after non-ASCII text are cut at the right characters and lines."""
    sql = "-- Grüße 🐛\nCOMMENT ON TABLE bug IS 'ü🐛';\nCOMMENT ON TABLE \"Bügs\" IS 'x';\n"
    report = analyse("patch-1-0-0.sql", sql)
    assert [(s.sql, s.line) for s in report.statements] == [
        ("COMMENT ON TABLE bug IS 'ü🐛'", 2),
        ("COMMENT ON TABLE \"Bügs\" IS 'x'", 3),
    ]
    assert report.statements[1].tables == ('"Bügs"',)


def test_to_json_has_exactly_the_spec_keys() -> None:
    """to_json() has the keys of `patches --json` (SPEC section 3) and statement entries."""
    report = analyse("database/schema/patch-2211-03-0.sql", LAUNCHPAD_COLD)
    data = report.to_json()
    assert set(data) == {"file", "kind", "reason", "statements", "problems"}
    assert data["file"] == "database/schema/patch-2211-03-0.sql"
    assert data["kind"] == "cold" and isinstance(data["reason"], str)
    [problem] = data["problems"]
    assert set(problem) == {
        "rule", "severity", "file", "line", "col", "message", "lock", "blocks", "hint"
    }
    assert (problem["rule"], problem["line"], problem["col"]) == ("index-not-concurrently", 11, 1)
    for entry in data["statements"]:
        assert set(entry) == {"sql", "lock", "tables", "line", "col"}
        assert isinstance(entry["tables"], list)
    assert data["statements"][1]["lock"] == "ACCESS EXCLUSIVE"
    assert data["statements"][1]["tables"] == ["Bug"]


def test_analysis_is_pure_and_repeatable() -> None:
    """Analysing the same text twice gives equal reports (no state kept between calls)."""
    assert analyse("patch-1-0-0.sql", LAUNCHPAD_COLD) == analyse("patch-1-0-0.sql", LAUNCHPAD_COLD)

"""The rule registry, Problem objects, lint() that never gives up on content, and the
documentation of every rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode
from orchestrator.patches import (
    RULES,
    PatchSyntaxError,
    Problem,
    analyse,
    lint,
    refusing,
    unreadable,
)
from orchestrator.patches.hazards import NOT_VOLATILE, VOLATILE
from orchestrator.patches.problem import blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "patch-rules.md"
PLAN_RULES = {
    "bad-name", "unknown-header", "contrary-header", "stray-header", "empty", "unterminated",
    "transaction-control", "no-transaction-in-cold", "live-blocks", "unparseable", "unreadable",
}


def test_registry_codes_are_stable_and_well_formed() -> None:
    """Every rule has a kebab-case code, a severity, a title, a why and an instead."""
    for code, rule in RULES.items():
        assert code == rule.code and re.fullmatch(r"[a-z]+(-[a-z]+)*", code)
        assert rule.severity in ("error", "warning")
        assert rule.title and rule.why and rule.instead


def test_the_plan_refuses_exactly_the_existing_problem_kinds() -> None:
    """The problems that refused a plan before keep refusing it; the new rules are advisory."""
    assert {code for code, rule in RULES.items() if rule.plan} == PLAN_RULES
    assert all(RULES[code].severity == "error" for code in PLAN_RULES)


def _documented() -> tuple[set[str], dict[str, tuple[str, str]]]:
    text = DOC.read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `([a-z-]+)`$", text, re.MULTILINE))
    table = {code: (severity, plan) for code, severity, plan in re.findall(
        r"^\| `([a-z-]+)` \| (error|warning) \| (yes|no) \|", text, re.MULTILINE)}
    return headings, table


def test_every_rule_is_documented_and_every_documented_rule_exists() -> None:
    """docs/patch-rules.md has a section and a summary row per code, and no other code."""
    headings, table = _documented()
    assert headings == set(RULES)
    assert set(table) == set(RULES)


def test_documented_severity_and_plan_match_the_registry() -> None:
    """The summary table's severity and 'plan refuses' columns are the registry's."""
    _, table = _documented()
    for code, rule in RULES.items():
        assert table[code] == (rule.severity, "yes" if rule.plan else "no"), code


def test_every_known_function_is_documented() -> None:
    """The lists of volatile and non-volatile functions in the docs are the code's lists."""
    text = DOC.read_text(encoding="utf-8")
    for function in VOLATILE | NOT_VOLATILE:
        assert f"`{function}`" in text, function


@pytest.mark.parametrize(("lock", "what"), [
    ("ACCESS EXCLUSIVE", "reads"), ("EXCLUSIVE", "writes"), ("SHARE ROW EXCLUSIVE", "writes"),
    ("SHARE", "writes"), ("SHARE UPDATE EXCLUSIVE", "ddl"), ("ROW EXCLUSIVE", "ddl"),
    ("ACCESS SHARE", "ddl"), (None, None),
])
def test_blocks_names_what_a_lock_stops(lock: str | None, what: str | None) -> None:
    """ACCESS EXCLUSIVE blocks reads, SHARE to EXCLUSIVE block writes, weaker ones only DDL."""
    assert blocks(lock) == what


def test_problem_prints_as_the_old_sentence_and_serialises_every_field() -> None:
    """str() is 'file line N: message' (or 'file: message'); to_json() has every field."""
    problem = RULES["set-not-null-scan"].problem("p.sql", 3, 5, "scans", lock="ACCESS EXCLUSIVE")
    assert str(problem) == "p.sql line 3: scans"
    assert str(RULES["empty"].problem("p.sql", None, None, "nothing")) == "p.sql: nothing"
    assert problem.to_json() == {
        "rule": "set-not-null-scan", "severity": "error", "file": "p.sql", "line": 3, "col": 5,
        "message": "scans", "lock": "ACCESS EXCLUSIVE", "blocks": "reads",
        "hint": RULES["set-not-null-scan"].instead,
    }
    assert isinstance(problem, Problem)


def test_refusing_keeps_only_the_problems_a_plan_refuses() -> None:
    """refusing() drops advisory problems and keeps plan-refusing ones."""
    sql = "-- fastdowntime: live\nCREATE INDEX i ON bug (x);\nUPDATE bug SET x = 1;\n"
    report = lint("patch-1-0-0.sql", sql)
    assert {p.rule for p in report.problems} == {"live-blocks", "whole-table-dml"}
    assert [p.rule for p in refusing(report)] == ["live-blocks"]
    assert refusing(report) == report.violations


def test_lint_reports_a_syntax_error_instead_of_raising() -> None:
    """lint() on text the parser refuses: parsed=False, cold, one unparseable problem at it."""
    report = lint("patch-1-0-0.sql", "SELECT 1;\n\nCREATE TABL job (id int);\n")
    assert report.parsed is False and report.kind == "cold" and report.statements == ()
    assert report.reason.startswith("PostgreSQL's parser refuses it at line 3")
    [problem] = report.problems
    assert (problem.rule, problem.line, problem.col) == ("unparseable", 3, 8)
    assert problem.message == 'syntax error at or near "TABL"'
    assert refusing(report) == (problem,)


def test_lint_keeps_name_and_header_problems_of_an_unparseable_file() -> None:
    """A misnamed file that does not parse gets both problems."""
    report = lint("patch-x.sql", "-- fastdowntime: maybe\nSELEC 1;\n")
    assert [p.rule for p in report.problems] == ["bad-name", "unknown-header", "unparseable"]


def test_lint_of_bytes_that_are_not_utf8_is_unparseable_at_the_byte() -> None:
    """Bytes that are not UTF-8 give an unparseable problem at the line and column."""
    report = lint("patch-1-0-0.sql", "SELECT 1;\nSELECT 'ü".encode() + b"\xff';\n")
    assert report.parsed is False
    [problem] = report.problems
    assert (problem.rule, problem.line, problem.col) == ("unparseable", 2, 10)
    assert "not UTF-8" in problem.message and "0xff" in problem.message


def test_lint_of_utf8_bytes_is_lint_of_the_text() -> None:
    """UTF-8 bytes are linted like the text they hold."""
    text = "-- Grüße\nALTER TABLE bug ADD COLUMN x int;\n"
    assert lint("patch-1-0-0.sql", text.encode()) == lint("patch-1-0-0.sql", text)


def test_unreadable_report() -> None:
    """A file that cannot be read gets a report with one unreadable problem and no line."""
    report = unreadable("patch-1-0-0.sql", "No such file or directory")
    assert report.parsed is False and report.kind == "cold"
    [problem] = report.problems
    assert (problem.rule, problem.line, str(problem)) == (
        "unreadable", None, "patch-1-0-0.sql: cannot read the file: No such file or directory")


def test_analyse_still_raises_with_line_and_column() -> None:
    """analyse() keeps its contract: PatchSyntaxError (exit 2) naming file, line and column."""
    with pytest.raises(PatchSyntaxError) as caught:
        analyse("patch-1-0-0.sql", "SELECT 1;\n  CREATE TABL job (id int);\n")
    error = caught.value
    assert (error.line, error.col, error.exit_code) == (2, 10, ExitCode.BAD_INPUT)
    assert str(error) == 'patch-1-0-0.sql line 2: syntax error at or near "TABL"'


def test_old_problem_kinds_carry_their_codes_and_positions() -> None:
    """Header, terminator and transaction problems have codes, lines and columns."""
    sql = (
        "-- fastdowntime: cold\n  -- fastdowntime: live\nBEGIN;\n"
        "CREATE INDEX CONCURRENTLY i ON bug (x);\nSELECT 1"
    )
    found = [(p.rule, p.line, p.col) for p in lint("patch-1-0-0.sql", sql).problems]
    assert found == [
        ("contrary-header", 2, 3), ("transaction-control", 3, 1),
        ("no-transaction-in-cold", 4, 1), ("unterminated", 5, 9),
    ]

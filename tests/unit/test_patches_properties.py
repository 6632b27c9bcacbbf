"""Properties of patch analysis over generated patches built from known statements."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from orchestrator.patches import PatchReport, analyse

# (sql without ';', live-safe, blocking) on tables that exist before the patch
LIVE = [
    ("CREATE INDEX CONCURRENTLY bug__heat__idx ON bug (heat)", False),
    ("COMMENT ON TABLE bug IS 'A bug; with a semicolon -- and dashes'", False),
    ("GRANT SELECT ON bug TO launchpad_main", False),
    ("REVOKE ALL ON bug FROM public", False),
    ("SET client_min_messages=ERROR", False),
    (
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "BEGIN\n    -- a comment; inside\n    RETURN 1;\nEND;\n$$",
        False,
    ),
    ("CREATE OR REPLACE VIEW bug_view AS\n    SELECT id FROM bug", False),
    ("ALTER TABLE bug VALIDATE CONSTRAINT bug_heat_check", False),
    ("ALTER TABLE bug ADD CONSTRAINT c CHECK (heat > 0) NOT VALID", True),
    ("INSERT INTO LaunchpadDatabaseRevision VALUES (2211, 3, 0)", False),
]
COLD = [
    ("ALTER TABLE bug ADD COLUMN heat integer", True),
    ("UPDATE bug SET heat = 0 WHERE heat IS NULL", False),
    ("CREATE INDEX bug__x__idx ON bug (x)", True),
    ("DROP TABLE person", True),
    ("TRUNCATE bugtask", True),
    ("DO $$ BEGIN PERFORM 1; END $$", False),
    ("CREATE TRIGGER t AFTER INSERT ON bug FOR EACH ROW EXECUTE FUNCTION f()", True),
    ("SELECT count(*) FROM bug", False),
    ('ALTER TABLE ONLY "Odd" ALTER COLUMN a SET NOT NULL', True),
    ("ALTER TABLE bug ALTER COLUMN heat SET STATISTICS 100", False),
]
# on the table "job" that the patch creates first: live-safe only after the CREATE TABLE
ON_NEW = [
    "CREATE INDEX job__bug__idx ON job (bug)",
    "ALTER TABLE job ADD COLUMN note text",
    "INSERT INTO job (bug) VALUES (1)",
    "CREATE TRIGGER job_t AFTER INSERT ON job FOR EACH ROW EXECUTE FUNCTION f()",
    "ALTER TABLE job ALTER COLUMN bug SET NOT NULL",
    "UPDATE job SET bug = 2",
]
CREATE_JOB = "CREATE TABLE job (id serial PRIMARY KEY, bug integer)"

SEPARATORS = [
    "\n",
    "\n\n",
    " ",
    "\n-- a note; with a semicolon\n",
    "\n/* a block; comment\n   over two lines */\n",
    "\n-- Grüße aus Köln 🐛; ü\n",
    "  /* ünïcödé */  ",
]

statement = st.one_of(
    st.sampled_from([(sql, True, blocking) for sql, blocking in LIVE]),
    st.sampled_from([(sql, False, blocking) for sql, blocking in COLD]),
)
patch_statements = st.lists(statement, min_size=1, max_size=12)


def build(statements: list[str], separators: list[str], header: str = "") -> str:
    """The patch text: header, then each statement with ';' and a separator after it."""
    text = header
    for i, sql in enumerate(statements):
        text += sql + ";" + separators[i % len(separators)]
    return text


def shape(report: PatchReport) -> Counter[tuple[object, ...]]:
    """The statements of a report without their positions, as a multiset."""
    return Counter((s.sql, s.lock, s.tables, s.blocking, s.live_safe) for s in report.statements)


@given(patch_statements, st.lists(st.sampled_from(SEPARATORS), min_size=1))
def test_live_iff_every_statement_is_live(
    chosen: list[tuple[str, bool, bool]], separators: list[str]
) -> None:
    """Without a header a patch is live exactly when every statement comes from the live pool."""
    report = analyse("patch-1-0-0.sql", build([s for s, _, _ in chosen], separators))
    assert report.kind == ("live" if all(live for _, live, _ in chosen) else "cold")
    assert [s.live_safe for s in report.statements] == [live for _, live, _ in chosen]
    assert [s.blocking for s in report.statements] == [blocking for _, _, blocking in chosen]


@given(st.data())
def test_kind_does_not_depend_on_order(data: st.DataObject) -> None:
    """Reordering statements that create no table changes neither kind nor per-statement locks."""
    chosen = data.draw(patch_statements)
    shuffled = data.draw(st.permutations(chosen))
    first = analyse("patch-1-0-0.sql", build([s for s, _, _ in chosen], ["\n"]))
    second = analyse("patch-1-0-0.sql", build([s for s, _, _ in shuffled], ["\n"]))
    assert first.kind == second.kind
    assert shape(first) == shape(second)


@given(
    patch_statements,
    st.lists(st.sampled_from(SEPARATORS), min_size=1),
    st.sampled_from(["", "-- Copyright\n\n", "/* Grüße\n */\n-- x\n"]),
)
def test_text_and_lines_are_where_the_statements_are(
    chosen: list[tuple[str, bool, bool]], separators: list[str], prefix: str
) -> None:
    """Each statement's text is as written and starts on its line; lines never go backwards."""
    statements = [s for s, _, _ in chosen]
    text = build(statements, separators, prefix)
    report = analyse("patch-1-0-0.sql", text)
    assert [s.sql for s in report.statements] == statements
    lines = text.split("\n")
    for found in report.statements:
        assert found.sql.split("\n")[0] in lines[found.line - 1]
    numbers = [s.line for s in report.statements]
    assert numbers == sorted(numbers)
    assert report.problems == () or report.kind == "cold"


@given(st.lists(st.sampled_from(ON_NEW), min_size=1, max_size=6), st.sampled_from(LIVE))
def test_statements_on_a_table_created_first_are_live(on_new: list[str], live: tuple) -> None:
    """After CREATE TABLE job, statements on job block nobody and the patch stays live."""
    report = analyse("patch-1-0-0.sql", build([CREATE_JOB, *on_new, live[0]], ["\n"]))
    assert report.kind == "live"
    assert not any(s.blocking for s in report.statements[:-1])


@given(st.lists(st.sampled_from(ON_NEW), min_size=1, max_size=6))
def test_statements_before_the_table_is_created_are_cold(on_new: list[str]) -> None:
    """The same statements before CREATE TABLE job are on an existing job: the patch is cold."""
    report = analyse("patch-1-0-0.sql", build([*on_new, CREATE_JOB], ["\n"]))
    assert report.kind == "cold"


@given(patch_statements, st.sampled_from(["live", "cold", "LIVE", "Cold"]))
def test_header_decides_and_live_header_flags_unsafe_blocking(
    chosen: list[tuple[str, bool, bool]], header: str
) -> None:
    """A header sets the kind; under a live header each blocking unsafe statement is a violation."""
    text = build([s for s, _, _ in chosen], ["\n"], f"-- fastdowntime: {header}\n")
    report = analyse("patch-1-0-0.sql", text)
    assert report.kind == header.lower()
    expected = sum(1 for _, live, blocking in chosen if blocking and not live)
    assert len(report.violations) == (expected if header.lower() == "live" else 0)
    assert set(report.violations) <= set(report.problems)


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")))
def test_comment_text_never_breaks_analysis(comment: str) -> None:
    """Any text in a line comment is ignored: the statements and their lines are unchanged."""
    flat = comment.replace("\n", " ").replace("\r", " ")
    text = f"-- {flat}\nALTER TABLE bug ADD COLUMN x int; -- {flat}\nSELECT 1;\n"
    report = analyse("patch-1-0-0.sql", text)
    assert [(s.sql, s.line) for s in report.statements] == [
        ("ALTER TABLE bug ADD COLUMN x int", 2),
        ("SELECT 1", 3),
    ]

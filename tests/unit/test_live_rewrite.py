"""Live-patch statements: plain CREATE INDEX -> CONCURRENTLY, index targets, transactions."""

from __future__ import annotations

import pglast
import pytest
from pglast import ast

from orchestrator.patches.locks import Relation
from orchestrator.patches.rewrite import (
    IndexBuild,
    concurrent_form,
    index_build,
    runs_in_transaction,
)

VARIANTS = [
    "CREATE INDEX item__name__idx ON item (name)",
    "CREATE UNIQUE INDEX item__code__key ON item (code)",
    "create index item__tags__idx on item using gin (tags)",
    "CREATE INDEX item__live__idx ON item (name) WHERE deleted IS NULL",
    "CREATE INDEX item__name__idx ON item (name) INCLUDE (price, stock)",
    "CREATE INDEX item__name__idx ON public.item (name)",
    'CREATE INDEX "Item Name" ON "Odd"."Item" (lower("Name") DESC NULLS LAST)',
    "CREATE INDEX IF NOT EXISTS item__name__idx ON item (name)",
    "CREATE INDEX ON item (name)",
    "CREATE INDEX item__name__idx ON ONLY item (name)",
    "CREATE INDEX item__name__idx ON item (name) WITH (fillfactor = 70)",
    "CREATE INDEX item__name__idx ON item (name text_pattern_ops, id)",
    "CREATE UNIQUE INDEX item__code__key ON item (code) NULLS NOT DISTINCT",
    "CREATE INDEX item__name__idx ON item -- the table\n    (name)",
]


def _index(sql: str) -> ast.IndexStmt:
    (raw,) = pglast.parse_sql(sql)
    assert isinstance(raw.stmt, ast.IndexStmt)
    return raw.stmt


@pytest.mark.parametrize("sql", VARIANTS)
def test_concurrent_form_parses_again_as_the_same_index_built_concurrently(sql: str) -> None:
    """The rewritten statement parses, is CONCURRENTLY, and is otherwise the same statement."""
    rewritten = concurrent_form(sql)
    assert rewritten is not None
    after, before = _index(rewritten), _index(sql)
    assert after.concurrent is True
    before.concurrent = True
    assert after == before


def test_concurrent_form_keeps_every_clause() -> None:
    """UNIQUE, IF NOT EXISTS, schema, USING, INCLUDE and WHERE all survive the rewrite."""
    rewritten = concurrent_form(
        "CREATE UNIQUE INDEX IF NOT EXISTS t__a__key ON s.t USING gin (a) INCLUDE (b)"
        " WHERE c > 1"
    )
    assert rewritten == (
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS t__a__key ON s.t USING gin (a)"
        " INCLUDE (b) WHERE c > 1"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX CONCURRENTLY item__name__idx ON item (name)",
        "create unique index concurrently if not exists k on item (code)",
        "CREATE TABLE t (a int)",
        "DROP INDEX item__name__idx",
        "REINDEX INDEX item__name__idx",
        "SELECT 1",
        "CREATE INDEX a ON t (x); CREATE INDEX b ON t (y)",
        "",
    ],
)
def test_concurrent_form_is_none_for_anything_but_one_plain_create_index(sql: str) -> None:
    """Already concurrent, other statements, several statements or none: nothing to rewrite."""
    assert concurrent_form(sql) is None


def test_concurrent_form_refuses_text_postgres_refuses() -> None:
    """Text the parser refuses raises ParseError rather than passing for "not an index"."""
    with pytest.raises(pglast.parser.ParseError):
        concurrent_form("CREATE INDEX ON")


@pytest.mark.parametrize(
    ("sql", "build"),
    [
        (
            "CREATE INDEX item__name__idx ON item (name)",
            IndexBuild(Relation(None, "item"), "item__name__idx", False, False),
        ),
        (
            'CREATE INDEX CONCURRENTLY IF NOT EXISTS "Odd Idx" ON "S"."Item" (a)',
            IndexBuild(Relation("S", "Item"), "Odd Idx", True, True),
        ),
        ("CREATE INDEX ON public.item (name)", IndexBuild(Relation("public", "item"), None,
                                                          False, False)),
        ("CREATE TABLE item2 (a int)", None),
    ],
)
def test_index_build_names_index_and_table(sql: str, build: IndexBuild | None) -> None:
    """index_build gives the index name (None when unnamed), table, CONCURRENTLY, IF NOT EXISTS."""
    assert index_build(sql) == build


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE INDEX i ON t (a)", True),
        ("CREATE TABLE t (a int)", True),
        ("INSERT INTO LaunchpadDatabaseRevision VALUES (2211, 1, 0)", True),
        ("SET client_min_messages = ERROR", True),
        ("ALTER TABLE t VALIDATE CONSTRAINT c", True),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", False),
        ("DROP INDEX CONCURRENTLY i", False),
        ("REINDEX INDEX CONCURRENTLY i", False),
        ("VACUUM t", False),
        ("REINDEX DATABASE app", False),
        ("CLUSTER", False),
        ("CREATE DATABASE other", False),
        ("ALTER SYSTEM SET work_mem = '8MB'", False),
    ],
)
def test_runs_in_transaction(sql: str, expected: bool) -> None:
    """Statements PostgreSQL refuses inside a transaction block are the ones said False."""
    assert runs_in_transaction(sql) is expected

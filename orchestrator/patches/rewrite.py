"""One statement of a patch, as the appliers need to see it; pure, no I/O.

- :func:`concurrent_form` turns a plain ``CREATE INDEX`` into ``CREATE INDEX
  CONCURRENTLY`` (PostgreSQL's parser and pglast's deparser, not text edits);
- :func:`index_build` names the index and table of a ``CREATE INDEX``, so an
  invalid index left by a failed concurrent build can be found and dropped;
- :func:`runs_in_transaction` says whether PostgreSQL accepts the statement
  inside a transaction block (CONCURRENTLY and VACUUM it does not);
- :func:`inserts_into` says whether it records the patch in the revision table.

Each takes the text of one statement, as :class:`~orchestrator.patches.Statement`
holds it, and raises :class:`pglast.parser.ParseError` on text PostgreSQL's
parser refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast
from pglast.parser import parse_sql_json
from pglast.stream import RawStream

from orchestrator.patches.locks import Relation, range_var
from orchestrator.patches.statements import REVISION_INSERT, effect_of


@dataclass(frozen=True)
class IndexBuild:
    """What a ``CREATE INDEX`` builds: the ``index`` (None when the statement names none,
    and PostgreSQL picks a name) on ``table``, as written; the index lives in the
    table's schema."""

    table: Relation
    index: str | None
    concurrent: bool
    if_not_exists: bool


def concurrent_form(sql: str) -> str | None:
    """``sql`` rewritten as ``CREATE INDEX CONCURRENTLY``, or None when ``sql`` is not
    exactly one non-concurrent ``CREATE INDEX``.

    Everything else of the statement (UNIQUE, IF NOT EXISTS, USING, INCLUDE,
    WHERE, WITH, TABLESPACE, the schema) is kept; comments inside it are not.
    """
    statements = pglast.parse_sql(sql)
    if len(statements) != 1:
        return None
    node = statements[0].stmt
    if not isinstance(node, ast.IndexStmt) or node.concurrent:
        return None
    node.concurrent = True
    return str(RawStream()(node))


def index_build(sql: str) -> IndexBuild | None:
    """The :class:`IndexBuild` of a ``CREATE INDEX`` statement, else None."""
    node = _only_statement(sql)
    if node is None or "IndexStmt" not in node:
        return None
    index = node["IndexStmt"]
    return IndexBuild(
        table=range_var(index["relation"]),
        index=index.get("idxname"),
        concurrent=bool(index.get("concurrent")),
        if_not_exists=bool(index.get("if_not_exists")),
    )


def runs_in_transaction(sql: str) -> bool:
    """False for a statement PostgreSQL refuses inside a transaction block, else True.

    Those are the ``CONCURRENTLY`` forms (CREATE INDEX, DROP INDEX, REINDEX,
    DETACH PARTITION), VACUUM, REINDEX SYSTEM/DATABASE, CLUSTER of every
    table, DISCARD ALL and the cluster-level statements (databases,
    tablespaces, ALTER SYSTEM, subscriptions). When in doubt the answer is
    False: running a statement outside a transaction block is always possible.
    """
    node = _only_statement(sql)
    if node is None:
        return False
    ((name, body),) = node.items()
    if name in _CLUSTER_LEVEL:
        return False
    if name == "ReindexStmt" and body.get("kind") in _REINDEX_MANY:
        return False
    if name == "ClusterStmt" and not body.get("relation"):
        return False
    if name == "DiscardStmt" and body.get("target") == "DISCARD_ALL":
        return False
    return not effect_of(node, "").no_transaction


def inserts_into(sql: str, revision_table: str) -> bool:
    """True when ``sql`` is one INSERT into ``revision_table`` (schema-qualified or not, any
    case, matched as the analysis matches it): a patch that records its own revision row."""
    node = _only_statement(sql)
    return (node is not None and "InsertStmt" in node
            and effect_of(node, revision_table).what == REVISION_INSERT)


_CLUSTER_LEVEL = frozenset({
    "CreatedbStmt", "DropdbStmt", "CreateTableSpaceStmt", "DropTableSpaceStmt",
    "AlterSystemStmt", "CreateSubscriptionStmt", "AlterSubscriptionStmt",
    "DropSubscriptionStmt",
})
_REINDEX_MANY = frozenset({"REINDEX_OBJECT_SYSTEM", "REINDEX_OBJECT_DATABASE"})


def _only_statement(sql: str) -> dict[str, Any] | None:
    """The parse tree (``{"<NodeType>": {...}}``) of ``sql`` when it holds one statement."""
    statements = json.loads(parse_sql_json(sql)).get("stmts", [])
    if len(statements) != 1:
        return None
    tree: dict[str, Any] = statements[0]["stmt"]
    return tree

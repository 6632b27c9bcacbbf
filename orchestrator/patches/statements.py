"""One parsed statement -> its :class:`~orchestrator.patches.locks.Effect`.

The input is one statement of ``pglast.parser.parse_sql_json``'s output (a
dict ``{"AlterTableStmt": {...}}``), so nothing here re-parses or deparses.
Lock levels follow PostgreSQL 15's documentation and, where it is silent,
its source (``tablecmds.c``, ``comment.c``, ``sequence.c``, ``trigger.c``).

Deliberate choices, where the documentation leaves room:

- CREATE OR REPLACE VIEW is reported with ACCESS SHARE on the tables its
  query reads; replacing an existing view also takes ACCESS EXCLUSIVE on the
  view itself for a moment, which we cannot see without the catalog.
- REINDEX TABLE t is reported as ACCESS EXCLUSIVE on t: it holds SHARE on t
  and ACCESS EXCLUSIVE on each of t's indexes, which stops the planner for
  every query on t. DROP INDEX, ALTER INDEX and REINDEX INDEX name the index.
- Statement types we do not know are cold, with ACCESS EXCLUSIVE on the
  relation they name if they name one, else no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.patches.locks import (
    ACCESS_EXCLUSIVE,
    ACCESS_SHARE,
    COLD,
    EXCLUSIVE,
    IF_NEW,
    LEVELS,
    LIVE,
    RANK,
    ROW_EXCLUSIVE,
    ROW_SHARE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    Effect,
    Relation,
    name_list,
    qualified,
    range_var,
    subcommand_level,
    subcommand_words,
)

Node = Mapping[str, Any]
Locks = list[tuple[Relation, str]]
Handler = Callable[[Node, str], Effect]

_DML = ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt")
_RELATION_OBJECTS = {
    "OBJECT_TABLE": "TABLE",
    "OBJECT_INDEX": "INDEX",
    "OBJECT_SEQUENCE": "SEQUENCE",
    "OBJECT_VIEW": "VIEW",
    "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_FOREIGN_TABLE": "FOREIGN TABLE",
}
# Objects that belong to a table: the table is every name but the last.
_TABLE_CHILDREN = {
    "OBJECT_TRIGGER": "TRIGGER",
    "OBJECT_RULE": "RULE",
    "OBJECT_POLICY": "POLICY",
    "OBJECT_COLUMN": "COLUMN",
    "OBJECT_TABCONSTRAINT": "CONSTRAINT",
}
_NO_TRANSACTION_OPTIONS = frozenset({"concurrently"})


def reads(tree: Any, level: str = ACCESS_SHARE) -> Locks:
    """Every relation a query tree names, in written order, with the level a query takes on it.

    Plain references get ``level`` (ACCESS SHARE), the target of a nested
    INSERT/UPDATE/DELETE/MERGE gets ROW EXCLUSIVE and the FROM list of a
    SELECT ... FOR UPDATE/SHARE gets ROW SHARE. Names of WITH queries and the
    target of SELECT INTO are not relations it reads, so they are left out.
    """
    found: Locks = []
    ctes: set[str] = set()
    stack: list[tuple[Any, str]] = [(tree, level)]
    while stack:
        node, lvl = stack.pop()
        if isinstance(node, list):
            stack.extend((item, lvl) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        if "relname" in node:
            found.append((range_var(node), lvl))
            continue
        for key, value in node.items():
            if key in _DML and isinstance(value, dict):
                target = value.get("relation")
                if target:
                    found.append((range_var(target), ROW_EXCLUSIVE))
                rest = {k: v for k, v in value.items() if k != "relation"}
                stack.append((rest, lvl))
            elif key == "SelectStmt" and isinstance(value, dict) and value.get("lockingClause"):
                stack.append((value.get("fromClause"), ROW_SHARE))
                stack.append(({k: v for k, v in value.items() if k != "fromClause"}, lvl))
            elif key == "CommonTableExpr" and isinstance(value, dict):
                ctes.add(value.get("ctename", ""))
                stack.append((value, lvl))
            elif key != "intoClause":
                stack.append((value, lvl))
    found.sort(key=lambda pair: pair[0].location)
    return [(r, lvl) for r, lvl in found if r.schema is not None or r.name not in ctes]


REVISION_INSERT = "INSERT into the revision table"
"""What :func:`effect_of` calls an INSERT into the revision table (a patch recording itself)."""


def _matches(relation: Relation, revision_table: str) -> bool:
    wanted = revision_table.lower().split(".")
    if relation.name.lower() != wanted[-1]:
        return False
    return relation.schema is None or len(wanted) == 1 or relation.schema.lower() == wanted[0]


def _insert(node: Node, revision_table: str) -> Effect:
    target = range_var(node["relation"])
    if _matches(target, revision_table):
        return Effect(REVISION_INSERT, LIVE, tuple(reads({"InsertStmt": node})))
    return Effect("INSERT", IF_NEW, tuple(reads({"InsertStmt": node})))


def _select(node: Node, _: str) -> Effect:
    into = node.get("intoClause")
    locks = tuple(reads({"SelectStmt": node}))
    if into:
        created = range_var(into["rel"])
        return Effect("SELECT INTO", IF_NEW, locks, (created,), creating=True)
    return Effect("SELECT", COLD, locks)


def _foreign_keys(constraints: Any, own: Relation) -> Locks:
    """SHARE ROW EXCLUSIVE on every table a list of constraints references (but ``own``)."""
    locks: Locks = []
    for item in constraints or []:
        constraint = item.get("Constraint", {})
        if constraint.get("contype") == "CONSTR_FOREIGN" and constraint.get("pktable"):
            referenced = range_var(constraint["pktable"])
            if referenced.key != own.key:
                locks.append((referenced, SHARE_ROW_EXCLUSIVE))
    return locks


def _create_table(node: Node, _: str) -> Effect:
    table = range_var(node["relation"])
    locks: Locks = []
    for element in node.get("tableElts", []):
        if "ColumnDef" in element:
            locks += _foreign_keys(element["ColumnDef"].get("constraints"), table)
        elif "Constraint" in element:
            locks += _foreign_keys([element], table)
        elif "TableLikeClause" in element:
            locks.append((range_var(element["TableLikeClause"]["relation"]), ACCESS_SHARE))
    # DefineRelation: ACCESS EXCLUSIVE on the parent of a new partition,
    # SHARE UPDATE EXCLUSIVE on the parents of an inheriting table.
    parent_level = ACCESS_EXCLUSIVE if node.get("partbound") else SHARE_UPDATE_EXCLUSIVE
    locks += [(range_var(parent), parent_level) for parent in node.get("inhRelations", [])]
    what = "CREATE TABLE ... PARTITION OF" if node.get("partbound") else "CREATE TABLE"
    creates = () if node.get("if_not_exists") else (table,)
    return Effect(what, IF_NEW, tuple(locks), creates, creating=True)


def _create_table_as(node: Node, _: str) -> Effect:
    matview = node.get("objtype") == "OBJECT_MATVIEW"
    what = "CREATE MATERIALIZED VIEW" if matview else "CREATE TABLE AS"
    created = range_var(node["into"]["rel"])
    creates = () if node.get("if_not_exists") else (created,)
    return Effect(what, IF_NEW, tuple(reads(node.get("query"))), creates, creating=True)


def _create_index(node: Node, _: str) -> Effect:
    table = range_var(node["relation"])
    unique = "UNIQUE " if node.get("unique") else ""
    index = [Relation(table.schema, node["idxname"])] if node.get("idxname") else []
    creates = () if node.get("if_not_exists") else tuple(index)
    if node.get("concurrent"):
        what = f"CREATE {unique}INDEX CONCURRENTLY"
        return Effect(what, LIVE, ((table, SHARE_UPDATE_EXCLUSIVE),), creates, no_transaction=True)
    return Effect(f"CREATE {unique}INDEX", IF_NEW, ((table, SHARE),), creates, creating=True)


def _alter_table(node: Node, _: str) -> Effect:
    objtype = node.get("objtype", "OBJECT_TABLE")
    cmds = [item.get("AlterTableCmd", {}) for item in node.get("cmds", [])]
    only = "" if node["relation"].get("inh", False) else " ONLY"
    noun = _RELATION_OBJECTS.get(objtype, "TYPE")
    if objtype not in _RELATION_OBJECTS:  # ALTER TYPE on a composite type: no table lock
        words = subcommand_words(cmds[0]) if cmds else ""
        return Effect(f"ALTER {noun} ... {words}".rstrip(), COLD)
    table = range_var(node["relation"])
    locks: Locks = []
    for cmd in cmds:
        level = subcommand_level(cmd)
        locks.append((table, level))
        definition = cmd.get("def") or {}
        if "Constraint" in definition:
            locks += _foreign_keys([definition], table)
        elif "ColumnDef" in definition:
            locks += _foreign_keys(definition["ColumnDef"].get("constraints"), table)
        elif "PartitionCmd" in definition and definition["PartitionCmd"].get("name"):
            partition = range_var(definition["PartitionCmd"]["name"])
            attach = cmd.get("subtype") == "AT_AttachPartition"
            locks.append((partition, ACCESS_EXCLUSIVE if attach else level))
    top = max((subcommand_level(c) for c in cmds), key=RANK.__getitem__, default=None)
    strongest = [subcommand_words(c) for c in cmds if subcommand_level(c) == top]
    what = f"ALTER {noun}{only} ... {', '.join(dict.fromkeys(strongest))}"
    category = LIVE if cmds and all(_spec_live(c) for c in cmds) else IF_NEW
    detach_concurrently = any(
        (c.get("def") or {}).get("PartitionCmd", {}).get("concurrent") for c in cmds
    )
    return Effect(what, category, tuple(locks), no_transaction=detach_concurrently)


def _spec_live(cmd: Node) -> bool:
    """VALIDATE CONSTRAINT and ADD CONSTRAINT ... NOT VALID: in the SPEC's live-safe set."""
    if cmd.get("subtype") == "AT_ValidateConstraint":
        return True
    constraint = (cmd.get("def") or {}).get("Constraint", {})
    return cmd.get("subtype") == "AT_AddConstraint" and bool(constraint.get("skip_validation"))


def _rename(node: Node, _: str) -> Effect:
    kind = node.get("renameType", "")
    relation_node = node.get("relation")
    if relation_node is None:
        noun = kind.removeprefix("OBJECT_").replace("_", " ")
        return Effect(f"ALTER {noun} ... RENAME", COLD)
    relation = range_var(relation_node)
    if kind in _RELATION_OBJECTS:
        # RenameRelation: SHARE UPDATE EXCLUSIVE for ALTER INDEX, else ACCESS EXCLUSIVE.
        level = SHARE_UPDATE_EXCLUSIVE if kind == "OBJECT_INDEX" else ACCESS_EXCLUSIVE
        renamed = Relation(relation.schema, node.get("newname", ""))
        what = f"ALTER {_RELATION_OBJECTS[kind]} ... RENAME"
        return Effect(what, IF_NEW, ((relation, level),), renames=(relation, renamed))
    noun = _RELATION_OBJECTS.get(node.get("relationType", ""), "TABLE")
    child = _TABLE_CHILDREN.get(kind, kind.removeprefix("OBJECT_"))
    what = f"ALTER {noun} ... RENAME {child}"
    return Effect(what, IF_NEW, ((relation, ACCESS_EXCLUSIVE),))


def _drop(node: Node, _: str) -> Effect:
    kind = node.get("removeType", "")
    concurrently = " CONCURRENTLY" if node.get("concurrent") else ""
    names = [qualified(name_list(obj)) for obj in node.get("objects", []) if "List" in obj]
    if kind in _RELATION_OBJECTS:
        level = SHARE_UPDATE_EXCLUSIVE if concurrently else ACCESS_EXCLUSIVE
        locks = tuple((name, level) for name in names if name is not None)
        what = f"DROP {_RELATION_OBJECTS[kind]}{concurrently}"
        return Effect(what, IF_NEW, locks, no_transaction=bool(concurrently))
    if kind in _TABLE_CHILDREN:  # DROP TRIGGER/RULE/POLICY t ON table: the table is locked
        tables = [
            qualified(name_list(obj)[:-1]) for obj in node.get("objects", []) if "List" in obj
        ]
        locks = tuple((table, ACCESS_EXCLUSIVE) for table in tables if table is not None)
        return Effect(f"DROP {_TABLE_CHILDREN[kind]}", IF_NEW, locks)
    return Effect(f"DROP {kind.removeprefix('OBJECT_').replace('_', ' ')}", COLD)


def _comment(node: Node, _: str) -> Effect:
    # CommentObject locks the object's relation with SHARE UPDATE EXCLUSIVE.
    kind = node.get("objtype", "")
    names = name_list(node.get("object") or {})
    relation = None
    if kind in _RELATION_OBJECTS:
        relation = qualified(names)
    elif kind in _TABLE_CHILDREN:
        relation = qualified(names[:-1])
    locks = ((relation, SHARE_UPDATE_EXCLUSIVE),) if relation else ()
    return Effect(f"COMMENT ON {kind.removeprefix('OBJECT_').replace('_', ' ')}", LIVE, locks)


def _vacuum(node: Node, _: str) -> Effect:
    options = {o.get("DefElem", {}).get("defname") for o in node.get("options", [])}
    vacuum = bool(node.get("is_vacuumcmd"))
    level = ACCESS_EXCLUSIVE if vacuum and "full" in options else SHARE_UPDATE_EXCLUSIVE
    rels = [r["VacuumRelation"]["relation"] for r in node.get("rels", []) if "VacuumRelation" in r]
    targets = [range_var(r) for r in rels] or [Relation(None, "*")]
    what = ("VACUUM FULL" if "full" in options else "VACUUM") if vacuum else "ANALYZE"
    locks = tuple((t, level) for t in targets)
    return Effect(what, COLD if vacuum else IF_NEW, locks, no_transaction=vacuum)


def _reindex(node: Node, _: str) -> Effect:
    params = {p.get("DefElem", {}).get("defname") for p in node.get("params", [])}
    concurrently = bool(params & _NO_TRANSACTION_OPTIONS)
    level = SHARE_UPDATE_EXCLUSIVE if concurrently else ACCESS_EXCLUSIVE
    if node.get("relation"):
        target = range_var(node["relation"])
    else:  # REINDEX SCHEMA s / DATABASE / SYSTEM: every table of it
        kind = node.get("kind", "")
        target = Relation(node.get("name") if kind.endswith("SCHEMA") else None, "*")
    what = "REINDEX CONCURRENTLY" if concurrently else "REINDEX"
    return Effect(what, IF_NEW, ((target, level),), no_transaction=concurrently)


def _lock(node: Node, _: str) -> Effect:
    mode = node.get("mode", len(LEVELS))
    level = LEVELS[mode - 1] if 1 <= mode <= len(LEVELS) else ACCESS_EXCLUSIVE
    locks = tuple((range_var(r), level) for r in node.get("relations", []))
    return Effect("LOCK TABLE", IF_NEW, locks)


def _create_view(node: Node, _: str) -> Effect:
    replace = bool(node.get("replace"))
    what = "CREATE OR REPLACE VIEW" if replace else "CREATE VIEW"
    creates = () if replace else (range_var(node["view"]),)
    return Effect(what, LIVE, tuple(reads(node.get("query"))), creates, creating=True)


def _create_sequence(node: Node, _: str) -> Effect:
    creates = () if node.get("if_not_exists") else (range_var(node["sequence"]),)
    return Effect("CREATE SEQUENCE", LIVE, creates=creates, creating=True)


def _create_function(node: Node, _: str) -> Effect:
    replace = "OR REPLACE " if node.get("replace") else ""
    noun = "PROCEDURE" if node.get("is_procedure") else "FUNCTION"
    return Effect(f"CREATE {replace}{noun}", LIVE)


def _set_schema(node: Node, _: str) -> Effect:
    if not node.get("relation"):  # a function, type ...: no table lock
        return Effect("ALTER ... SET SCHEMA", COLD)
    return Effect(
        "ALTER ... SET SCHEMA", IF_NEW, ((range_var(node["relation"]), ACCESS_EXCLUSIVE),)
    )


def _copy(node: Node, _: str) -> Effect:
    if not node.get("relation"):  # COPY (query) TO ...
        return Effect("COPY", COLD, tuple(reads(node.get("query"))))
    level = ROW_EXCLUSIVE if node.get("is_from") else ACCESS_SHARE
    return Effect("COPY", COLD, ((range_var(node["relation"]), level),))


def _transaction(node: Node, _: str) -> Effect:
    words = node.get("kind", "TRANS_STMT_").removeprefix("TRANS_STMT_").replace("_", " ")
    return Effect(words, COLD, transaction_control=True)


def _relation_stmt(what: str, category: str, level: str, key: str = "relation") -> Handler:
    """A handler for statements that lock the one relation under ``key`` at ``level``."""

    def handle(node: Node, _: str) -> Effect:
        target = node.get(key)
        locks = ((range_var(target), level),) if target else ((Relation(None, "*"), level),)
        return Effect(what, category, locks)

    return handle


def _fixed(what: str, category: str) -> Handler:
    """A handler for statements that lock no table."""
    return lambda node, _: Effect(what, category)


def _unknown(name: str, node: Node) -> Effect:
    what = name.removesuffix("Stmt")
    target = node.get("relation")
    if isinstance(target, dict) and "relname" in target:
        return Effect(what, COLD, ((range_var(target), ACCESS_EXCLUSIVE),))
    return Effect(what, COLD)


_HANDLERS: dict[str, Handler] = {
    "VariableSetStmt": lambda n, _: Effect(
        "RESET" if "RESET" in n.get("kind", "") else "SET", LIVE
    ),
    "TransactionStmt": _transaction,
    "InsertStmt": _insert,
    "UpdateStmt": lambda n, _: Effect("UPDATE", IF_NEW, tuple(reads({"UpdateStmt": n}))),
    "DeleteStmt": lambda n, _: Effect("DELETE", IF_NEW, tuple(reads({"DeleteStmt": n}))),
    "MergeStmt": lambda n, _: Effect("MERGE", IF_NEW, tuple(reads({"MergeStmt": n}))),
    "SelectStmt": _select,
    "CreateStmt": _create_table,
    "CreateTableAsStmt": _create_table_as,
    "IndexStmt": _create_index,
    "AlterTableStmt": _alter_table,
    "RenameStmt": _rename,
    "DropStmt": _drop,
    "CommentStmt": _comment,
    "VacuumStmt": _vacuum,
    "ReindexStmt": _reindex,
    "LockStmt": _lock,
    "ViewStmt": _create_view,
    "CreateSeqStmt": _create_sequence,
    "AlterSeqStmt": _relation_stmt("ALTER SEQUENCE", IF_NEW, SHARE_ROW_EXCLUSIVE, "sequence"),
    "CreateTrigStmt": _relation_stmt("CREATE TRIGGER", IF_NEW, SHARE_ROW_EXCLUSIVE),
    "RuleStmt": _relation_stmt("CREATE RULE", IF_NEW, ACCESS_EXCLUSIVE),
    "CreatePolicyStmt": _relation_stmt("CREATE POLICY", IF_NEW, ACCESS_EXCLUSIVE, "table"),
    "AlterPolicyStmt": _relation_stmt("ALTER POLICY", IF_NEW, ACCESS_EXCLUSIVE, "table"),
    "ClusterStmt": _relation_stmt("CLUSTER", IF_NEW, ACCESS_EXCLUSIVE),
    "TruncateStmt": lambda n, _: Effect(
        "TRUNCATE", IF_NEW, tuple((range_var(r), ACCESS_EXCLUSIVE) for r in n.get("relations", []))
    ),
    "RefreshMatViewStmt": lambda n, _: Effect(
        "REFRESH MATERIALIZED VIEW",
        IF_NEW,
        ((range_var(n["relation"]), EXCLUSIVE if n.get("concurrent") else ACCESS_EXCLUSIVE),),
    ),
    "CreateStatsStmt": lambda n, _: Effect(
        "CREATE STATISTICS",
        IF_NEW,
        tuple((range_var(r), SHARE_UPDATE_EXCLUSIVE) for r in n.get("relations", [])),
    ),
    "AlterObjectSchemaStmt": _set_schema,
    "CopyStmt": _copy,
    "CreateFunctionStmt": _create_function,
    "GrantStmt": lambda n, _: Effect("GRANT" if n.get("is_grant") else "REVOKE", LIVE),
    "GrantRoleStmt": lambda n, _: Effect("GRANT" if n.get("is_grant") else "REVOKE", LIVE),
    "AlterDefaultPrivilegesStmt": _fixed("ALTER DEFAULT PRIVILEGES", LIVE),
    "CreateSchemaStmt": lambda n, _: Effect("CREATE SCHEMA", COLD if n.get("schemaElts") else LIVE),
    "CompositeTypeStmt": _fixed("CREATE TYPE", LIVE),
    "CreateEnumStmt": _fixed("CREATE TYPE ... AS ENUM", LIVE),
    "CreateRangeStmt": _fixed("CREATE TYPE ... AS RANGE", LIVE),
    "CreateDomainStmt": _fixed("CREATE DOMAIN", LIVE),
    "DefineStmt": lambda n, _: Effect(
        "CREATE " + n.get("kind", "OBJECT_").removeprefix("OBJECT_"),
        LIVE if n.get("kind") == "OBJECT_TYPE" else COLD,
    ),
    "DoStmt": _fixed("DO block", COLD),
    "CreateExtensionStmt": _fixed("CREATE EXTENSION", COLD),
}


def effect_of(stmt: Node, revision_table: str) -> Effect:
    """The effect of one statement: ``stmt`` is ``{"<NodeType>": {...}}`` from parse_sql_json.

    ``revision_table`` (schema-qualified or not, any case) names the table an
    INSERT into which is the live-safe revision record.
    """
    ((name, node),) = stmt.items()
    handler = _HANDLERS.get(name)
    if handler is None:
        return _unknown(name, node)
    return handler(node, revision_table)

"""Advisory checks: statements that hold their lock far longer than they look, and
changes that break the old code still running during a deploy.

Pure: each statement arrives as a ``parse_sql_json`` node (``{"AlterTableStmt":
{...}}``) with the keys of the relations the patch created before it, and
leaves as :class:`Finding` objects naming a rule of
:mod:`orchestrator.patches.rules`. Nothing is reported on a table the
patch itself created (it holds no rows yet and no old code uses it), nor
about dropping or renaming a column the patch added to an existing table (no
old code uses it, though it is on every row: SET NOT NULL on it still scans).

Volatile defaults. PostgreSQL 11 and later add a column with a non-volatile
default without touching the rows. We cannot ask the catalog how volatile a
function is, so a default counts as volatile when it calls a function in
:data:`VOLATILE` or any function not in :data:`NOT_VOLATILE` (a user-defined
function may be volatile; the ``fastdowntime-ignore`` comment silences a
false alarm). Serial types, identity columns and STORED generated columns
fill every row too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.patches.locks import (
    ACCESS_EXCLUSIVE,
    ROW_EXCLUSIVE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    Relation,
    name_list,
    qualified,
    quote_ident,
    range_var,
    subcommand_words,
)

Node = Mapping[str, Any]
Key = tuple[str, str]

VOLATILE = frozenset({
    "random", "random_normal", "setseed", "clock_timestamp", "timeofday", "nextval", "setval",
    "gen_random_uuid", "gen_random_bytes", "uuidv4", "uuidv7", "uuid_generate_v1",
    "uuid_generate_v1mc", "uuid_generate_v4", "txid_current", "pg_current_xact_id",
})
"""Functions known to be volatile: a default calling one rewrites the table."""

NOT_VOLATILE = frozenset({
    # stable: evaluated once for the ALTER TABLE, so no rewrite
    "now", "transaction_timestamp", "statement_timestamp", "current_setting", "timezone",
    "to_timestamp", "to_date", "to_char", "date_trunc", "date_part", "age",
    # immutable
    "lower", "upper", "btrim", "ltrim", "rtrim", "concat", "concat_ws", "length", "abs",
    "round", "trunc", "floor", "ceil", "make_interval", "make_date", "make_time",
    "make_timestamp", "make_timestamptz", "jsonb_build_object", "jsonb_build_array",
    "json_build_object", "json_build_array", "to_jsonb", "to_json", "array_fill",
    "md5", "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange",
})
"""Functions known not to be volatile (stable or immutable) in a column default."""

SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
_REWRITING = frozenset({"AT_SetTableSpace", "AT_SetLogged", "AT_SetUnLogged",
                        "AT_SetAccessMethod"})


@dataclass(frozen=True)
class Finding:
    """One advisory problem: ``rule`` code, ``message`` (a sentence), ``lock`` taken on the
    table concerned, ``location`` (UTF-8 byte offset in the patch of the part concerned,
    -1 for the statement's start) and a specific ``hint`` (None: the rule's own)."""

    rule: str
    message: str
    lock: str | None
    location: int = -1
    hint: str | None = None


class Hazards:
    """The advisory checks of one patch, statement after statement, in order.

    ``spell`` shows a relation as the patch spells it; ``cold`` says whether the
    patch runs in the window (CREATE INDEX is reported only there: the live
    applier builds indexes CONCURRENTLY). Columns added to existing tables are
    remembered, so dropping or renaming them later in the patch is not reported.
    """

    def __init__(self, spell: Callable[[Relation], str], *, cold: bool) -> None:
        self._spell = spell
        self._cold = cold
        self._columns: set[tuple[Key, str]] = set()

    def check(self, stmt: Node, created: set[Key] | frozenset[Key]) -> list[Finding]:
        """The findings of ``stmt`` given the keys of relations created before it."""
        ((name, node),) = stmt.items()
        if name == "AlterTableStmt":
            return list(self._alter(node, created))
        if name == "RenameStmt":
            return list(self._rename(node, created))
        if name == "DropStmt" and node.get("removeType") == "OBJECT_TABLE":
            return list(self._drop(node, created))
        if name in ("UpdateStmt", "DeleteStmt"):
            return list(self._dml(name.removesuffix("Stmt").upper(), node, created))
        if name == "IndexStmt":
            return list(self._index(node, created))
        if name == "ClusterStmt":
            return list(self._cluster(node, created))
        if name == "VacuumStmt":
            return list(self._vacuum(node, created))
        return []

    # --- ALTER TABLE -------------------------------------------------------------------

    def _alter(self, node: Node, created: set[Key] | frozenset[Key]) -> Iterator[Finding]:
        if node.get("objtype", "OBJECT_TABLE") != "OBJECT_TABLE":
            return
        table = range_var(node["relation"])
        existing = table.key not in created
        shown = self._spell(table)
        for item in node.get("cmds", []):
            cmd = item.get("AlterTableCmd", {})
            subtype = cmd.get("subtype", "")
            definition = cmd.get("def") or {}
            if subtype == "AT_AddColumn" and "ColumnDef" in definition:
                column = definition["ColumnDef"]
                self._columns.add((table.key, column.get("colname", "")))
                if existing:
                    yield from self._add_column(shown, column)
                continue
            # A column the patch added is new to the old code, but still on every row.
            added = (table.key, cmd.get("name")) in self._columns
            if not existing or (added and subtype == "AT_DropColumn"):
                continue
            yield from self._subcommand(table, shown, subtype, cmd, definition)

    def _subcommand(self, table: Relation, shown: str, subtype: str, cmd: Node,
                    definition: Node) -> Iterator[Finding]:
        column = quote_ident(cmd.get("name") or "")
        if subtype == "AT_AlterColumnType":
            yield Finding(
                "rewrite-column-type",
                f"ALTER COLUMN {column} TYPE rewrites {shown} and rebuilds its indexes under "
                "ACCESS EXCLUSIVE (unless the change is binary-coercible): nothing reads or "
                f"writes {shown} until it ends",
                ACCESS_EXCLUSIVE,
                definition.get("ColumnDef", {}).get("location", -1),
            )
        elif subtype == "AT_SetNotNull":
            yield _set_not_null(table, shown, cmd.get("name") or "", -1)
        elif subtype == "AT_AddConstraint" and "Constraint" in definition:
            yield from self._add_constraint(table, shown, definition["Constraint"])
        elif subtype == "AT_DropColumn":
            yield Finding(
                "drop-column",
                f"ALTER TABLE {shown} DROP COLUMN {column}: the old code, still running "
                f"during the deploy, fails on every query that names {column}",
                ACCESS_EXCLUSIVE,
            )
        elif subtype in _REWRITING:
            yield Finding(
                "rewrite-table",
                f"{subcommand_words(cmd)} copies all of {shown} and rebuilds its indexes "
                "under ACCESS EXCLUSIVE",
                ACCESS_EXCLUSIVE,
            )

    def _add_column(self, shown: str, column: Node) -> Iterator[Finding]:
        name = quote_ident(column.get("colname", ""))
        where = column.get("location", -1)
        type_names = [n["String"]["sval"] for n in column.get("typeName", {}).get("names", [])
                      if "String" in n]
        if type_names and type_names[-1].lower() in SERIAL_TYPES:
            yield Finding(
                "rewrite-volatile-default",
                f"ADD COLUMN {name} {type_names[-1]} fills every existing row from a new "
                f"sequence (nextval()), which rewrites {shown} under ACCESS EXCLUSIVE",
                ACCESS_EXCLUSIVE, where,
                f"Add {name} as a plain integer column, then SET DEFAULT nextval(...) and fill "
                "the existing rows in batches from a live patch or a job",
            )
        for item in column.get("constraints", []):
            constraint = item.get("Constraint", {})
            yield from self._column_constraint(shown, name, constraint)

    def _column_constraint(self, shown: str, name: str, constraint: Node) -> Iterator[Finding]:
        contype = constraint.get("contype")
        where = constraint.get("location", -1)
        rewrite = f"which rewrites {shown} under ACCESS EXCLUSIVE"
        if contype == "CONSTR_DEFAULT":
            found = volatile_call(constraint.get("raw_expr"))
            if found is not None:
                function, known = found
                why = ("is volatile" if known
                       else "is not known to be stable or immutable, so it counts as volatile")
                yield Finding(
                    "rewrite-volatile-default",
                    f"ADD COLUMN {name} with a default calling {function}(), which {why}, "
                    f"computes it for every existing row, {rewrite}",
                    ACCESS_EXCLUSIVE, where,
                    f"Add {name} without the default, then ALTER COLUMN {name} SET DEFAULT "
                    "(only new rows get it) and fill the existing rows in batches",
                )
        elif contype == "CONSTR_IDENTITY":
            yield Finding(
                "rewrite-volatile-default",
                f"ADD COLUMN {name} GENERATED AS IDENTITY fills every existing row from its "
                f"sequence, {rewrite}",
                ACCESS_EXCLUSIVE, where,
            )
        elif contype == "CONSTR_GENERATED" and constraint.get("generated_kind", "s") == "s":
            yield Finding(
                "rewrite-volatile-default",
                f"ADD COLUMN {name} GENERATED ALWAYS AS (...) STORED computes every existing "
                f"row, {rewrite}",
                ACCESS_EXCLUSIVE, where,
            )
        elif contype in ("CONSTR_CHECK", "CONSTR_FOREIGN") and not constraint.get(
                "skip_validation"):
            what = "a CHECK constraint" if contype == "CONSTR_CHECK" else "REFERENCES"
            yield Finding(
                "constraint-validation-scan",
                f"ADD COLUMN {name} with {what} checks every row of {shown} under ACCESS "
                "EXCLUSIVE",
                ACCESS_EXCLUSIVE, where,
                f"Add {name} without it, then ADD CONSTRAINT ... NOT VALID and VALIDATE "
                "CONSTRAINT in a live patch",
            )
        elif contype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY"):
            kind = "UNIQUE" if contype == "CONSTR_UNIQUE" else "PRIMARY KEY"
            yield Finding(
                "constraint-index-build",
                f"ADD COLUMN {name} {kind} builds an index on {shown} under ACCESS EXCLUSIVE",
                ACCESS_EXCLUSIVE, where,
                f"Add {name} without {kind}, build the index with CREATE UNIQUE INDEX "
                f"CONCURRENTLY in a live patch, then ADD CONSTRAINT ... {kind} USING INDEX",
            )

    def _add_constraint(self, table: Relation, shown: str,
                        constraint: Node) -> Iterator[Finding]:
        contype = constraint.get("contype")
        raw_name = constraint.get("conname")
        name = f" {quote_ident(raw_name)}" if raw_name else ""
        named = quote_ident(raw_name) if raw_name else "<name>"
        where = constraint.get("location", -1)
        if constraint.get("skip_validation"):
            return
        if contype == "CONSTR_CHECK":
            yield Finding(
                "constraint-validation-scan",
                f"ADD CONSTRAINT{name} CHECK without NOT VALID checks every row of {shown} "
                "under ACCESS EXCLUSIVE",
                ACCESS_EXCLUSIVE, where,
                f"ADD CONSTRAINT{name} CHECK (...) NOT VALID, then ALTER TABLE {shown} "
                f"VALIDATE CONSTRAINT {named} in a live patch",
            )
        elif contype == "CONSTR_FOREIGN":
            referenced = self._spell(range_var(constraint.get("pktable", {})))
            yield Finding(
                "constraint-validation-scan",
                f"ADD CONSTRAINT{name} FOREIGN KEY without NOT VALID checks every row of "
                f"{shown} under SHARE ROW EXCLUSIVE on {shown} and {referenced}: writes to "
                "both wait",
                SHARE_ROW_EXCLUSIVE, where,
                f"ADD CONSTRAINT{name} FOREIGN KEY (...) REFERENCES {referenced} NOT VALID, "
                f"then ALTER TABLE {shown} VALIDATE CONSTRAINT {named} in a live patch",
            )
        elif contype in ("CONSTR_PRIMARY", "CONSTR_UNIQUE") and not constraint.get("indexname"):
            kind = "PRIMARY KEY" if contype == "CONSTR_PRIMARY" else "UNIQUE"
            yield Finding(
                "constraint-index-build",
                f"ADD CONSTRAINT{name} {kind} without USING INDEX builds a unique index on "
                f"{shown} under ACCESS EXCLUSIVE",
                ACCESS_EXCLUSIVE, where,
                f"CREATE UNIQUE INDEX CONCURRENTLY ... ON {shown} (...) in a live patch, then "
                f"ALTER TABLE {shown} ADD CONSTRAINT {named} {kind} USING INDEX ...",
            )
        elif contype == "CONSTR_EXCLUSION":
            yield Finding(
                "constraint-index-build",
                f"ADD CONSTRAINT{name} EXCLUDE builds an index on {shown} under ACCESS "
                "EXCLUSIVE",
                ACCESS_EXCLUSIVE, where,
            )
        elif contype == "CONSTR_NOTNULL":  # PostgreSQL 18: ADD CONSTRAINT n NOT NULL col
            for key in constraint.get("keys", []):
                if "String" in key:
                    yield _set_not_null(table, shown, key["String"]["sval"], where)

    # --- other statements ------------------------------------------------------------

    def _rename(self, node: Node, created: set[Key] | frozenset[Key]) -> Iterator[Finding]:
        kind = node.get("renameType")
        if not node.get("relation"):
            return
        table = range_var(node["relation"])
        new = quote_ident(node.get("newname", ""))
        if kind == "OBJECT_TABLE" and table.key not in created:
            shown = self._spell(table)
            yield Finding(
                "rename-table",
                f"ALTER TABLE {shown} RENAME TO {new}: the old code, still running during the "
                f"deploy, fails on every query that names {shown}",
                ACCESS_EXCLUSIVE,
            )
        elif kind == "OBJECT_COLUMN" and node.get("relationType") == "OBJECT_TABLE":
            old = (table.key, node.get("subname", ""))
            if old in self._columns:
                self._columns.add((table.key, node.get("newname", "")))
            elif table.key not in created:
                column = quote_ident(old[1])
                yield Finding(
                    "rename-column",
                    f"ALTER TABLE {self._spell(table)} RENAME COLUMN {column} TO {new}: the "
                    f"old code, still running during the deploy, fails on every query that "
                    f"names {column}",
                    ACCESS_EXCLUSIVE,
                )

    def _drop(self, node: Node, created: set[Key] | frozenset[Key]) -> Iterator[Finding]:
        for item in node.get("objects", []):
            table = qualified(name_list(item))
            if table is not None and table.key not in created:
                yield Finding(
                    "drop-table",
                    f"DROP TABLE {table}: the old code, still running during the deploy, fails "
                    "on every query that names it",
                    ACCESS_EXCLUSIVE,
                )

    def _dml(self, verb: str, node: Node,
             created: set[Key] | frozenset[Key]) -> Iterator[Finding]:
        table = range_var(node["relation"])
        if node.get("whereClause") or table.key in created:
            return
        shown = self._spell(table)
        where = ("inside the window" if self._cold
                 else "and keeps every row it changed locked until it ends")
        yield Finding(
            "whole-table-dml",
            f"{verb} of {shown} without WHERE changes every row in one statement, {where}",
            ROW_EXCLUSIVE, -1,
            f"{verb} in batches (WHERE id BETWEEN ...), each batch its own transaction, from "
            "a live patch or a job",
        )

    def _index(self, node: Node, created: set[Key] | frozenset[Key]) -> Iterator[Finding]:
        table = range_var(node["relation"])
        if node.get("concurrent") or not self._cold or table.key in created:
            return
        shown = self._spell(table)
        name = f" {quote_ident(node['idxname'])}" if node.get("idxname") else ""
        unique = "UNIQUE " if node.get("unique") else ""
        yield Finding(
            "index-not-concurrently",
            f"CREATE {unique}INDEX{name} on {shown} without CONCURRENTLY holds SHARE on "
            f"{shown} while it builds: writes wait, and in the window the build is outage",
            SHARE, -1,
            f"In a live patch: CREATE {unique}INDEX CONCURRENTLY{name} ON {shown} (...)",
        )

    def _cluster(self, node: Node, created: set[Key] | frozenset[Key]) -> Iterator[Finding]:
        table = range_var(node["relation"]) if node.get("relation") else Relation(None, "*")
        if table.key in created:
            return
        what = self._spell(table) if table.name != "*" else "every clustered table"
        yield Finding("rewrite-table",
                      f"CLUSTER copies all of {what} and rebuilds its indexes under "
                      "ACCESS EXCLUSIVE", ACCESS_EXCLUSIVE)

    def _vacuum(self, node: Node, created: set[Key] | frozenset[Key]) -> Iterator[Finding]:
        options = {o.get("DefElem", {}).get("defname") for o in node.get("options", [])}
        if not node.get("is_vacuumcmd") or "full" not in options:
            return
        tables = [range_var(r["VacuumRelation"]["relation"]) for r in node.get("rels", [])
                  if "VacuumRelation" in r] or [Relation(None, "*")]
        for table in tables:
            if table.key in created:
                continue
            what = self._spell(table) if table.name != "*" else "every table"
            yield Finding("rewrite-table",
                          f"VACUUM FULL copies all of {what} and rebuilds its indexes under "
                          "ACCESS EXCLUSIVE", ACCESS_EXCLUSIVE)


def _set_not_null(table: Relation, shown: str, column: str, where: int) -> Finding:
    col = quote_ident(column)
    check = quote_ident(f"{table.name}_{column}_not_null")
    return Finding(
        "set-not-null-scan",
        f"ALTER COLUMN {col} SET NOT NULL scans all of {shown} for NULLs under ACCESS "
        "EXCLUSIVE",
        ACCESS_EXCLUSIVE, where,
        f"In a live patch, ALTER TABLE {shown} ADD CONSTRAINT {check} CHECK ({col} IS NOT "
        f"NULL) NOT VALID and ALTER TABLE {shown} VALIDATE CONSTRAINT {check}; then SET NOT "
        "NULL uses the valid constraint instead of scanning (PostgreSQL 12+)",
    )


def volatile_call(expr: Any) -> tuple[str, bool] | None:
    """The first function ``expr`` calls that counts as volatile, and whether it is known
    to be (True: in :data:`VOLATILE`; False: unknown, so counted as volatile); else None."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        call = node.get("FuncCall")
        if isinstance(call, dict):
            names = [n["String"]["sval"] for n in call.get("funcname", []) if "String" in n]
            function = names[-1].lower() if names else ""
            if function in VOLATILE:
                return function, True
            if function not in NOT_VOLATILE:
                return function, False
        stack.extend(reversed(list(node.values())))
    return None

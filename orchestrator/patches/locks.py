"""PostgreSQL's table lock levels, the relations a statement names, and what it does to them.

The eight lock levels and their conflicts follow PostgreSQL 15's "Explicit
Locking" chapter. A level *blocks normal use* of a table when it conflicts
with ROW EXCLUSIVE (INSERT, UPDATE, DELETE) or ACCESS SHARE (SELECT): SHARE
and everything stronger.

An :class:`Effect` is what one parsed statement does, before we know which
relations the patch created: the locks it takes on named relations, what it
creates, and its *category* for the live-safe set:

- ``LIVE``: in the SPEC's live-safe set whatever its locks (CREATE INDEX
  CONCURRENTLY, CREATE FUNCTION/VIEW, COMMENT, GRANT, SET, VALIDATE
  CONSTRAINT, ADD CONSTRAINT ... NOT VALID, the revision-table insert, and the
  harmless creations CREATE SEQUENCE/SCHEMA/TYPE/DOMAIN);
- ``IF_NEW``: live-safe only when it works on relations the patch itself
  created (or creates one) and touches existing relations with nothing
  stronger than ACCESS SHARE: CREATE TABLE, CREATE INDEX on a new table, DML
  on a new table, ALTER TABLE on a new table ...;
- ``COLD``: never live-safe (DO, SELECT, TRUNCATE of an existing table, ...).

:func:`settle` turns an effect into the reported lock, tables, ``blocking``
and ``live_safe`` given the set of relations created earlier in the patch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pglast.keywords import RESERVED_KEYWORDS

ACCESS_SHARE = "ACCESS SHARE"
ROW_SHARE = "ROW SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"

LEVELS = (
    ACCESS_SHARE,
    ROW_SHARE,
    ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    EXCLUSIVE,
    ACCESS_EXCLUSIVE,
)
"""Weakest first; ``LEVELS[mode - 1]`` is the level of PostgreSQL's LOCKMODE ``mode``."""

RANK = {level: rank for rank, level in enumerate(LEVELS, start=1)}

LIVE = "live"
IF_NEW = "if-new"
COLD = "cold"

_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


def blocks_normal_use(level: str) -> bool:
    """True when ``level`` conflicts with ROW EXCLUSIVE or ACCESS SHARE (SHARE and above)."""
    return RANK[level] >= RANK[SHARE]


def quote_ident(name: str) -> str:
    """``name`` as it must be written in SQL: bare when it can be, else double-quoted."""
    if _PLAIN_IDENT.fullmatch(name) and name not in RESERVED_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Relation:
    """A table, index, sequence or view named by a statement, as the parser gives it.

    ``schema`` is None when the statement does not qualify the name. The name
    ``*`` stands for every table (``VACUUM FULL`` or ``CLUSTER`` without a
    table); with a schema, for every table of that schema (``REINDEX SCHEMA``).
    """

    schema: str | None
    name: str
    location: int = field(default=-1, compare=False)
    """UTF-8 byte offset of the name in the patch text, -1 when unknown."""

    @property
    def key(self) -> tuple[str, str]:
        """Identity for "created in this patch": an unqualified name means ``public``."""
        return (self.schema or "public", self.name)

    def __str__(self) -> str:
        name = "*" if self.name == "*" else quote_ident(self.name)
        return f"{quote_ident(self.schema)}.{name}" if self.schema else name


def range_var(node: Mapping[str, Any]) -> Relation:
    """The :class:`Relation` of a parser RangeVar (bare or wrapped in ``{"RangeVar": ...}``)."""
    node = node.get("RangeVar", node)
    return Relation(node.get("schemaname"), node.get("relname", ""), node.get("location", -1))


def qualified(names: Sequence[Mapping[str, Any]]) -> Relation | None:
    """The relation of a parser name list (``[{"String": {"sval": ...}}, ...]``), if any."""
    parts = [item["String"].get("sval", "") for item in names if "String" in item]
    if not parts:
        return None
    return Relation(parts[-2] if len(parts) >= 2 else None, parts[-1])


def name_list(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The items of a parser ``{"List": {"items": [...]}}`` node (empty for anything else)."""
    items = node.get("List", {}).get("items", [])
    return list(items) if isinstance(items, list) else []


@dataclass(frozen=True)
class Effect:
    """What one statement does, independent of the rest of the patch.

    ``what`` names the statement for people ("ALTER TABLE ... ADD COLUMN");
    ``locks`` pairs each relation it names with the lock level it takes there;
    ``creates`` are the relations that certainly exist only because of it
    (not CREATE ... IF NOT EXISTS, not CREATE OR REPLACE); ``creating`` is
    True for every CREATE of a relation; ``renames`` is (old, new) for a
    relation rename; ``category`` is LIVE, IF_NEW or COLD (module docstring).
    ``no_transaction`` is True for statements PostgreSQL refuses to run
    inside a transaction block; ``transaction_control`` for BEGIN, COMMIT ...
    """

    what: str
    category: str
    locks: tuple[tuple[Relation, str], ...] = ()
    creates: tuple[Relation, ...] = ()
    creating: bool = False
    renames: tuple[Relation, Relation] | None = None
    no_transaction: bool = False
    transaction_control: bool = False


@dataclass(frozen=True)
class Settled:
    """An effect judged against the relations the patch created before it."""

    lock: str | None
    tables: tuple[Relation, ...]
    blocking: bool
    live_safe: bool


def strongest(pairs: Iterable[tuple[Relation, str]]) -> dict[Relation, str]:
    """Each relation once, with the strongest level taken on it; first-seen order."""
    out: dict[Relation, str] = {}
    for relation, level in pairs:
        if relation not in out or RANK[level] > RANK[out[relation]]:
            out[relation] = level
    return out


def settle(effect: Effect, created: set[tuple[str, str]]) -> Settled:
    """Judge ``effect`` given the keys of relations created earlier in the patch.

    ``lock`` is the strongest level taken on a relation that existed before
    the patch; when the statement touches only new relations, the strongest
    level taken on those (reported, but never blocking). ``tables`` are the
    relations locked at exactly that level.
    """
    levels = strongest(effect.locks)
    existing = {r: lvl for r, lvl in levels.items() if r.key not in created}
    new = {r: lvl for r, lvl in levels.items() if r.key in created}
    pool = existing or new
    lock = max(pool.values(), key=RANK.__getitem__) if pool else None
    tables = tuple(r for r, lvl in pool.items() if lvl == lock)
    blocking = bool(existing) and lock is not None and blocks_normal_use(lock)
    if effect.category == LIVE:
        live_safe = True
    elif effect.category == IF_NEW:
        only_reads = all(lvl == ACCESS_SHARE for lvl in existing.values())
        live_safe = only_reads and (effect.creating or bool(new))
    else:
        live_safe = False
    return Settled(lock, tables, blocking, live_safe)


# ALTER TABLE subcommands, after PostgreSQL 15's AlterTableGetLockLevel and the
# ALTER TABLE page. Anything not listed takes ACCESS EXCLUSIVE, as the page says.
_SUBCOMMAND_LEVELS = {
    "AT_SetStatistics": SHARE_UPDATE_EXCLUSIVE,
    "AT_SetOptions": SHARE_UPDATE_EXCLUSIVE,
    "AT_ResetOptions": SHARE_UPDATE_EXCLUSIVE,
    "AT_ClusterOn": SHARE_UPDATE_EXCLUSIVE,
    "AT_DropCluster": SHARE_UPDATE_EXCLUSIVE,
    "AT_ValidateConstraint": SHARE_UPDATE_EXCLUSIVE,
    "AT_AttachPartition": SHARE_UPDATE_EXCLUSIVE,
    "AT_DetachPartitionFinalize": SHARE_UPDATE_EXCLUSIVE,
    "AT_EnableTrig": SHARE_ROW_EXCLUSIVE,
    "AT_EnableAlwaysTrig": SHARE_ROW_EXCLUSIVE,
    "AT_EnableReplicaTrig": SHARE_ROW_EXCLUSIVE,
    "AT_EnableTrigAll": SHARE_ROW_EXCLUSIVE,
    "AT_EnableTrigUser": SHARE_ROW_EXCLUSIVE,
    "AT_DisableTrig": SHARE_ROW_EXCLUSIVE,
    "AT_DisableTrigAll": SHARE_ROW_EXCLUSIVE,
    "AT_DisableTrigUser": SHARE_ROW_EXCLUSIVE,
    "AT_CheckNotNull": ACCESS_SHARE,
}

# Storage parameters that SET (...) / RESET (...) change under SHARE UPDATE
# EXCLUSIVE (fillfactor, the toast and autovacuum parameters, parallel_workers
# and their kin); any other parameter takes ACCESS EXCLUSIVE.
_LIGHT_RELOPTIONS = frozenset(
    {
        "fillfactor",
        "parallel_workers",
        "toast_tuple_target",
        "vacuum_index_cleanup",
        "vacuum_truncate",
        "log_autovacuum_min_duration",
    }
)


def _reloptions_level(options: Any) -> str:
    items = options if isinstance(options, list) else name_list(options)
    for item in items:
        elem = item.get("DefElem", {})
        name = elem.get("defname", "")
        if elem.get("defnamespace") == "toast" or name.startswith("autovacuum_"):
            continue
        if name not in _LIGHT_RELOPTIONS:
            return ACCESS_EXCLUSIVE
    return SHARE_UPDATE_EXCLUSIVE


def subcommand_level(cmd: Mapping[str, Any]) -> str:
    """The lock level one ALTER TABLE subcommand (an ``AlterTableCmd`` dict) takes on its table."""
    subtype = cmd.get("subtype", "")
    definition = cmd.get("def") or {}
    if subtype in ("AT_SetRelOptions", "AT_ResetRelOptions"):
        return _reloptions_level(definition)
    if subtype == "AT_AddConstraint":
        contype = definition.get("Constraint", {}).get("contype")
        return SHARE_ROW_EXCLUSIVE if contype == "CONSTR_FOREIGN" else ACCESS_EXCLUSIVE
    if subtype == "AT_DetachPartition":
        concurrent = definition.get("PartitionCmd", {}).get("concurrent", False)
        return SHARE_UPDATE_EXCLUSIVE if concurrent else ACCESS_EXCLUSIVE
    return _SUBCOMMAND_LEVELS.get(subtype, ACCESS_EXCLUSIVE)


_SUBCOMMAND_WORDS = {
    "AT_AddColumn": "ADD COLUMN",
    "AT_DropColumn": "DROP COLUMN",
    "AT_AlterColumnType": "ALTER COLUMN TYPE",
    "AT_SetNotNull": "SET NOT NULL",
    "AT_DropNotNull": "DROP NOT NULL",
    "AT_ValidateConstraint": "VALIDATE CONSTRAINT",
    "AT_DropConstraint": "DROP CONSTRAINT",
    "AT_AlterConstraint": "ALTER CONSTRAINT",
    "AT_AddIndexConstraint": "ADD CONSTRAINT USING INDEX",
    "AT_SetStatistics": "SET STATISTICS",
    "AT_SetOptions": "ALTER COLUMN SET (...)",
    "AT_ResetOptions": "ALTER COLUMN RESET (...)",
    "AT_SetStorage": "SET STORAGE",
    "AT_SetCompression": "SET COMPRESSION",
    "AT_SetRelOptions": "SET (...)",
    "AT_ResetRelOptions": "RESET (...)",
    "AT_ClusterOn": "CLUSTER ON",
    "AT_DropCluster": "SET WITHOUT CLUSTER",
    "AT_ChangeOwner": "OWNER TO",
    "AT_SetTableSpace": "SET TABLESPACE",
    "AT_SetLogged": "SET LOGGED",
    "AT_SetUnLogged": "SET UNLOGGED",
    "AT_SetAccessMethod": "SET ACCESS METHOD",
    "AT_AttachPartition": "ATTACH PARTITION",
    "AT_DetachPartition": "DETACH PARTITION",
    "AT_DetachPartitionFinalize": "DETACH PARTITION FINALIZE",
    "AT_AddInherit": "INHERIT",
    "AT_DropInherit": "NO INHERIT",
    "AT_ReplicaIdentity": "REPLICA IDENTITY",
    "AT_EnableRowSecurity": "ENABLE ROW LEVEL SECURITY",
    "AT_DisableRowSecurity": "DISABLE ROW LEVEL SECURITY",
    "AT_AddIdentity": "ADD IDENTITY",
    "AT_SetIdentity": "SET IDENTITY",
    "AT_DropIdentity": "DROP IDENTITY",
    "AT_DropExpression": "DROP EXPRESSION",
    "AT_SetExpression": "SET EXPRESSION",
}


def subcommand_words(cmd: Mapping[str, Any]) -> str:
    """The SQL words of one ALTER TABLE subcommand, e.g. ``ADD CONSTRAINT CHECK NOT VALID``."""
    subtype = cmd.get("subtype", "")
    if subtype == "AT_ColumnDefault":
        return "SET DEFAULT" if cmd.get("def") else "DROP DEFAULT"
    if subtype == "AT_AddConstraint":
        constraint = (cmd.get("def") or {}).get("Constraint", {})
        kind = constraint.get("contype", "CONSTR_").removeprefix("CONSTR_")
        kind = {"FOREIGN": "FOREIGN KEY", "PRIMARY": "PRIMARY KEY"}.get(kind, kind)
        tail = " NOT VALID" if constraint.get("skip_validation") else ""
        return f"ADD CONSTRAINT {kind}{tail}"
    if subtype.startswith(("AT_EnableTrig", "AT_EnableAlwaysTrig", "AT_EnableReplicaTrig")):
        return "ENABLE TRIGGER"
    if subtype.startswith("AT_DisableTrig"):
        return "DISABLE TRIGGER"
    if subtype in ("AT_EnableRule", "AT_EnableAlwaysRule", "AT_EnableReplicaRule"):
        return "ENABLE RULE"
    if subtype == "AT_DisableRule":
        return "DISABLE RULE"
    words = _SUBCOMMAND_WORDS.get(subtype)
    if words:
        return words
    return re.sub(r"(?<!^)(?=[A-Z])", " ", subtype.removeprefix("AT_")).upper()

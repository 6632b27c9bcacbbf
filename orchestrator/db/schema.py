"""The orchestrator's own schema ``fastdowntime`` in the target database.

Run records, applied-patch checksums, live-patch progress and rehearsal
timings live here, so they share the database's fate (backups, standbys).
:func:`ensure_schema` is idempotent; read paths treat a missing schema as
empty, so preflight and dry runs never create it.

The schema is versioned (``fastdowntime.schema_version``): :data:`MIGRATIONS`
lists, in order, what each version adds, and :func:`ensure_schema` applies the
missing ones in one transaction under a lock, so a newer orchestrator
upgrades an older staging database in place. Migrations only add (tables,
columns with defaults, indexes): an older orchestrator's readers keep
working, and a newer one reads what an older one wrote. A database whose
schema is newer than this orchestrator knows is never written to.
"""

from __future__ import annotations

from orchestrator.db.connect import Connection
from orchestrator.errors import BadInput, Refused

SCHEMA = "fastdowntime"
LOCK_KEY = 0x6664_7464  # "fdtd": the deploy lock's advisory key (one bigint)
_UPGRADE_KEY = 0x6664_7475  # "fdtu": serialises two orchestrators upgrading at once

_VERSION_1 = """
CREATE TABLE IF NOT EXISTS fastdowntime.run (
    id text PRIMARY KEY,
    who text NOT NULL,
    started timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished timestamptz,
    outcome text NOT NULL DEFAULT 'running',
    backend_pid integer,
    plan jsonb,
    approvals jsonb NOT NULL DEFAULT '[]'::jsonb,
    detail text
);
CREATE TABLE IF NOT EXISTS fastdowntime.applied_patch (
    filename text PRIMARY KEY,
    major integer NOT NULL,
    minor integer NOT NULL,
    point integer NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_s double precision,
    run_id text
);
CREATE TABLE IF NOT EXISTS fastdowntime.live_progress (
    filename text NOT NULL,
    checksum text NOT NULL,
    statement integer NOT NULL,
    done_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (filename, checksum, statement)
);
CREATE TABLE IF NOT EXISTS fastdowntime.patch_timing (
    filename text NOT NULL,
    checksum text NOT NULL,
    duration_s double precision NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    run_id text,
    PRIMARY KEY (filename, checksum, recorded_at)
);
"""

_VERSION_2 = """
ALTER TABLE fastdowntime.run ADD COLUMN IF NOT EXISTS host text;
ALTER TABLE fastdowntime.run ADD COLUMN IF NOT EXISTS pid integer;
"""
"""Where the orchestrator of a run runs (host name and process id), so that ``unlock
--force`` can tell a dead holder from a live one."""

_VERSION_3 = """
ALTER TABLE fastdowntime.patch_timing ADD COLUMN IF NOT EXISTS statements jsonb;
"""
"""Per statement of a rehearsed patch: its seconds, whether its time grows with its
tables' size, and their sizes on staging (the estimate scales it to production's)."""

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, _VERSION_1),
    (2, _VERSION_2),
    (3, _VERSION_3),
)
"""(version, SQL that brings the schema from the version before to it), oldest first. Version
1 is the schema before versions existed: its statements are ``IF NOT EXISTS``, so a database
that has it unversioned is adopted as version 1."""


class SchemaTooNew(Refused):
    """The database's fastdowntime schema is newer than this orchestrator knows."""

    def __init__(self, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(f"the fastdowntime schema in this database is at version {found}, "
                         f"this orchestrator knows versions up to {known}: upgrade fastdowntime "
                         "before it writes here")


def identifier(name: str) -> str:
    """``name`` as SQL text: a plain identifier, optionally schema-qualified, folded as written.

    Config values such as the revision table go through here before they
    reach a query; anything but letters, digits and underscores is refused.
    """
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(
            part and part.replace("_", "a").isalnum() and part.isascii() and not part[0].isdigit()
            for part in parts):
        raise BadInput(f"revision table {name!r} is not a plain identifier")
    return ".".join(parts)


def latest_version() -> int:
    """The newest schema version this orchestrator knows."""
    return MIGRATIONS[-1][0]


def schema_version(conn: Connection) -> int | None:
    """The version of the database's ``fastdowntime`` schema: None when there is none, 1 for
    the unversioned schema of before versions."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('fastdowntime.schema_version') IS NOT NULL, "
                    "to_regclass('fastdowntime.run') IS NOT NULL")
        versioned, exists = cur.fetchone() or (False, False)
        if not versioned:
            return 1 if exists else None
        cur.execute("SELECT max(version) FROM fastdowntime.schema_version")
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 1


def ensure_schema(conn: Connection) -> int:
    """Create the ``fastdowntime`` schema or upgrade it to :func:`latest_version` (commits);
    return the version. Raise :class:`SchemaTooNew` when the database is ahead of us.

    One transaction under an advisory lock: two orchestrators upgrading at
    once apply each migration once; a failed migration changes nothing.
    """
    autocommit = conn.autocommit
    if autocommit:
        conn.autocommit = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_KEY,))
            found = schema_version(conn) or 0
            if found > latest_version():
                raise SchemaTooNew(found, latest_version())
            cur.execute("CREATE SCHEMA IF NOT EXISTS fastdowntime; "
                        "CREATE TABLE IF NOT EXISTS fastdowntime.schema_version ("
                        "version integer PRIMARY KEY, "
                        "applied_at timestamptz NOT NULL DEFAULT clock_timestamp())")
            for version, sql in MIGRATIONS:
                if version > found:
                    cur.execute(sql)
            cur.execute("INSERT INTO fastdowntime.schema_version (version) "
                        "SELECT unnest(%s::integer[]) ON CONFLICT DO NOTHING",
                        ([version for version, _ in MIGRATIONS],))
        conn.commit()
        return latest_version()
    except BaseException:
        conn.rollback()
        raise
    finally:
        if autocommit:
            conn.autocommit = True


def schema_exists(conn: Connection) -> bool:
    """True when the ``fastdowntime`` schema has been created in this database."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('fastdowntime.run') IS NOT NULL")
        row = cur.fetchone()
    return bool(row and row[0])

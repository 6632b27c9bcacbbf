"""The orchestrator's own schema ``fastdowntime`` in the target database.

Run records, applied-patch checksums, live-patch progress and rehearsal
timings live here, so they share the database's fate (backups, standbys).
:func:`ensure_schema` is idempotent; read paths treat a missing schema as
empty, so preflight and dry runs never create it.
"""

from __future__ import annotations

from orchestrator.db.connect import Connection
from orchestrator.errors import BadInput

SCHEMA = "fastdowntime"
LOCK_KEY = 0x6664_7464  # "fdtd": the deploy lock's advisory key (one bigint)

_DDL = """
CREATE SCHEMA IF NOT EXISTS fastdowntime;
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


def ensure_schema(conn: Connection) -> None:
    """Create the ``fastdowntime`` schema and its tables if missing (commits)."""
    with conn.cursor() as cur:
        cur.execute(_DDL)
    if not conn.autocommit:
        conn.commit()


def schema_exists(conn: Connection) -> bool:
    """True when the ``fastdowntime`` schema has been created in this database."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('fastdowntime.run') IS NOT NULL")
        row = cur.fetchone()
    return bool(row and row[0])

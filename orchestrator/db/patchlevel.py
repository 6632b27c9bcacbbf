"""The database's patch level: the newest row of the revision table (``[database]
revision_table``), read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.db.connect import Connection
from orchestrator.db.schema import identifier
from orchestrator.errors import Refused


@dataclass(frozen=True)
class PatchLevel:
    """The newest patch the revision table records (numeric order on major, minor, patch),
    when it ran, and how many rows the table holds."""

    major: int
    minor: int
    patch: int
    start_time: datetime | None
    end_time: datetime | None
    applied: int

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        """Launchpad's way of writing a patch level: ``2211-43-0``."""
        return f"{self.major}-{self.minor:02d}-{self.patch}"


def patch_level(conn: Connection, revision_table: str) -> PatchLevel | None:
    """The newest row of ``revision_table``; None when it is empty, :class:`Refused` naming
    it when it does not exist."""
    table = identifier(revision_table)
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        row = cur.fetchone()
        if not (row and row[0]):
            raise Refused(f"the revision table {revision_table} is missing")
        cur.execute(f"SELECT major, minor, patch, start_time, end_time, count(*) OVER () "
                    f"FROM {table} ORDER BY major DESC, minor DESC, patch DESC LIMIT 1")
        newest = cur.fetchone()
    if not conn.autocommit:
        conn.rollback()
    return None if newest is None else PatchLevel(*newest)


__all__ = ["PatchLevel", "patch_level"]

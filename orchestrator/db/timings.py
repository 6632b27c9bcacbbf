"""Rehearsal timings: recorded on staging, read by production to gate cold patches.

A timing belongs to a patch *version*: (file name, checksum). A rehearsal of
an older text of the patch does not vouch for the new one. Timings are
stored in ``fastdowntime.patch_timing`` of the staging database and can be
exported as JSON (``fastdowntime timings --json``) for a production that
cannot reach staging (``[database] timings_file``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import Connection, connect
from orchestrator.db.schema import schema_exists
from orchestrator.errors import BadInput

Timings = Mapping[tuple[str, str], float]
"""(file name, checksum) -> seconds of its latest rehearsal."""


def record_timings(conn: Connection, rows: Iterable[tuple[str, str, float]],
                   run_id: str | None) -> None:
    """Store ``(filename, checksum, seconds)`` rows of a rehearsal (commits)."""
    with conn.cursor() as cur:
        for filename, checksum, seconds in rows:
            cur.execute("INSERT INTO fastdowntime.patch_timing "
                        "(filename, checksum, duration_s, run_id) VALUES (%s, %s, %s, %s)",
                        (filename, checksum, seconds, run_id))
    if not conn.autocommit:
        conn.commit()


def read_timings(settings: DatabaseSettings) -> dict[tuple[str, str], float]:
    """The latest timing of every patch version, from the file or the database configured.

    Source: ``timings_file`` when set, else ``timings_dsn``, else the
    database itself (a staging config rehearses and reads its own timings).
    """
    if settings.timings_file:
        return load_export(Path(settings.timings_file))
    conn = connect(settings, settings.timings_dsn, what="timings database", readonly=True)
    try:
        if not schema_exists(conn):
            return {}
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT ON (filename, checksum) filename, checksum, duration_s "
                        "FROM fastdowntime.patch_timing "
                        "ORDER BY filename, checksum, recorded_at DESC")
            return {(f, c): float(d) for f, c, d in cur.fetchall()}
    finally:
        conn.close()


def export(timings: Timings) -> list[dict[str, object]]:
    """The JSON form: a list of ``{"file", "checksum", "seconds"}``, sorted by file."""
    return [{"file": f, "checksum": c, "seconds": s} for (f, c), s in sorted(timings.items())]


def load_export(path: Path) -> dict[tuple[str, str], float]:
    """Read a file written from :func:`export`; BadInput naming the file when it is not one."""
    try:
        rows = json.loads(path.read_text())
        return {(row["file"], row["checksum"]): float(row["seconds"]) for row in rows}
    except FileNotFoundError:
        raise BadInput(f"{path}: no such timings file ([database] timings_file)") from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BadInput(f"{path}: not a timings export: {exc}") from None

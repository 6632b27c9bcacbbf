"""Rehearsal timings: recorded on staging, read by production to gate cold patches.

A timing belongs to a patch *version*: (file name, checksum). A rehearsal of
an older text of the patch does not vouch for the new one. Timings are
stored in ``fastdowntime.patch_timing`` of the staging database and can be
exported as JSON (``fastdowntime timings --json``) for a production that
cannot reach staging (``[database] timings_file``). Each timing also keeps
its statements' records (:class:`~orchestrator.estimate.StatementTiming`):
their seconds and their tables' sizes on staging, so production can scale
the estimate to its own sizes (:func:`table_sizes`).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.config import DatabaseSettings
from orchestrator.db.connect import Connection, connect
from orchestrator.db.schema import schema_exists, schema_version
from orchestrator.errors import BadInput
from orchestrator.estimate import Sizes, StatementTiming, TableSize

Timings = Mapping[tuple[str, str], float]
"""(file name, checksum) -> seconds of its latest rehearsal."""
Statements = Mapping[tuple[str, str], tuple[StatementTiming, ...]]
"""(file name, checksum) -> its latest rehearsal's statement records (may be empty)."""


def record_timings(conn: Connection,
                   rows: Iterable[tuple[str, str, float, Sequence[StatementTiming]]],
                   run_id: str | None) -> None:
    """Store ``(filename, checksum, seconds, statements)`` rows of a rehearsal (commits)."""
    with conn.cursor() as cur:
        for filename, checksum, seconds, statements in rows:
            cur.execute("INSERT INTO fastdowntime.patch_timing "
                        "(filename, checksum, duration_s, run_id, statements) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (filename, checksum, seconds, run_id,
                         json.dumps([s.to_json() for s in statements])))
    if not conn.autocommit:
        conn.commit()


def median_timings(runs: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """A rehearsal's timing of each patch from several runs of the cold transaction (its
    trials and its window; each a list of ``PatchTiming`` dicts, patches in the same order).

    When every run timed the same statements: each statement's median, and the patch's
    seconds are their sum plus the median of the time between them (the revision row,
    the round trips). Medians of the parts, so that a slow statement in one run and a
    slow gap in another do not both count: production scales the statements and adds the
    gap as it is (:mod:`orchestrator.estimate`). Otherwise: the median of the patch's
    seconds, and no statement records.

    One run on a shared staging machine varies by a quarter either way (measured here:
    one CREATE INDEX on 1.25 million rows took 0.53-1.06 s in 12 runs); production
    scales the rehearsed seconds, and their error with them."""
    if not runs:
        return []
    timed: list[dict[str, Any]] = []
    for index, first in enumerate(runs[0]):
        same = [run[index] for run in runs]
        if any(t["filename"] != first["filename"] for t in same):
            raise ValueError(f"runs of the cold transaction disagree on patch {index + 1}: "
                             + ", ".join(t["filename"] for t in same))
        statements = [tuple(t.get("statement_s") or ()) for t in same]
        width = len(statements[0])
        if width and all(len(s) == width for s in statements):
            each = tuple(round(statistics.median(s[i] for s in statements), 6)
                         for i in range(width))
            between = statistics.median(max(0.0, t["duration_s"] - sum(s))
                                        for t, s in zip(same, statements, strict=True))
            seconds = round(sum(each) + between, 6)
        else:
            each = ()
            seconds = round(statistics.median(t["duration_s"] for t in same), 6)
        timed.append({**first, "duration_s": seconds, "statement_s": each})
    return timed


def read_timings(settings: DatabaseSettings) -> dict[tuple[str, str], float]:
    """The latest timing of every patch version, from the file or the database configured.

    Source: ``timings_file`` when set, else ``timings_dsn``, else the
    database itself (a staging config rehearses and reads its own timings).
    """
    return {key: seconds for key, (seconds, _) in read_rehearsals(settings).items()}


def read_rehearsals(settings: DatabaseSettings
                    ) -> dict[tuple[str, str], tuple[float, tuple[StatementTiming, ...]]]:
    """:func:`read_timings` with each timing's statement records."""
    if settings.timings_file:
        return load_rehearsals(Path(settings.timings_file))
    conn = connect(settings, settings.timings_dsn, what="timings database", readonly=True)
    try:
        if not schema_exists(conn):
            return {}
        statements = "statements" if (schema_version(conn) or 0) >= 3 else "NULL"
        with conn.cursor() as cur:
            cur.execute("SELECT DISTINCT ON (filename, checksum) filename, checksum, "
                        f"duration_s, {statements} FROM fastdowntime.patch_timing "
                        "ORDER BY filename, checksum, recorded_at DESC")
            return {(f, c): (float(d), _statements(s)) for f, c, d, s in cur.fetchall()}
    finally:
        conn.close()


def table_sizes(conn: Connection, tables: Iterable[str]) -> Sizes:
    """Each table's size here, as the patch names it (None where it does not exist)."""
    names = sorted(set(tables))
    if not names:
        return {}
    with conn.cursor() as cur:
        cur.execute("SELECT t.name, pg_relation_size(c.oid), c.reltuples "
                    "FROM unnest(%s::text[]) AS t(name) "
                    "LEFT JOIN pg_class c ON c.oid = to_regclass(t.name)", (names,))
        return {name: None if size is None else TableSize(int(size), max(0.0, float(rows)))
                for name, size, rows in cur.fetchall()}


def export(timings: Timings, statements: Statements | None = None) -> list[dict[str, object]]:
    """The JSON form: a list of ``{"file", "checksum", "seconds", "statements"}``, sorted by
    file (``statements``: the statement records, where known)."""
    statements = statements or {}
    return [{"file": f, "checksum": c, "seconds": s,
             "statements": [r.to_json() for r in statements.get((f, c), ())]}
            for (f, c), s in sorted(timings.items())]


def load_export(path: Path) -> dict[tuple[str, str], float]:
    """Read a file written from :func:`export`; BadInput naming the file when it is not one."""
    return {key: seconds for key, (seconds, _) in load_rehearsals(path).items()}


def load_rehearsals(path: Path
                    ) -> dict[tuple[str, str], tuple[float, tuple[StatementTiming, ...]]]:
    """:func:`load_export` with the statement records (none in an older export)."""
    try:
        rows = json.loads(path.read_text())
        return {(row["file"], row["checksum"]): (float(row["seconds"]),
                                                 _statements(row.get("statements")))
                for row in rows}
    except FileNotFoundError:
        raise BadInput(f"{path}: no such timings file ([database] timings_file)") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadInput(f"{path}: not a timings export: {exc}") from None


def _statements(data: Any) -> tuple[StatementTiming, ...]:
    if isinstance(data, str):
        data = json.loads(data)
    return tuple(StatementTiming.from_json(item) for item in data or ())

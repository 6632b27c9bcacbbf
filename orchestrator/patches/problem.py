"""One thing wrong with a patch file, as data: :class:`Problem`, with a stable rule code.

The rule codes, their severities and whether a plan refuses them live in
:mod:`orchestrator.patches.rules`; a Problem only carries its code and what
was found where. ``str(problem)`` is the sentence people read
(``patch-2211-03-0.sql line 4: ...``); :meth:`Problem.to_json` is what
machines read (``patches --json``, SARIF, GitHub annotations).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.patches.locks import ACCESS_EXCLUSIVE, EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE

ERROR = "error"
WARNING = "warning"
SEVERITIES = (ERROR, WARNING)

READS = "reads"
WRITES = "writes"
DDL = "ddl"


def blocks(lock: str | None) -> str | None:
    """What holding ``lock`` on a table stops other sessions doing.

    "reads" for ACCESS EXCLUSIVE (even SELECT waits); "writes" for SHARE,
    SHARE ROW EXCLUSIVE and EXCLUSIVE (INSERT, UPDATE and DELETE wait,
    SELECT does not); "ddl" for the weaker levels, which only conflict with
    other DDL and maintenance (VACUUM, CREATE INDEX ...); None for no lock.
    """
    if lock is None:
        return None
    if lock == ACCESS_EXCLUSIVE:
        return READS
    if lock in (SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE):
        return WRITES
    return DDL


@dataclass(frozen=True)
class Problem:
    """A problem found in one patch file.

    ``rule`` is a stable code from :data:`orchestrator.patches.rules.RULES`;
    ``severity`` "error" or "warning"; ``file`` the file as the caller named
    it; ``line`` and ``col`` 1-based (columns count characters), None when the
    problem is about the whole file; ``message`` a sentence without the file
    and line; ``lock`` the PostgreSQL lock level the statement takes on the
    table concerned (None when no lock is involved) and ``blocks`` what that
    lock stops (:func:`blocks`); ``hint`` the safer form, or None.
    """

    rule: str
    severity: str
    file: str
    line: int | None
    col: int | None
    message: str
    lock: str | None = None
    blocks: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file} line {self.line}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        """Every field, by name."""
        return asdict(self)

"""One patch file -> :class:`PatchReport`: its kind (live or cold), why, its statements and locks.

The kind comes from the first of (SPEC section 2):

1. a ``-- fastdowntime: live`` or ``-- fastdowntime: cold`` line among the
   leading comment and blank lines (any case);
2. static analysis: live when every statement is in the live-safe set (see
   :mod:`orchestrator.patches.locks`), else cold.

A ``live`` header is believed, and the report's kind stays "live", but every
statement that takes a blocking lock on an existing table without being in
the live-safe set is a *violation*: the plan must refuse the patch. (So
ADD CONSTRAINT ... FOREIGN KEY NOT VALID, which the SPEC lists as live-safe,
is no violation although it holds SHARE ROW EXCLUSIVE for a moment.) A
``cold`` header is always believed.

Problems are reported, not raised: a bad header, a misplaced header, a name
that does not conform, an empty patch, a last statement without ``;``,
transaction control, and statements that cannot run inside the cold-patch
transaction in a cold patch. Only a syntax error raises
(:class:`~orchestrator.patches.source.PatchSyntaxError`). Messages name the
file as the caller gave it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestrator.patches.locks import Effect, settle
from orchestrator.patches.naming import PatchName, PatchNameError, parse_name
from orchestrator.patches.source import (
    Header,
    Lines,
    Piece,
    Speller,
    read_header,
    split,
    stray_headers,
)
from orchestrator.patches.statements import effect_of

LIVE = "live"
COLD = "cold"
_SHOWN_SQL = 80


@dataclass(frozen=True)
class Statement:
    """One statement of a patch and the lock it takes.

    ``sql`` is the text as written (without comments around it and without
    the ``;``), ``line`` the 1-based line where it starts. ``lock`` is the
    strongest level (PostgreSQL's name) it takes on a relation that existed
    before the patch, or, for a statement that touches only relations the
    patch created, the strongest it takes on those; None when it locks no
    relation. ``tables`` are the relations locked at exactly that level, as
    written (``bug``, ``public.bug``, ``"Odd"``; ``*`` for every table).
    ``blocking`` is True when the lock stops other sessions' SELECT or
    INSERT/UPDATE/DELETE on an existing relation; ``live_safe`` when the
    statement is in the live-safe set.
    """

    sql: str
    line: int
    lock: str | None
    tables: tuple[str, ...]
    blocking: bool
    live_safe: bool


@dataclass(frozen=True)
class PatchReport:
    """The analysis of one patch file.

    ``kind`` is "live" or "cold"; ``reason`` says why in words; ``header`` is
    the header's value or None; ``problems`` are full sentences naming file
    and line; ``violations`` the subset that are plan violations (a ``live``
    header on a blocking statement). ``name`` is None when the file name does
    not conform (a problem says so).
    """

    file: str
    name: PatchName | None
    kind: str
    reason: str
    header: str | None
    statements: tuple[Statement, ...]
    problems: tuple[str, ...]
    violations: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``patches --json`` object of SPEC section 3."""
        return {
            "file": self.file,
            "kind": self.kind,
            "reason": self.reason,
            "statements": [
                {"sql": s.sql, "lock": s.lock, "tables": list(s.tables), "line": s.line}
                for s in self.statements
            ],
            "problems": list(self.problems),
        }


def analyse(
    file: str, sql: str, *, revision_table: str = "LaunchpadDatabaseRevision"
) -> PatchReport:
    """Classify the patch ``file`` whose text is ``sql``; no I/O.

    ``revision_table`` names the table whose INSERT is the patch recording
    itself. Raises PatchSyntaxError (file and line) when PostgreSQL's parser
    refuses the text; everything else wrong is a problem in the report.
    """
    problems: list[str] = []
    try:
        name: PatchName | None = parse_name(file)
    except PatchNameError as error:
        name = None
        problems.append(str(error))
    lines = Lines(sql)
    header = read_header(sql)
    pieces = split(file, sql, lines)
    statements, effects = _judge(pieces, revision_table, Speller(sql))

    problems += _header_problems(file, sql, header, pieces, lines)
    kind, reason = _kind(header, statements, effects)
    problems += _statement_problems(file, kind, pieces, effects)
    violations = [
        f"{file} line {s.line}: {_short(s.sql)} takes {s.lock} on {', '.join(s.tables)}, "
        "but the file says live"
        for s in statements
        if header.value == LIVE and s.blocking and not s.live_safe
    ]
    return PatchReport(
        file=file,
        name=name,
        kind=kind,
        reason=reason,
        header=header.value,
        statements=tuple(statements),
        problems=tuple(problems + violations),
        violations=tuple(violations),
    )


def _judge(
    pieces: list[Piece], revision_table: str, spell: Speller
) -> tuple[list[Statement], list[Effect]]:
    """Each piece's Statement, tracking the relations the patch creates as it goes."""
    created: set[tuple[str, str]] = set()
    statements, effects = [], []
    for piece in pieces:
        effect = effect_of(piece.node, revision_table)
        settled = settle(effect, created)
        statements.append(
            Statement(
                piece.sql,
                piece.line,
                settled.lock,
                tuple(spell(r) for r in settled.tables),
                settled.blocking,
                settled.live_safe,
            )
        )
        effects.append(effect)
        created.update(r.key for r in effect.creates)
        if effect.renames and effect.renames[0].key in created:
            created.add(effect.renames[1].key)
    return statements, effects


def _kind(header: Header, statements: list[Statement], effects: list[Effect]) -> tuple[str, str]:
    """The kind and its reason: the header's word, else the static verdict."""
    if header.value is not None:
        return header.value, f'header "{header.text}"'
    if not statements:
        return LIVE, "the patch has no statements"
    unsafe = [i for i, s in enumerate(statements) if not s.live_safe]
    if not unsafe:
        return LIVE, "every statement is live-safe"
    blocking = [i for i in unsafe if statements[i].blocking]
    first = (blocking or unsafe)[0]
    statement, effect = statements[first], effects[first]
    where = f"statement {first + 1} (line {statement.line}) {effect.what}"
    if statement.blocking:
        reason = f"{where} takes {statement.lock} on {', '.join(statement.tables)}"
    elif statement.lock:
        reason = (
            f"{where} takes {statement.lock} on {', '.join(statement.tables)} "
            "and is not in the live-safe set"
        )
    else:
        reason = f"{where} is not in the live-safe set"
    others = len(unsafe) - 1
    if others:
        reason += f" ({others} more statement{'s' if others > 1 else ''} not live-safe)"
    return COLD, reason


def _header_problems(
    file: str, sql: str, header: Header, pieces: list[Piece], lines: Lines
) -> list[str]:
    problems = [
        f"{file} line {line}: unknown fastdowntime header value {value!r}; "
        "write '-- fastdowntime: live' or '-- fastdowntime: cold'"
        for line, value in header.bad
    ]
    problems += [
        f"{file} line {line}: this fastdowntime header says {value} but line {header.line} "
        f"says {header.value}; keep one"
        for line, value in header.contrary
    ]
    problems += [
        f"{file} line {line}: a fastdowntime header after the first statement is ignored; "
        "move it into the comment lines at the top of the file"
        for line in stray_headers(sql, header, pieces, lines)
    ]
    return problems


def _statement_problems(
    file: str, kind: str, pieces: list[Piece], effects: list[Effect]
) -> list[str]:
    problems = []
    if not pieces:
        problems.append(f"{file}: the patch has no SQL statements")
    elif not pieces[-1].terminated:
        last = pieces[-1].end_line
        problems.append(f"{file} line {last}: the last statement does not end with ';'")
    for piece, effect in zip(pieces, effects, strict=True):
        if effect.transaction_control:
            problems.append(
                f"{file} line {piece.line}: {effect.what} in a patch; the orchestrator owns "
                "the transaction, remove it"
            )
        elif effect.no_transaction and kind == COLD:
            problems.append(
                f"{file} line {piece.line}: {effect.what} cannot run inside a transaction "
                "block, and a cold patch runs in the cold-patch transaction; "
                "move it to a live patch"
            )
    return problems


def _short(sql: str) -> str:
    """``sql`` on one line, cut to a readable length."""
    flat = re.sub(r"\s+", " ", sql)
    return flat if len(flat) <= _SHOWN_SQL else flat[: _SHOWN_SQL - 3].rstrip() + "..."

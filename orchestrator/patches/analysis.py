"""One patch file -> :class:`PatchReport`: its kind (live or cold), why, its statements,
their locks, and its problems.

The kind comes from the first of (SPEC section 2):

1. a ``-- fastdowntime: live`` or ``-- fastdowntime: cold`` line among the
   leading comment and blank lines (any case);
2. static analysis: live when every statement is in the live-safe set (see
   :mod:`orchestrator.patches.locks`), else cold.

A ``live`` header is believed, and the report's kind stays "live", but every
statement that takes a blocking lock on an existing table without being in
the live-safe set is a *violation* (rule ``live-blocks``): the plan must
refuse the patch. (So ADD CONSTRAINT ... FOREIGN KEY NOT VALID, which the
SPEC lists as live-safe, is no violation although it holds SHARE ROW
EXCLUSIVE for a moment.) A ``cold`` header is always believed.

Problems are :class:`~orchestrator.patches.problem.Problem` objects with a
rule code of :mod:`orchestrator.patches.rules`: a name that does not conform,
a bad or misplaced header, an empty patch, a last statement without ``;``,
transaction control, statements that cannot run inside the cold-patch
transaction in a cold patch, and the advisory findings of
:mod:`orchestrator.patches.hazards`. A comment ``-- fastdowntime-ignore:
CODE[, CODE...] [-- reason]`` before a statement (or after it on its last
line) silences those advisory codes for that statement.

:func:`lint` never raises for content: text PostgreSQL's parser refuses
gives a report with ``parsed=False`` and an ``unparseable`` problem.
:func:`analyse` is the same but raises
:class:`~orchestrator.patches.source.PatchSyntaxError` instead. Messages
name the file as the caller gave it.
"""

from __future__ import annotations

import dataclasses
import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.patches.hazards import Hazards
from orchestrator.patches.locks import Effect, range_var, settle
from orchestrator.patches.naming import PatchName, PatchNameError, parse_name
from orchestrator.patches.problem import Problem
from orchestrator.patches.rules import RULES
from orchestrator.patches.source import (
    CharOffsets,
    Header,
    Lines,
    PatchSyntaxError,
    Piece,
    Speller,
    read_header,
    split,
    stray_headers,
)
from orchestrator.patches.statements import effect_of

LIVE = "live"
COLD = "cold"
DEFAULT_REVISION_TABLE = "LaunchpadDatabaseRevision"
_SHOWN_SQL = 80
_IGNORE = re.compile(r"--[ \t]*fastdowntime-ignore[ \t]*:([^\n]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    """One statement of a patch and the lock it takes.

    ``sql`` is the text as written (without comments around it and without
    the ``;``), ``line`` and ``col`` the 1-based line and column (in
    characters) of its first character. ``lock`` is the
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
    col: int
    lock: str | None
    tables: tuple[str, ...]
    blocking: bool
    live_safe: bool
    grows: tuple[str, ...] = ()
    """Why its time grows with its tables' size: the rules of :data:`GROWING` it trips
    (acknowledged or not), and ``dml`` for UPDATE or DELETE of an existing table (a WHERE
    without an index still reads every row). Empty: catalog work, whatever the size."""


@dataclass(frozen=True)
class PatchReport:
    """The analysis of one patch file.

    ``kind`` is "live" or "cold"; ``reason`` says why in words; ``header`` is
    the header's value or None; ``problems`` are every :class:`Problem`
    found, file-wide ones first, then by line and column; ``violations`` the
    ``live-blocks`` subset (a ``live`` header on a blocking statement).
    ``name`` is None when the file name does not conform (a problem says so).
    ``parsed`` is False when the text could not be read or parsed: then there
    are no statements, the kind is "cold" and a problem (``unparseable`` or
    ``unreadable``) says where and why.
    """

    file: str
    name: PatchName | None
    kind: str
    reason: str
    header: str | None
    statements: tuple[Statement, ...]
    problems: tuple[Problem, ...]
    violations: tuple[Problem, ...]
    parsed: bool = True

    def to_json(self) -> dict[str, Any]:
        """The ``patches --json`` object of SPEC section 3."""
        return {
            "file": self.file,
            "kind": self.kind,
            "reason": self.reason,
            "statements": [
                {"sql": s.sql, "lock": s.lock, "tables": list(s.tables), "line": s.line,
                 "col": s.col}
                for s in self.statements
            ],
            "problems": [p.to_json() for p in self.problems],
        }


def lint(
    file: str, sql: str | bytes, *, revision_table: str = DEFAULT_REVISION_TABLE
) -> PatchReport:
    """Classify the patch ``file`` whose text is ``sql`` and list its problems; no I/O.

    ``sql`` may be the file's bytes, which must be UTF-8. ``revision_table``
    names the table whose INSERT is the patch recording itself. Never raises
    for the content: when the bytes are not UTF-8 or PostgreSQL's parser
    refuses the text the report has ``parsed=False``, kind "cold", a reason
    saying so and an ``unparseable`` problem at the line and column of the
    error.
    """
    if isinstance(sql, bytes):
        data = sql
        try:
            sql = data.decode("utf-8")
        except UnicodeDecodeError as error:
            return _undecodable(file, data, error)
    problems = _name_problems(file)
    lines = Lines(sql)
    header = read_header(sql)
    try:
        pieces = split(file, sql, lines)
    except PatchSyntaxError as error:
        problems += _header_problems(file, sql, header, [], lines)
        problems.append(RULES["unparseable"].problem(file, error.line, error.col, error.problem))
        reason = f"PostgreSQL's parser refuses it at line {error.line}: {error.problem}"
        return _unparsed(file, reason, problems)
    spell = Speller(sql)
    statements, effects, befores = _judge(pieces, revision_table, spell)

    problems += _header_problems(file, sql, header, pieces, lines)
    kind, reason = _kind(header, statements, effects)
    problems += _statement_problems(file, kind, pieces, statements, effects, lines)
    violations = [
        RULES["live-blocks"].problem(
            file, s.line, s.col,
            f"{_short(s.sql)} takes {s.lock} on {', '.join(s.tables)}, but the file says live",
            lock=s.lock,
        )
        for s in statements
        if header.value == LIVE and s.blocking and not s.live_safe
    ]
    advice, growing = _advice(file, sql, kind == COLD, pieces, befores, spell, lines)
    problems += advice
    return PatchReport(
        file=file,
        name=_parsed_name(file),
        kind=kind,
        reason=reason,
        header=header.value,
        statements=tuple(dataclasses.replace(s, grows=g)
                         for s, g in zip(statements, growing, strict=True)),
        problems=_ordered(problems + violations),
        violations=tuple(violations),
    )


def unreadable(file: str, why: str) -> PatchReport:
    """The report of a file that cannot be read: ``why`` says what the system said."""
    problems = _name_problems(file)
    problems.append(RULES["unreadable"].problem(file, None, None, f"cannot read the file: {why}"))
    return _unparsed(file, f"it cannot be read: {why}", problems)


def analyse(
    file: str, sql: str, *, revision_table: str = DEFAULT_REVISION_TABLE
) -> PatchReport:
    """:func:`lint`, but raise PatchSyntaxError (file, line, column) when PostgreSQL's parser
    refuses the text; everything else wrong is a problem in the report."""
    report = lint(file, sql, revision_table=revision_table)
    if not report.parsed:
        error = next(p for p in report.problems if p.rule == "unparseable")
        raise PatchSyntaxError(file, error.line or 1, error.message, error.col)
    return report


def _advice(
    file: str,
    sql: str,
    cold: bool,
    pieces: list[Piece],
    befores: list[frozenset[tuple[str, str]]],
    spell: Speller,
    lines: Lines,
) -> tuple[list[Problem], list[tuple[str, ...]]]:
    """The advisory problems of :mod:`~orchestrator.patches.hazards` that no
    ``fastdowntime-ignore`` comment silences, and the ``bad-ignore`` ones; and each
    statement's :attr:`Statement.grows`."""
    ignored, problems = _ignores(file, sql, pieces, lines)
    hazards = Hazards(spell, cold=cold)
    to_char = CharOffsets(sql)
    growing: list[tuple[str, ...]] = []
    for index, (piece, before) in enumerate(zip(pieces, befores, strict=True)):
        found_all = list(hazards.check(piece.node, before))
        grows = {f.rule for f in found_all if f.rule in GROWING}
        if _changes_rows(piece.node, before):
            grows.add("dml")
        growing.append(tuple(sorted(grows)))
        for found in found_all:
            if found.rule in ignored[index]:
                continue
            at = piece.start if found.location < 0 else to_char(found.location)
            problems.append(RULES[found.rule].problem(
                file, lines.at(at), lines.col(at), found.message, lock=found.lock,
                hint=found.hint))
    return problems, growing


GROWING = frozenset({
    "rewrite-column-type", "rewrite-volatile-default", "set-not-null-scan",
    "constraint-validation-scan", "constraint-index-build", "whole-table-dml",
    "index-not-concurrently", "rewrite-table",
})
"""The advisory rules whose statements read or write every row: their time grows with the
table's size (a rehearsal on a smaller staging table underestimates them)."""


def _changes_rows(node: Mapping[str, Any], created: frozenset[tuple[str, str]]) -> bool:
    """UPDATE or DELETE of a table that existed before the patch."""
    for name in ("UpdateStmt", "DeleteStmt"):
        if name in node:
            return range_var(node[name]["relation"]).key not in created
    return False


def _undecodable(file: str, data: bytes, error: UnicodeDecodeError) -> PatchReport:
    good = data[: error.start].decode("utf-8")
    lines = Lines(good)
    line, col = lines.at(len(good)), lines.col(len(good))
    message = f"the text is not UTF-8: byte 0x{data[error.start]:02x} cannot be decoded"
    problems = _name_problems(file)
    problems.append(RULES["unparseable"].problem(file, line, col, message))
    return _unparsed(file, f"it cannot be parsed: at line {line} {message}", problems)


def _unparsed(file: str, reason: str, problems: list[Problem]) -> PatchReport:
    return PatchReport(
        file=file,
        name=_parsed_name(file),
        kind=COLD,
        reason=reason,
        header=None,
        statements=(),
        problems=_ordered(problems),
        violations=(),
        parsed=False,
    )


def _parsed_name(file: str) -> PatchName | None:
    try:
        return parse_name(file)
    except PatchNameError:
        return None


def _name_problems(file: str) -> list[Problem]:
    try:
        parse_name(file)
    except PatchNameError:
        return [RULES["bad-name"].problem(
            file, None, None, "name does not match patch-MAJOR-MINOR-POINT.sql")]
    return []


def _ordered(problems: list[Problem]) -> tuple[Problem, ...]:
    """File-wide problems first, then by line and column (stable)."""
    return tuple(sorted(problems, key=lambda p: (p.line is not None, p.line or 0, p.col or 0)))


def _judge(
    pieces: list[Piece], revision_table: str, spell: Speller
) -> tuple[list[Statement], list[Effect], list[frozenset[tuple[str, str]]]]:
    """Each piece's Statement and Effect, and the keys of the relations created before it."""
    created: set[tuple[str, str]] = set()
    statements, effects, befores = [], [], []
    for piece in pieces:
        effect = effect_of(piece.node, revision_table)
        settled = settle(effect, created)
        befores.append(frozenset(created))
        statements.append(
            Statement(
                piece.sql,
                piece.line,
                piece.col,
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
    return statements, effects, befores


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
) -> list[Problem]:
    def at(rule: str, line: int, message: str) -> Problem:
        start = lines.start(line)
        end = sql.find("\n", start)
        text = sql[start:end if end >= 0 else len(sql)]
        col = len(text) - len(text.lstrip()) + 1
        return RULES[rule].problem(file, line, col, message)

    problems = [
        at("unknown-header", line, f"unknown fastdowntime header value {value!r}; "
           "write '-- fastdowntime: live' or '-- fastdowntime: cold'")
        for line, value in header.bad
    ]
    problems += [
        at("contrary-header", line, f"this fastdowntime header says {value} but line "
           f"{header.line} says {header.value}; keep one")
        for line, value in header.contrary
    ]
    problems += [
        at("stray-header", line, "a fastdowntime header after the first statement is ignored; "
           "move it into the comment lines at the top of the file")
        for line in stray_headers(sql, header, pieces, lines)
    ]
    return problems


def _statement_problems(
    file: str,
    kind: str,
    pieces: list[Piece],
    statements: list[Statement],
    effects: list[Effect],
    lines: Lines,
) -> list[Problem]:
    problems = []
    if not pieces:
        problems.append(RULES["empty"].problem(file, None, None, "the patch has no SQL statements"))
    elif not pieces[-1].terminated:
        last = pieces[-1]
        problems.append(RULES["unterminated"].problem(
            file, last.end_line, lines.col(max(last.end - 1, last.start)) + 1,
            "the last statement does not end with ';'"))
    for statement, effect in zip(statements, effects, strict=True):
        if effect.transaction_control:
            problems.append(RULES["transaction-control"].problem(
                file, statement.line, statement.col,
                f"{effect.what} in a patch; the orchestrator owns the transaction, remove it"))
        elif effect.no_transaction and kind == COLD:
            problems.append(RULES["no-transaction-in-cold"].problem(
                file, statement.line, statement.col,
                f"{effect.what} cannot run inside a transaction block, and a cold patch runs "
                "in the cold-patch transaction; move it to a live patch",
                lock=statement.lock))
    return problems


def _ignores(
    file: str, sql: str, pieces: list[Piece], lines: Lines
) -> tuple[list[set[str]], list[Problem]]:
    """The advisory codes each statement's ``fastdowntime-ignore`` comments silence, and
    a ``bad-ignore`` problem per code that names no advisory rule.

    A comment inside a statement, or between two statements, belongs to the
    statement after it, unless it is on the line where the statement before it
    ends (a trailing comment).
    """
    ignored: list[set[str]] = [set() for _ in pieces]
    bad: list[Problem] = []
    if not pieces or "fastdowntime-ignore" not in sql.lower():
        return ignored, bad
    starts = [p.start for p in pieces]
    for match in _IGNORE.finditer(sql):
        at = match.start()
        after = bisect_right(starts, at)  # the first piece starting after the comment
        before = after - 1
        if before >= 0 and (at < pieces[before].end or after == len(pieces)
                            or lines.at(at) == pieces[before].end_line):
            index = before
        else:
            index = after
        value = match.group(1).split("--", 1)[0]
        for code in (c.lower() for c in re.split(r"[,\s]+", value) if c):
            rule = RULES.get(code)
            if rule is not None and not rule.plan:
                ignored[index].add(code)
                continue
            why = "a plan refuses it, so it cannot be ignored" if rule else "no rule has that code"
            bad.append(RULES["bad-ignore"].problem(
                file, lines.at(at), lines.col(at),
                f"fastdowntime-ignore names {code!r}, but {why}"))
    return ignored, bad


def _short(sql: str) -> str:
    """``sql`` on one line, cut to a readable length."""
    flat = re.sub(r"\s+", " ", sql)
    return flat if len(flat) <= _SHOWN_SQL else flat[: _SHOWN_SQL - 3].rstrip() + "..."

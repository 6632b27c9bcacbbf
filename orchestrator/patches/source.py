"""Patch text -> its header and its statements, each with its text and line as written.

One call of ``pglast.parser.parse_sql_json`` per file (PostgreSQL's own
parser, fast and without building Python node objects). Its statement
offsets count UTF-8 bytes; every offset handed out here counts characters
of the ``str`` the caller gave, so lines stay right in non-ASCII patches.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from pglast.parser import ParseError, parse_sql_json, scan

from orchestrator.errors import BadInput
from orchestrator.patches.locks import Relation

HEADER_VALUES = ("live", "cold")

_HEADER = re.compile(r"--\s*fastdowntime\s*:\s*(.*?)\s*$", re.IGNORECASE)
_STRAY_HEADER = re.compile(r"^[ \t]*--[ \t]*fastdowntime[ \t]*:", re.IGNORECASE | re.MULTILINE)
_COMMENTS = ("SQL_COMMENT", "C_COMMENT")
_IDENT_TEXT = r'"(?:[^"]|"")+"|[^\W\d][\w$]*'
_IDENT = re.compile(_IDENT_TEXT)
_NAME_CHAIN = re.compile(rf"(?:{_IDENT_TEXT})(?:\s*\.\s*(?:{_IDENT_TEXT})){{0,2}}")


class PatchSyntaxError(BadInput):
    """PostgreSQL's parser refused the patch: ``file``, 1-based ``line`` and ``col``, ``problem``.

    ``col`` counts characters from 1; None when the parser gave no position.
    """

    def __init__(self, file: str, line: int, problem: str, col: int | None = None) -> None:
        self.file = file
        self.line = line
        self.col = col
        self.problem = problem
        super().__init__(f"{file} line {line}: {problem}")


@dataclass(frozen=True)
class Header:
    """The ``-- fastdowntime: live|cold`` line among the leading comments, if any.

    ``value`` is "live" or "cold" (lower case) or None; ``text`` the comment as
    written; ``line`` its 1-based line. ``bad`` holds (line, value) of header
    lines whose value is neither; ``contrary`` holds (line, value) of later
    header lines that say the opposite of the first; ``body`` is the offset
    where the leading comment and blank lines end.
    """

    value: str | None
    text: str | None
    line: int | None
    bad: tuple[tuple[int, str], ...]
    contrary: tuple[tuple[int, str], ...]
    body: int


@dataclass(frozen=True)
class Piece:
    """One statement of the file: its parse tree and where it is.

    ``sql`` is the text from its first to its last token (comments around it
    and the ``;`` left out); ``start``/``end`` are character offsets of that
    text, ``line``/``end_line`` the 1-based lines of its first and last
    character, ``col`` the 1-based column of its first character.
    ``terminated`` is False only for a last statement without ``;``.
    """

    node: dict[str, Any]
    sql: str
    start: int
    end: int
    line: int
    end_line: int
    terminated: bool
    col: int = 1


class Lines:
    """Character offset -> 1-based line and column of one text."""

    def __init__(self, text: str) -> None:
        self._newlines = [m.start() for m in re.finditer("\n", text)]

    def at(self, offset: int) -> int:
        """The line holding the character at ``offset``."""
        return bisect_right(self._newlines, offset - 1) + 1

    def col(self, offset: int) -> int:
        """The 1-based column (in characters) of the character at ``offset`` on its line."""
        return offset - self.start(self.at(offset)) + 1

    def start(self, line: int) -> int:
        """The offset of the first character of the 1-based ``line``."""
        return self._newlines[line - 2] + 1 if 1 < line <= len(self._newlines) + 1 else 0


class CharOffsets:
    """UTF-8 byte offsets (as libpg_query reports them) -> character offsets of one text.

    Cheapest when called with increasing offsets; identity for ASCII text.
    """

    def __init__(self, text: str) -> None:
        self._raw = None if text.isascii() else text.encode("utf-8")
        self._byte = 0
        self._char = 0

    def __call__(self, byte: int) -> int:
        if self._raw is None:
            return byte
        if byte < self._byte:
            self._byte = self._char = 0
        self._char += len(self._raw[self._byte : byte].decode("utf-8"))
        self._byte = byte
        return self._char


class Speller:
    """A relation's name as the patch spells it, from the text at the parser's location.

    ``LaunchpadDatabaseRevision`` rather than the parser's folded
    ``launchpaddatabaserevision``; the parser's name (quoted where needed) when
    the relation has no location or the text there does not spell it.
    """

    def __init__(self, sql: str) -> None:
        self._sql = sql
        self._to_char = CharOffsets(sql)

    def __call__(self, relation: Relation) -> str:
        if relation.location < 0 or relation.name == "*":
            return str(relation)
        match = _NAME_CHAIN.match(self._sql, self._to_char(relation.location))
        if match is None:
            return str(relation)
        parts = [p.strip() for p in _IDENT.findall(match.group(0))]
        folded = [p[1:-1].replace('""', '"') if p.startswith('"') else p.lower() for p in parts]
        wanted = [relation.schema, relation.name] if relation.schema else [relation.name]
        if folded[-len(wanted) :] != wanted:
            return str(relation)
        return ".".join(parts[-len(wanted) :])


def read_header(sql: str) -> Header:
    """Find the header among the leading comment (``--`` and ``/* */``) and blank lines."""
    value = text = line = None
    bad: list[tuple[int, str]] = []
    contrary: list[tuple[int, str]] = []
    in_block = False
    pos = lineno = 0
    while pos < len(sql):
        newline = sql.find("\n", pos)
        stop = len(sql) if newline < 0 else newline
        stripped = sql[pos:stop].strip()
        if in_block:
            in_block = "*/" not in stripped
            if not in_block and stripped.split("*/", 1)[1].strip():
                break
        elif stripped.startswith("/*"):
            close = stripped.find("*/", 2)
            in_block = close < 0
            if not in_block and stripped[close + 2 :].strip():
                break
        elif stripped and not stripped.startswith("--"):
            break
        lineno += 1
        match = _HEADER.match(stripped) if stripped.startswith("--") else None
        if match and not in_block:
            word = match.group(1).lower()
            if word not in HEADER_VALUES:
                bad.append((lineno, match.group(1)))
            elif value is None:
                value, text, line = word, stripped, lineno
            elif word != value:
                contrary.append((lineno, word))
        pos = stop + 1
    return Header(value, text, line, tuple(bad), tuple(contrary), min(pos, len(sql)))


def stray_headers(sql: str, header: Header, pieces: list[Piece], lines: Lines) -> list[int]:
    """Lines of ``-- fastdowntime:`` comments after the leading comments (ignored there)."""
    found = []
    for match in _STRAY_HEADER.finditer(sql, header.body):
        at = match.end() - 1
        if not any(p.start <= at < p.end for p in pieces):
            found.append(lines.at(at))
    return found


def _trim(sql: str, start: int, end: int) -> tuple[int, int]:
    """The offsets of the first and past the last token of ``sql[start:end]``."""
    text = sql[start:end]
    if "--" not in text and "/*" not in text:
        return start + len(text) - len(text.lstrip()), start + len(text.rstrip())
    tokens = [t for t in scan(text) if t.name not in _COMMENTS]
    if not tokens:
        return start, start
    return start + tokens[0].start, start + tokens[-1].end + 1


def split(file: str, sql: str, lines: Lines) -> list[Piece]:
    """Parse ``sql`` and cut it into statements; raise PatchSyntaxError naming ``file`` and line."""
    nul = sql.find("\x00")
    if nul >= 0:  # the C parser would silently stop there; PostgreSQL refuses it
        raise PatchSyntaxError(
            file, lines.at(nul), "NUL character (0x00) in the text", lines.col(nul)
        )
    try:
        tree = json.loads(parse_sql_json(sql))
    except ParseError as error:
        problem = str(error.args[0]) if error.args else str(error)
        location = error.args[1] if len(error.args) > 1 else None  # a character offset
        if not isinstance(location, int):  # "at end of input": the last character with text
            location = max(len(sql.rstrip()) - 1, 0)
        location = min(location, max(len(sql) - 1, 0))
        raise PatchSyntaxError(file, lines.at(location), problem, lines.col(location)) from error
    to_char = CharOffsets(sql)
    pieces = []
    for raw in tree.get("stmts", []):
        begin = to_char(raw.get("stmt_location", 0))
        length = raw.get("stmt_len", 0)
        finish = to_char(raw.get("stmt_location", 0) + length) if length else len(sql)
        start, end = _trim(sql, begin, finish)
        piece = Piece(
            node=raw["stmt"],
            sql=sql[start:end],
            start=start,
            end=end,
            line=lines.at(start),
            end_line=lines.at(max(end - 1, start)),
            terminated=bool(length),
            col=lines.col(start),
        )
        pieces.append(piece)
    return pieces

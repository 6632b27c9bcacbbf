"""The files of ``fastdowntime patches``: arguments to paths, each path read and linted,
and the exit code the reports give.

Every file gets a report whatever the others hold: a file that cannot be
read gets one with an ``unreadable`` problem, one that is not UTF-8 or that
PostgreSQL's parser refuses one with an ``unparseable`` problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from orchestrator.errors import ExitCode
from orchestrator.history.globs import matches
from orchestrator.patches import PatchReport, lint, unreadable
from orchestrator.patches.problem import ERROR, WARNING

FAIL_ON = (ERROR, WARNING)
"""``--fail-on`` values: the least severity that makes ``patches`` exit 3."""


def expand(arguments: Iterable[str], pattern: str) -> list[str]:
    """The files the ``patches`` arguments name, each once, in the order given.

    A file (or a path that does not exist) stands for itself. A directory
    stands for the files under it whose path relative to it matches the glob
    ``pattern`` (``database/schema/patch-*.sql`` finds the patches of the
    repository root ``.``), and the files directly in it whose name matches the
    glob's last part (``patch-*.sql`` finds them in ``database/schema``), in
    path order; directories whose name starts with a dot are skipped.
    """
    found: dict[str, None] = {}
    for argument in arguments:
        if os.path.isdir(argument):
            found.update(dict.fromkeys(_under(argument, pattern)))
        else:
            found[argument] = None
    return list(found)


def _under(directory: str, pattern: str) -> list[str]:
    last = pattern.rsplit("/", 1)[-1]
    found = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory).replace(os.sep, "/")
            if matches(relative, pattern) or (root == directory and matches(name, last)):
                found.append(os.path.normpath(path))
    return sorted(found)


def lint_files(paths: Sequence[str], revision_table: str) -> list[PatchReport]:
    """One report per path, in order; reading fails into an ``unreadable`` problem."""
    reports = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            reports.append(unreadable(path, error.strerror or str(error)))
            continue
        reports.append(lint(path, data, revision_table=revision_table))
    return reports


def exit_code(reports: Sequence[PatchReport], fail_on: str = WARNING) -> int:
    """2 when a file could not be read or parsed; else 3 when a problem is at least as
    severe as ``fail_on`` ("error" or "warning"); else 0."""
    if any(not report.parsed for report in reports):
        return ExitCode.BAD_INPUT
    failing = {ERROR} if fail_on == ERROR else {ERROR, WARNING}
    if any(p.severity in failing for report in reports for p in report.problems):
        return ExitCode.REFUSED
    return ExitCode.OK


def summary(reports: Sequence[PatchReport]) -> str:
    """One line: how many files, errors and warnings, and which files could not be read
    or parsed."""
    errors = sum(p.severity == ERROR for r in reports for p in r.problems)
    warnings = sum(p.severity == WARNING for r in reports for p in r.problems)
    line = (f"{_count(len(reports), 'file')}: {_count(errors, 'error')}, "
            f"{_count(warnings, 'warning')}")
    broken = [r.file for r in reports if not r.parsed]
    if broken:
        line += f"; cannot read or parse {', '.join(broken)}"
    return line


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"

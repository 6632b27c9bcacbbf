"""Patch file names: ``patch-MAJOR-MINOR-POINT.sql`` and their numeric order (SPEC section 2).

Only the basename counts; the directory is whatever the configured glob
found. Order is numeric on (major, minor, point), so ``patch-2200-9-0.sql``
comes before ``patch-2200-10-0.sql``, and ``patch-2200-01-0.sql`` and
``patch-2200-1-0.sql`` are the same patch twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.errors import BadInput

NAME_RE = re.compile(r"patch-(\d+)-(\d+)-(\d+)\.sql")
"""Matched (fullmatch) against the basename of a patch file."""


class PatchNameError(BadInput):
    """A patch file name is wrong: ``paths`` are the files concerned, in the order found."""

    def __init__(self, paths: tuple[str, ...], problem: str) -> None:
        self.paths = paths
        self.problem = problem
        super().__init__(problem)


@dataclass(frozen=True, order=True)
class PatchName:
    """The numbers of one patch file; sorts numerically, ignoring ``filename``."""

    major: int
    minor: int
    point: int
    filename: str = field(compare=False)
    """The basename as written, e.g. ``patch-2211-43-0.sql``."""

    @property
    def key(self) -> tuple[int, int, int]:
        """(major, minor, point): the identity of the patch, also in the revision table."""
        return (self.major, self.minor, self.point)

    def __str__(self) -> str:
        return self.filename


def basename(path: str) -> str:
    """The last component of ``path`` (either slash)."""
    return re.split(r"[/\\]", path)[-1]


def parse_name(path: str) -> PatchName:
    """The :class:`PatchName` of ``path``; PatchNameError naming ``path`` if it does not conform."""
    name = basename(path)
    match = NAME_RE.fullmatch(name)
    if match is None:
        raise PatchNameError((path,), f"{path}: name does not match patch-MAJOR-MINOR-POINT.sql")
    major, minor, point = (int(group) for group in match.groups())
    return PatchName(major, minor, point, name)


def check_unique(names: Iterable[PatchName]) -> None:
    """Raise PatchNameError naming both files when two different files are the same patch.

    The same file name given twice is one file, not a duplicate.
    """
    seen: dict[tuple[int, int, int], PatchName] = {}
    for name in names:
        first = seen.setdefault(name.key, name)
        if first.filename != name.filename:
            numbers = "-".join(str(n) for n in name.key)
            raise PatchNameError(
                (first.filename, name.filename),
                f"{first.filename} and {name.filename} are both patch {numbers}; "
                "rename one of them",
            )

"""Patch files: naming and numeric order, and lock analysis with PostgreSQL's parser (pglast).

Pure: the functions take file names and SQL text; reading the files is the
caller's job. :func:`analyse` classifies one patch as live or cold (SPEC
section 2) and lists its statements with the locks they take.
"""

from orchestrator.patches.analysis import PatchReport, Statement, analyse
from orchestrator.patches.naming import (
    NAME_RE,
    PatchName,
    PatchNameError,
    check_unique,
    parse_name,
)
from orchestrator.patches.source import PatchSyntaxError

__all__ = [
    "NAME_RE",
    "PatchName",
    "PatchNameError",
    "PatchReport",
    "PatchSyntaxError",
    "Statement",
    "analyse",
    "check_unique",
    "parse_name",
]

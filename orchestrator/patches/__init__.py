"""Patch files: naming and numeric order, and lock analysis with PostgreSQL's parser (pglast).

Pure: the functions take file names and SQL text; reading the files is the
caller's job. :func:`lint` classifies one patch as live or cold (SPEC
section 2), lists its statements with the locks they take, and its problems
(:class:`Problem`, with a rule code of :data:`RULES`); :func:`refusing` picks
the problems a plan refuses. :func:`analyse` is :func:`lint` that raises on
a syntax error.
"""

from orchestrator.patches.analysis import (
    PatchReport,
    Statement,
    analyse,
    lint,
    unreadable,
)
from orchestrator.patches.naming import (
    NAME_RE,
    PatchName,
    PatchNameError,
    check_unique,
    parse_name,
)
from orchestrator.patches.problem import Problem
from orchestrator.patches.rules import RULES, Rule, refusing
from orchestrator.patches.source import PatchSyntaxError

__all__ = [
    "NAME_RE",
    "RULES",
    "PatchName",
    "PatchNameError",
    "PatchReport",
    "PatchSyntaxError",
    "Problem",
    "Rule",
    "Statement",
    "analyse",
    "check_unique",
    "lint",
    "parse_name",
    "refusing",
    "unreadable",
]

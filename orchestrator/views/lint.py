"""Patch reports for CI: GitHub Actions workflow commands and a SARIF 2.1.0 log.

Pure views of :class:`~orchestrator.patches.PatchReport` lists; the human
text form lives in :mod:`orchestrator.render`, the JSON form on the objects.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from orchestrator.patches import RULES, PatchReport, Problem

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL = "fastdowntime"


def tool_version() -> str:
    """The installed package's version (``0+unknown`` when it is not installed)."""
    try:
        return version(TOOL)
    except PackageNotFoundError:
        return "0+unknown"


def text_of(problem: Problem) -> str:
    """The message, and the safer form on a second line when there is one."""
    return f"{problem.message}\nInstead: {problem.hint}" if problem.hint else problem.message


# --- GitHub Actions ----------------------------------------------------------------


def _escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def github(reports: Sequence[PatchReport]) -> list[str]:
    """One ``::error`` or ``::warning`` workflow command per problem, in report order.

    ``file``, ``line`` and ``col`` place the annotation (line and col are left
    out for a problem about the whole file), ``title`` is the rule code; data
    and properties are escaped as GitHub's toolkit does.
    """
    commands = []
    for report in reports:
        for problem in report.problems:
            properties = [("file", _path(problem.file))]
            if problem.line is not None:
                properties.append(("line", str(problem.line)))
                if problem.col is not None:
                    properties.append(("col", str(problem.col)))
            properties.append(("title", problem.rule))
            listed = ",".join(f"{key}={_escape_property(value)}" for key, value in properties)
            commands.append(f"::{problem.severity} {listed}::{_escape_data(text_of(problem))}")
    return commands


# --- SARIF ---------------------------------------------------------------------------


def sarif(reports: Sequence[PatchReport], tool_version: str) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run: the rules of the registry and one result per problem.

    Columns count Unicode code points (``columnKind``), as the reports do;
    artifact URIs are the files as named, relative paths kept relative.
    """
    codes = list(RULES)
    rules = [
        {
            "id": rule.code,
            "shortDescription": {"text": rule.title},
            "fullDescription": {"text": rule.why},
            "help": {"text": rule.instead},
            "defaultConfiguration": {"level": rule.severity},
            "properties": {"plan": rule.plan},
        }
        for rule in RULES.values()
    ]
    results = [
        _result(problem, codes.index(problem.rule))
        for report in reports
        for problem in report.problems
    ]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": TOOL, "version": tool_version, "rules": rules}},
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def _result(problem: Problem, index: int) -> dict[str, Any]:
    location: dict[str, Any] = {"artifactLocation": {"uri": _uri(problem.file)}}
    if problem.line is not None:
        region: dict[str, int] = {"startLine": problem.line}
        if problem.col is not None:
            region["startColumn"] = problem.col
        location["region"] = region
    properties = {key: value for key, value in
                  (("lock", problem.lock), ("blocks", problem.blocks)) if value is not None}
    result: dict[str, Any] = {
        "ruleId": problem.rule,
        "ruleIndex": index,
        "level": problem.severity,
        "message": {"text": text_of(problem)},
        "locations": [{"physicalLocation": location}],
    }
    if properties:
        result["properties"] = properties
    return result


def _path(file: str) -> str:
    """``file`` with ``/`` separators and without a leading ``./``."""
    path = file.replace(os.sep, "/") if os.sep != "/" else file
    while path.startswith("./"):
        path = path[2:]
    return path


def _uri(file: str) -> str:
    """A URI reference for ``file``: relative stays relative, absolute becomes ``file://``."""
    path = _path(file)
    if PurePosixPath(path).is_absolute():
        return "file://" + quote(path)
    return quote(path)

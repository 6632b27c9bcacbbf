"""What the commands write: stdout best effort, stderr for what is said beside it, and
with ``--json`` exactly one JSON document on stdout.

Once a deploy has run, output that cannot be written (stdout redirected to a full disk, a
closed pipe) must not turn its exit code into 70: every write here drops what it cannot
write.

With ``--json`` (SPEC section 3) stdout holds one document and nothing else: what a
command shows while it works (the plan, progress, a dry run's steps, a question) goes to
stderr. An error is ``{"error": {"code": N, "message": "...", "key": "..."}}`` with exit
code N; a command that had a result before it failed (preflight's checks, a run's
summary) puts it beside ``error`` (:class:`CommandFailed`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console

from orchestrator.errors import ConfigError, FastdowntimeError


def out(text: str) -> None:
    """``print`` to stdout, best effort."""
    try:
        print(text, flush=True)
    except (OSError, ValueError):
        return


def say(message: str) -> None:
    """A line on stderr, if stderr is still there."""
    try:
        print(message, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        return


def wants_json(args: argparse.Namespace) -> bool:
    """True when the command was given ``--json``."""
    return bool(getattr(args, "json", False))


def emit(document: Any, *, sort_keys: bool = False) -> None:
    """The command's one JSON document, on stdout."""
    out(json.dumps(document, indent=2, default=str, sort_keys=sort_keys))


def shown(args: argparse.Namespace) -> Callable[[str], None]:
    """Where a command's running commentary goes: stdout, or stderr under ``--json``."""
    return say if wants_json(args) else out


def console(args: argparse.Namespace) -> Console:
    """A rich console on stdout, or on stderr under ``--json``."""
    return Console(stderr=wants_json(args))


def ask_on_stderr(question: str) -> str:
    """``input`` with the question on stderr (stdout holds the JSON); end of input is no."""
    try:
        print(question, end="", file=sys.stderr, flush=True)
        return input()
    except EOFError:
        return ""


def error_json(error: FastdowntimeError) -> dict[str, Any]:
    """``{"code", "message", "key"}``: the exit code, the message as said on stderr, and the
    input that is bad (a flag, an argument, a config key; a config file that cannot be
    read at all is named by its path), null when there is none."""
    key = error.key
    if key is None and isinstance(error, ConfigError):
        key = error.path
    return {"code": error.exit_code, "message": str(error), "key": key}


class CommandFailed(Exception):
    """``error``, raised by a command that had a result before it failed: under ``--json``
    the error document carries ``document``'s keys beside ``error``."""

    def __init__(self, error: FastdowntimeError, document: Mapping[str, Any]) -> None:
        super().__init__(str(error))
        self.error = error
        self.document = dict(document)


def error_document(error: FastdowntimeError,
                   document: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``--json`` output of a command that failed with ``error``."""
    return {"error": error_json(error), **(document or {})}


__all__ = ["CommandFailed", "ask_on_stderr", "console", "emit", "error_document",
           "error_json", "out", "say", "shown", "wants_json"]

"""``completion bash|zsh``: the shell completion script, written from the parser."""

from __future__ import annotations

import argparse

from orchestrator.commands.output import emit, out, wants_json
from orchestrator.errors import ExitCode

SHELLS = ("bash", "zsh")


def cmd_completion(args: argparse.Namespace) -> int:
    """``completion bash|zsh``: print the script (``--json``: ``{"shell", "script"}``)."""
    from orchestrator.cliparser import build_parser  # it imports this module
    from orchestrator.views import completion

    render = completion.bash if args.shell == "bash" else completion.zsh
    script = render(build_parser())
    if wants_json(args):
        emit({"shell": args.shell, "script": script})
    else:
        out(script.rstrip("\n"))
    return ExitCode.OK


__all__ = ["SHELLS", "cmd_completion"]

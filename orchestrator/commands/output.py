"""What the commands write: stdout best effort, stderr for what is said beside it.

Once a deploy has run, output that cannot be written (stdout redirected to a full disk, a
closed pipe) must not turn its exit code into 70: every write here drops what it cannot
write.
"""

from __future__ import annotations

import sys


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


__all__ = ["out", "say"]

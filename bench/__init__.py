"""Benchmarks: each ``bench/bench_*.py`` module has ``main() -> None`` printing its ratios."""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

_scratch: Path | None = None


def scratch(prefix: str) -> Path:
    """A new directory for one bench's files (configs, exported timings, run histories),
    removed with every other one when the process exits, so benches leave /tmp as they
    found it; kept (and named) when the bench died of an exception, whose runs' journals
    may be needed to see why."""
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="fdt-bench-"))
        atexit.register(_clean, _scratch)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch))


def _clean(directory: Path) -> None:
    if getattr(sys, "last_value", None) is not None:  # an uncaught exception ended the bench
        print(f"bench: kept {directory} (configs and run journals)", file=sys.stderr)
        return
    shutil.rmtree(directory, ignore_errors=True)  # /tmp's own cleaning takes what is left

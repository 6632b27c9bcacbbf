"""Benchmarks: each ``bench/bench_*.py`` module has ``main() -> None`` printing its ratios."""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

_scratch: tempfile.TemporaryDirectory[str] | None = None


def scratch(prefix: str) -> Path:
    """A new directory for one bench's files (configs, exported timings, run histories),
    removed with every other one when the process exits: benches leave /tmp as they
    found it."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.TemporaryDirectory(prefix="fdt-bench-")
        atexit.register(_scratch.cleanup)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch.name))

"""Instants as the orchestrator writes them: UTC ISO 8601 to the millisecond, ``Z``.

One format for the journal, the run summaries, status and the fetched source's time, so
that they compare as text and read back alike.
"""

from __future__ import annotations

import functools
import time


def iso_ms(t: float) -> str:
    """Epoch seconds as a UTC ISO instant to the millisecond: ``2026-11-25T16:40:26.123Z``."""
    seconds, ms = divmod(round(t * 1000), 1000)
    return f"{_second(seconds)}.{ms:03d}Z"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


__all__ = ["iso_ms"]

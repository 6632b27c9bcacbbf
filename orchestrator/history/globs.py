"""Path globs as git users write them: ``*`` and ``?`` stay within a directory, ``**`` spans them.

``database/schema/patch-*.sql`` matches ``database/schema/patch-2200-01-0.sql``
but not ``database/schema/old/patch-1.sql``; ``database/schema/**`` matches
everything below ``database/schema/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex that fully matches the paths ``pattern`` matches."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def matches(path: str, pattern: str) -> bool:
    """True when ``path`` (relative, ``/``-separated) matches ``pattern``."""
    return compile_glob(pattern).fullmatch(path) is not None


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    """True when ``path`` matches one of ``patterns``."""
    return any(matches(path, p) for p in patterns)

"""haproxy's timeouts as its configuration file sets them, for hold mode's preflight.

In hold mode a request waits at the app for the whole window: haproxy must not
give up on it first. ``timeout server`` bounds the wait for the server's
answer, ``timeout queue`` the wait for a server slot (``timeout connect`` when
unset). A ``backend`` section's own value wins over the last ``defaults``
section before it; a timeout set nowhere is unbounded (None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.errors import BadInput

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TIME = re.compile(r"^(\d+)(us|ms|s|m|h|d)?$")
_SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "peers", "resolvers",
             "userlist", "mailers", "program", "http-errors", "ring", "cache")


def seconds(value: str) -> float:
    """An haproxy time (``30s``, ``1m``, ``500``: milliseconds without a unit) in seconds."""
    match = _TIME.match(value.strip())
    if match is None:
        raise BadInput(f"not an haproxy time: {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2) or "ms"]


@dataclass(frozen=True)
class Timeouts:
    """The timeouts that bound a held request in one backend; None: unbounded."""

    server_s: float | None
    queue_s: float | None
    """``timeout queue``, or ``timeout connect`` where it is unset, as haproxy does."""


def backend_timeouts(text: str, backend: str) -> Timeouts:
    """The timeouts of ``backend`` (a ``backend`` or ``listen`` section) in the
    configuration ``text``; :class:`BadInput` when it has no such section."""
    defaults: dict[str, float] = {}
    found: dict[str, float] | None = None
    section: dict[str, float] | None = None
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in _SECTIONS:
            if words[0] == "defaults":
                defaults = {}
                section = defaults
            elif words[0] in ("backend", "listen") and words[1:2] == [backend]:
                found = dict(defaults)
                section = found
            else:
                section = None
            continue
        if section is not None and words[0] == "timeout" and len(words) >= 3:
            section[words[1]] = seconds(words[2])
    if found is None:
        raise BadInput(f"haproxy's configuration has no backend {backend!r}")
    return Timeouts(found.get("server"), found.get("queue", found.get("connect")))


__all__ = ["Timeouts", "backend_timeouts", "seconds"]

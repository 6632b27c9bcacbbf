"""What haproxy's configuration file says about a held request, for hold mode's preflight.

In hold mode a request waits at the app for the whole window: haproxy must not
give up on it first. ``timeout server`` bounds the wait for the server's
answer, ``timeout queue`` the wait for a server slot (``timeout connect`` when
unset). A ``backend`` section's own value wins over its ``defaults`` section's
(the one it names with ``from``, else the last one before it); a timeout set
nowhere is unbounded (None).

The backend's health checks matter too: a check that asks a page which waits
for the database is held like any request, and after ``fall`` checks that time
out haproxy marks the server down and answers 503 for it. :class:`Checks` says
what the checks ask and how soon they would give a held server up. Only servers
with ``check`` (on their line or a ``default-server`` line before it, and no
``no-check``) are checked at all; another check option (``option tcp-check``...)
means the checks ask no page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from orchestrator.errors import BadInput

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TIME = re.compile(r"^(\d+)(us|ms|s|m|h|d)?$")
_SECTIONS = ("global", "defaults", "frontend", "backend", "listen", "peers", "resolvers",
             "userlist", "mailers", "program", "http-errors", "ring", "cache")
_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS", "DELETE", "TRACE", "PATCH")
CHECK_INTER_S = 2.0
"""haproxy's ``inter`` when no ``server`` or ``default-server`` line sets it."""
CHECK_FALL = 3
"""haproxy's ``fall`` when none is set."""


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


@dataclass(frozen=True)
class Checks:
    """A backend's HTTP health checks: the path they ask and the pace of its least patient
    checked server (the fewest ``fall`` x check seconds)."""

    path: str | None
    """The path ``option httpchk`` (or ``http-check send ... uri``) asks; None: no HTTP
    checks (``option httpchk`` absent or replaced, or no server checked), so a held page
    cannot fail them."""
    timeout_s: float
    """How long one check may take: ``timeout check`` where set, else ``inter``."""
    fall: int
    inter_s: float

    @property
    def down_after_s(self) -> float:
        """About how long a held window may last before haproxy marks a server down: ``fall``
        checks in a row that each time out (a lower bound: the first may have started just
        before the window)."""
        return self.fall * self.timeout_s

    def describe(self) -> str:
        return (f"option httpchk {self.path}, fall {self.fall} x timeout "
                f"{self.timeout_s:g} s")


@dataclass(frozen=True)
class Backend:
    """One backend as the configuration sets it."""

    timeouts: Timeouts
    checks: Checks


def backend_timeouts(text: str, backend: str) -> Timeouts:
    """The timeouts of ``backend`` (a ``backend`` or ``listen`` section) in the
    configuration ``text``; :class:`BadInput` when it has no such section."""
    return read_backend(text, backend).timeouts


def read_backend(text: str, backend: str) -> Backend:
    """``backend`` (a ``backend`` or ``listen`` section) of the configuration ``text``:
    its timeouts and its health checks; :class:`BadInput` when it has no such section.

    A proxy section starts from the ``defaults`` section it names (``from NAME``) or else
    from the last one before it; each ``defaults`` section starts afresh (or from the
    one it names)."""
    named: dict[str, list[list[str]]] = {}
    defaults: list[list[str]] = []
    found: list[list[str]] | None = None
    section: list[list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        words = _words(raw, number)
        if not words:
            continue
        if words[0] not in _SECTIONS:
            if section is not None:
                section.append(words)
            continue
        section = None
        if words[0] in ("defaults", "backend", "listen"):
            name, base = _header(words, named, defaults, number)
            if words[0] == "defaults":
                defaults = section = base
                if name is not None:
                    named[name] = defaults
            elif name == backend:
                found = section = base
    if found is None:
        raise BadInput(f"haproxy's configuration has no backend {backend!r}")
    return _backend(found)


def _header(words: list[str], named: dict[str, list[list[str]]],
            last: list[list[str]], number: int) -> tuple[str | None, list[list[str]]]:
    """A section line's name and the lines it starts from (a copy of its defaults):
    ``backend NAME [from DEFAULTS]`` (else ``last``, the last defaults section),
    ``defaults [NAME] [from DEFAULTS]`` (else nothing: a defaults section starts afresh)."""
    rest = words[1:]
    name: str | None
    origin: list[str] | None
    if words[0] == "defaults" and rest[:1] == ["from"]:
        name, origin = None, rest[1:]
    else:
        name, origin = (rest[0] if rest else None), (rest[2:] if rest[1:2] == ["from"] else None)
    if origin is None:
        return name, [] if words[0] == "defaults" else list(last)
    if not origin or origin[0] not in named:
        wanted = origin[0] if origin else ""
        raise BadInput(f"haproxy's configuration line {number}: {' '.join(words)!r} "
                       f"names no defaults section {wanted!r} before it")
    return name, list(named[origin[0]])


def _words(line: str, number: int) -> list[str]:
    """One configuration line's words as haproxy splits them: blanks separate, ``#``
    starts a comment, quotes ("..." or '...') keep what they enclose in one word, and a
    backslash escapes (outside single quotes) a blank, ``#``, a quote or a backslash,
    stands for ``\\r``, ``\\n``, ``\\t`` or ``\\xHH``, and is kept before anything else."""
    words: list[str] = []
    word: list[str] = []
    quote = ""
    started = False
    at = 0
    while at < len(line):
        char = line[at]
        at += 1
        if char == "\\" and quote != "'" and at < len(line):
            escaped, at = line[at], at + 1
            if escaped == "x" and _HEX.fullmatch(line[at:at + 2]):
                word.append(chr(int(line[at:at + 2], 16)))
                at += 2
            else:
                word.append(_ESCAPES.get(escaped, "\\" + escaped))
            started = True
        elif quote:
            if char == quote:
                quote = ""
            else:
                word.append(char)
        elif char in "\"'":
            quote, started = char, True
        elif char == "#":
            break
        elif char in " \t":
            if started:
                words.append("".join(word))
                word, started = [], False
        else:
            word.append(char)
            started = True
    if quote:
        raise BadInput(f"haproxy's configuration line {number}: unterminated {quote} quote")
    if started:
        words.append("".join(word))
    return words


_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", " ": " ", "#": "#", "\\": "\\", '"': '"',
            "'": "'"}
_HEX = re.compile(r"[0-9A-Fa-f]{2}")
_OTHER_CHECKS = ("tcp-check", "ssl-hello-chk", "smtpchk", "mysql-check", "pgsql-check",
                 "redis-check", "ldap-check", "spop-check", "external-check")
"""``option`` checks that replace ``option httpchk``: they ask no page."""


def _backend(lines: list[list[str]]) -> Backend:
    """The settings of one backend from its lines (its defaults' first, then its own)."""
    timeouts: dict[str, float] = {}
    http = False  # the backend's checks are HTTP checks (option httpchk)
    path = "/"  # what option httpchk asks
    sent: str | None = None  # what http-check send asks, which wins
    default_server: dict[str, str] = {}
    servers: list[dict[str, str]] = []
    for words in lines:
        if words[0] == "timeout" and len(words) >= 3:
            timeouts[words[1]] = seconds(words[2])
        elif words[:2] == ["option", "httpchk"]:
            http, path = True, _check_path(words[2:])
        elif words[0] == "option" and words[1:2] and words[1] in _OTHER_CHECKS:
            http = False
        elif words[:2] == ["http-check", "send"] and "uri" in words[:-1]:
            sent = urlsplit(words[words.index("uri") + 1]).path or "/"
        elif words[0] == "default-server":
            default_server.update(_params(words[1:]))
        elif words[0] in ("server", "server-template"):
            # as haproxy: a server takes the default-server lines written before it
            own = words[3:] if words[0] == "server" else words[4:]
            servers.append({**default_server, **_params(own)})
    checked = [server for server in servers if server.get("check") == "on"]
    check = timeouts.get("check")
    # the least patient checked server: the fewest seconds of failed checks before down
    fall, inter, timeout = min((_pace(server, check) for server in checked or [default_server]),
                               key=lambda pace: pace[0] * pace[2])
    return Backend(Timeouts(timeouts.get("server"), timeouts.get("queue", timeouts.get("connect"))),
                   Checks((sent or path) if http and checked else None, timeout, fall, inter))


def _pace(server: dict[str, str], check: float | None) -> tuple[int, float, float]:
    """A server's ``fall``, ``inter`` and how long one check may take (``timeout check``
    where set, else ``inter``)."""
    inter = seconds(server["inter"]) if "inter" in server else CHECK_INTER_S
    fall = _count(server["fall"]) if "fall" in server else CHECK_FALL
    return fall, inter, inter if check is None else check


def _count(value: str) -> int:
    """An haproxy count (``fall 3``); :class:`BadInput` for anything else (``"${FALL}"``: an
    environment variable haproxy would expand, which this reading cannot)."""
    if not value.isdigit():
        raise BadInput(f"not an haproxy count: {value!r}")
    return int(value)


def _check_path(words: list[str]) -> str:
    """The path of ``option httpchk [METHOD] [URI [VERSION]]`` (``/`` when none is named)."""
    if words and words[0].upper() in _METHODS:
        words = words[1:]
    return (urlsplit(words[0]).path or "/") if words else "/"


def _params(words: list[str]) -> dict[str, str]:
    """The settings we read of a ``server`` or ``default-server`` line: ``inter``, ``fall``
    and ``fastinter`` with their values, and ``check`` ("on" for ``check``, "off" for
    ``no-check``): ``check inter 1s fall 2`` -> ``{"check": "on", "inter": "1s",
    "fall": "2"}``."""
    params = {word: words[i + 1] for i, word in enumerate(words[:-1])
              if word in ("inter", "fall", "fastinter")}
    for word in words:
        if word in ("check", "no-check"):
            params["check"] = "on" if word == "check" else "off"
    return params


__all__ = ["Backend", "Checks", "Timeouts", "backend_timeouts", "read_backend", "seconds"]

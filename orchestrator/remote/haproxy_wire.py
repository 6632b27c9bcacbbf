"""haproxy's admin CLI on the wire: the commands we write, the answers we accept.

Pure: builders, checks and parsers, no I/O (:mod:`orchestrator.remote.haproxy` runs
them over its channel).

Framing, from haproxy's management guide: in interactive mode each command's
output is followed by an empty line and the prompt ``"> "``, and haproxy
ensures no command prints an empty line inside its output. So an answer is
either empty (``"\\n> "``) or text ending at the first ``"\\n\\n> "``. Several
commands go on one line separated by ``;``; haproxy runs them in order, each
answering in turn (it goes on after one fails), so one write and one read
serve a whole swap. A line holds at most :data:`MAX_LINE_BYTES`; longer
batches are split into several lines, written at once (still one round trip).

Every answer is checked: a ``set`` command must answer nothing, a ``show``
must answer the table it asks for. Anything else raises :class:`HaproxyError`
carrying the command and haproxy's text. Names and states are validated before
they reach a line (server and backend names ``[A-Za-z0-9_.:-]+``; states
``ready``, ``drain``, ``maint``), so no value can add a command or an argument.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from orchestrator.errors import BadInput, FailedBeforeCommit

STATES = ("ready", "drain", "maint")
"""The administrative states ``set server <backend>/<server> state`` accepts."""
MAX_LINE_BYTES = 4096
"""Longest ``;``-joined line sent; far below haproxy's ``tune.bufsize`` (16384 by default)."""
MAX_NAME = 128
"""Longest backend or server name accepted."""

_PROMPT = b"\n> "
_END = b"\n\n> "
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_LINE = re.compile(r"[\x20-\x3a\x3c-\x5b\x5d-\x7e]+")
"""One raw command: printable ASCII without ``;`` (a second command) or ``\\`` (an escape)."""
_SESSION_VERBS = ("prompt", "quit")
_QUERY_VERBS = ("show", "get")
_ERROR_STARTS = ("Unknown command", "Permission denied", "No such", "Can't find", "Require",
                 "Invalid", "Missing", "Unable", "Not found", "Unexpected")
_EXPECTED = (
    (re.compile(r"show stat( \S+ -?\d+ -?\d+)?"), re.compile(r"# pxname,")),
    (re.compile(r"show servers state( \S+)?"), re.compile(r"\d+\n# be_id ")),
    (re.compile(r"show info"), re.compile(r"Name: ")),
)
# srv_admin_state bits (haproxy include/haproxy/server-t.h). CMAINT (0x04, "disabled"
# in the config) stays set after the server is made ready, so it is not maintenance.
_ADMF_MAINT = 0x01 | 0x02 | 0x20  # forced, inherited, resolution failure
_ADMF_DRAIN = 0x08 | 0x10  # forced, inherited


class HaproxyError(FailedBeforeCommit):
    """haproxy refused a command or could not be reached.

    ``command`` is the admin line, ``answer`` haproxy's text (or what went
    wrong with the channel), ``host`` the LB host; ``failures`` lists every
    refused ``(command, answer)`` of the round trip (several for a batch).
    """

    def __init__(self, command: str, answer: str, problem: str = "answered", *,
                 host: str | None = None, failures: Sequence[tuple[str, str]] = (),
                 message: str | None = None) -> None:
        self.command = command
        self.answer = answer
        self.problem = problem
        self.host = host
        self.failures = tuple(failures) or ((command, answer),)
        where = f"haproxy on {host}" if host else "haproxy"
        shown = "; ".join(f"{c!r} {problem} {a.strip()!r}" for c, a in self.failures)
        many = f"{len(self.failures)} commands failed: " if len(self.failures) > 1 else ""
        super().__init__(f"{where}: {message or many + shown}")


class NotDrained(HaproxyError):
    """Servers still had sessions when the drain wait ran out; ``busy`` maps them to counts."""

    def __init__(self, busy: Mapping[str, int], timeout_s: float, command: str,
                 host: str | None = None) -> None:
        self.busy = dict(busy)
        self.timeout_s = timeout_s
        listed = ", ".join(f"{name} ({n} sessions)" for name, n in self.busy.items())
        super().__init__(command, listed, "still busy", host=host,
                         message=f"servers still busy after {timeout_s:g} s: {listed}")


@dataclass(frozen=True)
class ServerStat:
    """One server of the backend, from ``show stat`` and ``show servers state``.

    ``status`` is haproxy's own word (``UP``, ``DOWN``, ``MAINT``, ``DRAIN``,
    ``UP 1/2``, ``no check`` ...); ``admin_state`` is the state last set by an
    operator: ``ready``, ``drain`` or ``maint``.
    """

    name: str
    status: str
    admin_state: str
    current_sessions: int
    queued: int
    total_sessions: int
    weight: int
    check_status: str | None

    @property
    def busy(self) -> int:
        """Sessions on the server plus requests queued for it: 0 once drained."""
        return self.current_sessions + self.queued


# --- pure builders: what goes on the wire ------------------------------------------------


def check_name(what: str, value: object) -> str:
    """``value`` if it may name a haproxy backend or server, else :class:`BadInput`."""
    if not isinstance(value, str) or len(value) > MAX_NAME or not _NAME.fullmatch(value):
        raise BadInput(f"haproxy {what} name {value!r} refused: it must be 1 to {MAX_NAME} "
                       "of the characters A-Z a-z 0-9 _ . : -")
    return value


def check_state(state: object) -> str:
    """``state`` if it is one of :data:`STATES`, else :class:`BadInput`."""
    if not isinstance(state, str) or state not in STATES:
        raise BadInput(f"haproxy server state {state!r} refused: use one of "
                       f"{', '.join(STATES)}")
    return state


def check_line(line: object) -> str:
    """``line`` if it is one admin command that keeps the session usable, else BadInput.

    Refused: anything but printable ASCII, ``;`` (a second command), ``\\``
    (an escape), a payload (``<<``), and ``prompt`` or ``quit``.
    """
    if not isinstance(line, str) or not _LINE.fullmatch(line) or not line.strip():
        raise BadInput(f"haproxy command {line!r} refused: one command of printable ASCII, "
                       "without ';' or '\\'")
    if line.split()[0] in _SESSION_VERBS or line.rstrip().endswith("<<"):
        raise BadInput(f"haproxy command {line!r} refused: it would end or change the session")
    return line


def set_state_command(backend: str, server: str, state: str) -> str:
    """``set server <backend>/<server> state <state>``, every part validated."""
    return (f"set server {check_name('backend', backend)}/{check_name('server', server)} "
            f"state {check_state(state)}")


def set_state_commands(backend: str, servers: Iterable[str], state: str) -> list[str]:
    """One ``set server ... state`` per server (duplicates dropped), in order."""
    return [set_state_command(backend, s, state) for s in unique_names("server", servers)]


def swap_commands(backend: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """For ``(old, new)`` pairs: every new server ``ready``, then every old one ``drain``.

    All the ``ready`` commands come first, so capacity never drops while
    haproxy works through the line. A server may appear once only.
    """
    seen: set[str] = set()
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise BadInput(f"haproxy swap {pair!r} refused: give (old server, new server)")
        for name in pair:
            if check_name("server", name) in seen:
                raise BadInput(f"haproxy swap refused: server {name!r} appears twice")
            seen.add(name)
    return ([set_state_command(backend, new, "ready") for _, new in pairs]
            + [set_state_command(backend, old, "drain") for old, _ in pairs])


def stat_commands(backend: str) -> list[str]:
    """The two queries behind :meth:`Haproxy.stats`: counters and administrative states."""
    backend = check_name("backend", backend)
    return [f"show stat {backend} 4 -1", f"show servers state {backend}"]


def pack(commands: Sequence[str], limit: int = MAX_LINE_BYTES) -> list[str]:
    """Join commands with ``;`` into as few lines as fit in ``limit`` bytes each."""
    lines: list[str] = []
    current: list[str] = []
    size = 0
    for command in commands:
        grow = len(command) + (1 if current else 0)
        if current and size + grow > limit:
            lines.append(";".join(current))
            current, size = [], 0
            grow = len(command)
        current.append(command)
        size += grow
    if current:
        lines.append(";".join(current))
    return lines


@dataclass(frozen=True)
class Request:
    """Admin commands for one round trip, as a value: :meth:`lines` is what goes on the wire.

    :class:`~orchestrator.remote.haproxy.Haproxy` sends exactly these lines and
    checks one answer per command; ``--dry-run`` prints them.
    """

    commands: tuple[str, ...]

    def lines(self) -> list[str]:
        """The commands packed into lines (see :func:`pack`)."""
        return pack(self.commands)


def set_state_request(backend: str, servers: Iterable[str], state: str) -> Request:
    """What :meth:`Haproxy.set_state` sends: :func:`set_state_commands` in one round trip."""
    return Request(tuple(set_state_commands(backend, servers, state)))


def swap_request(backend: str, pairs: Sequence[tuple[str, str]]) -> Request:
    """What :meth:`Haproxy.swap` sends: :func:`swap_commands` in one round trip."""
    return Request(tuple(swap_commands(backend, pairs)))


def stats_request(backend: str) -> Request:
    """What :meth:`Haproxy.stats` sends: :func:`stat_commands` in one round trip."""
    return Request(tuple(stat_commands(backend)))


# --- pure checks and parsers: what comes back ---------------------------------------------


def answer_problem(command: str, answer: str) -> str | None:
    """``None`` if ``answer`` is haproxy's answer to ``command`` succeeding, else why not.

    A query we parse must answer its table; another ``show``/``get`` must not
    answer one of haproxy's error phrases; any other command must answer nothing.
    """
    for pattern, expected in _EXPECTED:
        if pattern.fullmatch(command):
            return None if expected.match(answer) else "answered"
    if command.split(" ", 1)[0] in _QUERY_VERBS:
        return "answered" if answer.lstrip().startswith(_ERROR_STARTS) else None
    return None if not answer.strip() else "answered"


def parse_stat(text: str, backend: str) -> dict[str, dict[str, str]]:
    """The server rows of ``backend`` in ``show stat`` CSV, by server name."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("no '# pxname,...' header")
    header = lines[0][2:].split(",")
    rows = {}
    for row in csv.reader(line for line in lines[1:] if line):
        record = dict(zip(header, row, strict=False))
        name = record.get("svname", "")
        if record.get("pxname") == backend and name not in ("FRONTEND", "BACKEND"):
            rows[name] = record
    return rows


def parse_servers_state(text: str, backend: str) -> dict[str, int]:
    """``{server: srv_admin_state bits}`` of ``backend`` in ``show servers state`` output."""
    lines = text.splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit() or not lines[1].startswith("# "):
        raise ValueError("no version line and '# be_id ...' header")
    header = lines[1][2:].split()
    states = {}
    for line in lines[2:]:
        if not line.strip():
            continue
        record = dict(zip(header, line.split(), strict=False))
        if record.get("be_name") == backend:
            states[record["srv_name"]] = int(record["srv_admin_state"])
    return states


def admin_state(bits: int) -> str:
    """``maint``, ``drain`` or ``ready`` from a server's ``srv_admin_state`` bits."""
    if bits & _ADMF_MAINT:
        return "maint"
    if bits & _ADMF_DRAIN:
        return "drain"
    return "ready"


def server_stats(stat_text: str, state_text: str, backend: str) -> dict[str, ServerStat]:
    """Combine ``show stat`` and ``show servers state`` into one ServerStat per server.

    Raises ``ValueError`` when either answer cannot be read.
    """
    rows = parse_stat(stat_text, backend)
    bits = parse_servers_state(state_text, backend)
    stats = {}
    for name, row in rows.items():
        if name not in bits:
            raise ValueError(f"server {name} is in show stat but not in show servers state")
        stats[name] = ServerStat(
            name=name, status=row["status"], admin_state=admin_state(bits[name]),
            current_sessions=_int(row.get("scur")), queued=_int(row.get("qcur")),
            total_sessions=_int(row.get("stot")), weight=_int(row.get("weight")),
            check_status=(row.get("check_status") or "").strip() or None)
    return stats


def take_answer(buffer: bytearray) -> str | None:
    """Remove the first whole answer from ``buffer`` and return it; None if incomplete.

    Raises ``ValueError`` when the bytes cannot be haproxy's interactive framing.
    """
    if buffer[:1] == b"\n":
        if not _PROMPT.startswith(bytes(buffer[:len(_PROMPT)])):
            _garbled(buffer)
        if len(buffer) < len(_PROMPT):
            return None
        del buffer[:len(_PROMPT)]
        return ""
    end = buffer.find(_END)
    if end < 0:
        return None
    answer = bytes(buffer[:end + 1]).decode("utf-8", "replace")
    del buffer[:end + len(_END)]
    return answer


def _garbled(buffer: bytearray) -> NoReturn:
    raise ValueError(f"not haproxy's interactive framing: {bytes(buffer[:80])!r}")


def _int(value: str | None) -> int:
    return int(value) if value else 0


def unique_names(what: str, names: Iterable[str]) -> list[str]:
    """``names``, each checked as a ``what`` name, without repeats, in their order."""
    return list(dict.fromkeys(check_name(what, n) for n in names))

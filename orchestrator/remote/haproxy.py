"""haproxy's admin socket on the LB host, over one persistent SSH channel (SPEC section 4).

One channel runs ``socat stdio unix-connect:<[lb] admin_socket>`` on the LB
host (the one host with role ``lb``) for the whole run. The first line puts
haproxy's CLI in interactive mode (``prompt``) and raises its idle timeout
(``set timeout cli``); after that every command costs one round trip of well
under a millisecond, against tens of milliseconds for an SSH exec each. If
the channel dies (haproxy reloaded, or closed it when idle) it is opened again
and the request sent again, once: every command this module builds is
idempotent (a state set twice is the same state, a ``show`` has no effect).

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

The caller's duty, not this module's: haproxy routes to a server the instant
it goes ``ready`` from ``maint``, before any health check. Check a new
instance's health yourself before :meth:`Haproxy.swap` puts it in rotation.
``drain`` takes a server out of load balancing while its sessions finish;
:meth:`Haproxy.wait_drained` waits for them.
"""

from __future__ import annotations

import csv
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import paramiko
import structlog

from orchestrator.config import Config, HostSettings, LbSettings
from orchestrator.errors import BadInput, ConfigError, FailedBeforeCommit
from orchestrator.remote.commands import check_port
from orchestrator.remote.ssh import Remote, Unreachable

STATES = ("ready", "drain", "maint")
"""The administrative states ``set server <backend>/<server> state`` accepts."""
ANSWER_TIMEOUT_S = 5.0
"""How long one round trip may wait for haproxy's answers."""
CLI_TIMEOUT_S = 3600
"""The idle timeout set on our CLI session (haproxy's default ``stats timeout`` is 10 s)."""
POLL_S = 0.01
"""Pause between two ``show stat`` polls while waiting for a drain."""
MAX_LINE_BYTES = 4096
"""Longest ``;``-joined line sent; far below haproxy's ``tune.bufsize`` (16384 by default)."""
MAX_NAME = 128
"""Longest backend or server name accepted."""

_PROMPT = b"\n> "
_END = b"\n\n> "
_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
_SOCKET_PATH = re.compile(r"[A-Za-z0-9_./@%+=~-]+")
"""A path socat's address syntax cannot misread (no ``:``, ``,``, ``!``, space, quote)."""
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
    return [set_state_command(backend, s, state) for s in _unique("server", servers)]


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


def render_set_state(backend: str, servers: Sequence[str], state: str) -> list[str]:
    """The exact admin lines :meth:`Haproxy.set_state` sends (for ``--dry-run``)."""
    return pack(set_state_commands(backend, servers, state))


def render_swap(backend: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The exact admin lines :meth:`Haproxy.swap` sends (for ``--dry-run``)."""
    return pack(swap_commands(backend, pairs))


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


def _unique(what: str, names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(check_name(what, n) for n in names))


# --- the channel ----------------------------------------------------------------------------


class _ChannelLost(Exception):
    """The admin channel closed or broke under a request."""


class Haproxy:
    """haproxy on the LB host, driven through its admin socket over one SSH channel.

    Round trips are serialized by a lock, so threads may share one object. The
    channel opens on :meth:`open` or on first use; :meth:`close` ends it (the
    ``Remote`` and its connections belong to the caller).
    """

    def __init__(self, remote: Remote, config: Config, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = time.sleep, log: Any = None,
                 answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        where = str(config.path or "<no config file>")
        self.lb: LbSettings = config.need("lb")
        hosts = config.role("lb")
        if len(hosts) != 1:
            raise ConfigError(where, "hosts.lb", f"haproxy control needs exactly one LB host, "
                                                 f"not {len(hosts)}")
        self.host: HostSettings = hosts[0]
        try:
            self.backend = check_name("backend", self.lb.backend)
        except BadInput as exc:
            raise ConfigError(where, "lb.backend", str(exc)) from None
        if not _SOCKET_PATH.fullmatch(self.lb.admin_socket):
            raise ConfigError(where, "lb.admin_socket", "must be a path of A-Z a-z 0-9 "
                              "_ . / @ % + = ~ - only (socat would misread other characters)")
        self._config_path = where
        self.remote = remote
        self.argv = ("socat", "stdio", f"unix-connect:{self.lb.admin_socket}")
        self._clock = clock
        self._sleep = sleep
        self._answer_timeout_s = answer_timeout_s
        self.log = (log or structlog.get_logger("haproxy")).bind(host=self.host.name)
        self._channel: paramiko.Channel | None = None
        self._lock = threading.Lock()
        self.opens = 0
        """How many times the channel was opened (1 unless it died and was reopened)."""

    # --- session ------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True while the channel is up and socat still runs."""
        channel = self._channel
        return channel is not None and not (channel.closed or channel.eof_received
                                            or channel.exit_status_ready())

    def open(self) -> None:
        """Open the channel (if not open) and enter interactive mode; HaproxyError if not."""
        with self._lock:
            self._ensure_open()

    def close(self) -> None:
        """Close the channel; socat sees end of input and exits. Idempotent."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Haproxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_open(self) -> paramiko.Channel:
        if self._channel is not None and self.is_open:
            return self._channel
        self._drop()
        started = time.monotonic()
        opening = " ".join(self.argv)
        try:
            channel = self.remote.open_process(self.host, self.argv)
        except (Unreachable, paramiko.SSHException, OSError, EOFError) as exc:
            raise HaproxyError(opening, str(exc) or type(exc).__name__,
                               "could not start:", host=self.host.name) from None
        self._channel = channel
        setup = ["prompt", f"set timeout cli {CLI_TIMEOUT_S}"]
        try:
            answers = self._exchange(channel, "\n".join(setup) + "\n", len(setup))
        except _ChannelLost as lost:
            self._drop()
            raise HaproxyError(opening, str(lost), "did not reach the admin socket:",
                               host=self.host.name) from None
        refused = [(c, a) for c, a in zip(setup, answers, strict=True) if a.strip()]
        if refused:
            self._drop()
            raise HaproxyError(refused[0][0], refused[0][1], host=self.host.name,
                               failures=refused)
        self.opens += 1
        self.log.debug("haproxy.opened", opens=self.opens,
                       duration_s=round(time.monotonic() - started, 6))
        return channel

    def _drop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # --- round trips --------------------------------------------------------------------

    def command(self, line: str) -> str:
        """Send one command; return its answer (empty for a ``set``), HaproxyError if refused."""
        return self.commands([line])[0]

    def commands(self, lines: Sequence[str]) -> list[str]:
        """Send many commands in one round trip; check every answer; return them in order.

        haproxy runs all of them even when one fails; then HaproxyError lists
        every refused command with its answer.
        """
        lines = [check_line(line) for line in lines]
        answers = self._round_trip(lines)
        self._check(lines, answers)
        return answers

    def _check(self, commands: Sequence[str], answers: Sequence[str]) -> None:
        failures = [(c, a) for c, a in zip(commands, answers, strict=True)
                    if answer_problem(c, a) is not None]
        if failures:
            self.log.error("haproxy.refused", failures=failures)
            raise HaproxyError(failures[0][0], failures[0][1], host=self.host.name,
                               failures=failures)

    def _round_trip(self, lines: Sequence[str]) -> list[str]:
        """Send ``lines`` (packed) in one write and read one answer per line, unchecked."""
        if not lines:
            return []
        payload = "".join(f"{line}\n" for line in pack(lines))
        with self._lock:
            try:
                return self._timed_exchange(payload, len(lines))
            except _ChannelLost as lost:
                self._drop()
                self.log.warning("haproxy.channel_lost", reason=str(lost), reopening=True)
            try:
                return self._timed_exchange(payload, len(lines))
            except _ChannelLost as lost:
                self._drop()
                raise HaproxyError(payload.strip(), str(lost), "lost its channel:",
                                   host=self.host.name) from None

    def _timed_exchange(self, payload: str, count: int) -> list[str]:
        channel = self._ensure_open()
        started = time.monotonic()
        answers = self._exchange(channel, payload, count)
        self.log.debug("haproxy.round_trip", commands=count,
                       duration_s=round(time.monotonic() - started, 6))
        return answers

    def _exchange(self, channel: paramiko.Channel, payload: str, count: int) -> list[str]:
        """Write ``payload``; read ``count`` answers within the answer timeout."""
        deadline = time.monotonic() + self._answer_timeout_s
        try:
            channel.sendall(payload.encode())
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise _ChannelLost(f"cannot write: {exc or type(exc).__name__}") from None
        buffer = bytearray()
        answers: list[str] = []
        while True:
            try:
                while len(answers) < count and (answer := take_answer(buffer)) is not None:
                    answers.append(answer)
            except ValueError as exc:
                self._drop()
                raise HaproxyError(payload.strip(), str(exc), "got", host=self.host.name) \
                    from None
            if len(answers) == count:
                break
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                channel.settimeout(remaining)
                chunk = channel.recv(1 << 16)
            except TimeoutError:
                self._drop()
                raise HaproxyError(payload.strip(), f"{len(answers)} of {count} answers",
                                   f"got no complete answer within "
                                   f"{self._answer_timeout_s:g} s:",
                                   host=self.host.name) from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise _ChannelLost(f"cannot read: {exc or type(exc).__name__}") from None
            if not chunk:
                raise _ChannelLost(self._why_closed(channel))
            buffer += chunk
        if buffer:
            self._drop()
            raise HaproxyError(payload.strip(), bytes(buffer[:200]).decode("utf-8", "replace"),
                               "answered more than asked:", host=self.host.name)
        return answers

    @staticmethod
    def _why_closed(channel: paramiko.Channel) -> str:
        stderr = b""
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(1 << 16)
        code = channel.recv_exit_status() if channel.exit_status_ready() else None
        status = "" if code is None else f" (socat exit {code})"
        text = stderr.decode("utf-8", "replace").strip()
        return f"the admin channel closed{status}" + (f": {text}" if text else "")

    # --- operations ---------------------------------------------------------------------

    def server_name(self, host: HostSettings, port: int) -> str:
        """The haproxy server of ``host``'s instance on ``port``: ``[lb] server_name`` filled."""
        values = {"host": host.name, "port": check_port(port), "address": host.address}
        try:
            name = self.lb.server_name.format_map(values)
        except (KeyError, IndexError, AttributeError, ValueError) as exc:
            raise ConfigError(self._config_path, "lb.server_name",
                              f"cannot fill {self.lb.server_name!r} ({type(exc).__name__}: "
                              f"{exc}); placeholders: {{host}}, {{port}}, {{address}}") from None
        try:
            return check_name("server", name)
        except BadInput as exc:
            raise ConfigError(self._config_path, "lb.server_name",
                              f"gives {name!r} for {host.name} port {port}: {exc}") from None

    def render_set_state(self, servers: Sequence[str], state: str) -> list[str]:
        """The exact admin lines :meth:`set_state` would send."""
        return render_set_state(self.backend, servers, state)

    def render_swap(self, pairs: Sequence[tuple[str, str]]) -> list[str]:
        """The exact admin lines :meth:`swap` would send."""
        return render_swap(self.backend, pairs)

    def stats(self) -> dict[str, ServerStat]:
        """Every server of ``[lb] backend``, by name (one round trip, two queries)."""
        queries = stat_commands(self.backend)
        stat_text, state_text = self.commands(queries)
        try:
            return server_stats(stat_text, state_text, self.backend)
        except (ValueError, KeyError) as exc:
            raise HaproxyError(";".join(queries), f"{stat_text[:200]}{state_text[:200]}",
                               f"answered what cannot be read ({exc}):",
                               host=self.host.name) from None

    def set_state(self, servers: Sequence[str], state: str) -> None:
        """Put every server in ``state`` (``ready``, ``drain``, ``maint``) in one round trip."""
        names = _unique("server", servers)
        started = time.monotonic()
        self.commands(set_state_commands(self.backend, names, state))
        self.log.info("haproxy.set_state", servers=names, state=state,
                      duration_s=round(time.monotonic() - started, 6))

    def swap(self, pairs: Sequence[tuple[str, str]]) -> None:
        """For ``(old, new)`` pairs, in one round trip: every new server ``ready``, then
        every old server ``drain`` (new instances must have passed their health check).

        If a new server is refused, the old server of its pair is put back
        ``ready`` (another round trip), so no pair is left out of rotation;
        then HaproxyError lists every refused command.
        """
        commands = swap_commands(self.backend, pairs)
        started = time.monotonic()
        answers = self._round_trip(commands)
        duration = time.monotonic() - started
        try:
            self._check(commands, answers)
        except HaproxyError as refused:
            failures = list(refused.failures)
            failed = {c for c, _ in failures}
            stranded = [old for old, new in pairs
                        if set_state_command(self.backend, new, "ready") in failed
                        and set_state_command(self.backend, old, "drain") not in failed]
            self.log.error("haproxy.swap_refused", restoring=stranded)
            try:
                self.set_state(stranded, "ready")
            except HaproxyError as again:
                failures.extend(again.failures)
            raise HaproxyError(failures[0][0], failures[0][1], host=self.host.name,
                               failures=failures) from None
        self.log.info("haproxy.swap", pairs=[f"{o}->{n}" for o, n in pairs],
                      duration_s=round(duration, 6))

    def wait_drained(self, servers: Sequence[str], timeout_s: float) -> float:
        """Poll until no server of ``servers`` has a session or a queued request.

        Returns the seconds waited (one poll if already drained). On the deadline
        raises :class:`NotDrained` naming each busy server and its count.
        """
        names = _unique("server", servers)
        query = stat_commands(self.backend)[0]
        start = self._clock()
        deadline = start + timeout_s
        polls = 0
        while True:
            stats = self.stats()
            polls += 1
            missing = [n for n in names if n not in stats]
            if missing:
                raise HaproxyError(query, f"no server {', '.join(missing)} in backend "
                                          f"{self.backend}", host=self.host.name)
            busy = {n: stats[n].busy for n in names if stats[n].busy}
            now = self._clock()
            if not busy:
                waited = now - start
                self.log.info("haproxy.drained", servers=names, waited_s=round(waited, 6),
                              polls=polls)
                return waited
            if now >= deadline:
                self.log.error("haproxy.not_drained", busy=busy, timeout_s=timeout_s)
                raise NotDrained(busy, timeout_s, query, host=self.host.name)
            self._sleep(min(POLL_S, deadline - now))

"""haproxy's admin socket on the LB host, over one persistent SSH channel (SPEC section 4).

One channel runs ``socat stdio unix-connect:<[lb] admin_socket>`` on the LB
host (the one host with role ``lb``) for the whole run. The first line puts
haproxy's CLI in interactive mode (``prompt``) and raises its idle timeout
(``set timeout cli``); after that every command costs one round trip of well
under a millisecond, against tens of milliseconds for an SSH exec each. If
the channel dies (haproxy reloaded, or closed it when idle) it is opened again
and the request sent again, once: every command this module builds is
idempotent (a state set twice is the same state, a ``show`` has no effect).

The wire protocol (framing, checked answers, validated names) is in
:mod:`orchestrator.remote.haproxy_wire`.

The caller's duty, not this module's: haproxy routes to a server the instant
it goes ``ready`` from ``maint``, before any health check. Check a new
instance's health yourself before :meth:`Haproxy.swap` puts it in rotation.
``drain`` takes a server out of load balancing while its sessions finish;
:meth:`Haproxy.wait_drained` waits for them.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paramiko
import structlog

from orchestrator.config import Config, HostSettings, LbSettings
from orchestrator.errors import BadInput, ConfigError
from orchestrator.remote.commands import check_port
from orchestrator.remote.haproxy_wire import (
    HaproxyError,
    NotDrained,
    Request,
    ServerStat,
    answer_problem,
    check_line,
    check_name,
    server_stats,
    set_state_command,
    set_state_request,
    stats_request,
    swap_request,
    take_answer,
    unique_names,
)
from orchestrator.remote.ssh import Remote, Unreachable

ANSWER_TIMEOUT_S = 5.0
"""How long one round trip may wait for haproxy's answers."""
CLI_TIMEOUT_S = 3600
"""The idle timeout set on our CLI session (haproxy's default ``stats timeout`` is 10 s)."""
POLL_S = 0.01
"""Pause between two ``show stat`` polls while waiting for a drain."""
SESSION_SETUP = ("prompt", f"set timeout cli {CLI_TIMEOUT_S}")
"""The lines that open a session (one line each): interactive mode, a long idle timeout."""
_SOCKET_PATH = re.compile(r"[A-Za-z0-9_./@%+=~-]+")
"""A path socat's address syntax cannot misread (no ``:``, ``,``, ``!``, space, quote)."""


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
        setup = list(SESSION_SETUP)
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
        return self.send(Request(tuple(check_line(line) for line in lines)))

    def send(self, request: Request) -> list[str]:
        """Send ``request``'s lines in one round trip; check every answer; return them."""
        answers = self._round_trip(request)
        self._check(request.commands, answers)
        return answers

    def _check(self, commands: Sequence[str], answers: Sequence[str]) -> None:
        failures = [(c, a) for c, a in zip(commands, answers, strict=True)
                    if answer_problem(c, a) is not None]
        if failures:
            self.log.error("haproxy.refused", failures=failures)
            raise HaproxyError(failures[0][0], failures[0][1], host=self.host.name,
                               failures=failures)

    def _round_trip(self, request: Request) -> list[str]:
        """Send ``request``'s lines in one write and read one answer per command, unchecked."""
        count = len(request.commands)
        if not count:
            return []
        payload = "".join(f"{line}\n" for line in request.lines())
        with self._lock:
            try:
                return self._timed_exchange(payload, count)
            except _ChannelLost as lost:
                self._drop()
                self.log.warning("haproxy.channel_lost", reason=str(lost), reopening=True)
            try:
                return self._timed_exchange(payload, count)
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

    def stats(self) -> dict[str, ServerStat]:
        """Every server of ``[lb] backend``, by name (one round trip, two queries)."""
        request = stats_request(self.backend)
        stat_text, state_text = self.send(request)
        try:
            return server_stats(stat_text, state_text, self.backend)
        except (ValueError, KeyError) as exc:
            raise HaproxyError(";".join(request.commands), f"{stat_text[:200]}{state_text[:200]}",
                               f"answered what cannot be read ({exc}):",
                               host=self.host.name) from None

    def set_state(self, servers: Sequence[str], state: str) -> None:
        """Put every server in ``state`` (``ready``, ``drain``, ``maint``) in one round trip."""
        names = unique_names("server", servers)
        started = time.monotonic()
        self.send(set_state_request(self.backend, names, state))
        self.log.info("haproxy.set_state", servers=names, state=state,
                      duration_s=round(time.monotonic() - started, 6))

    def swap(self, pairs: Sequence[tuple[str, str]]) -> None:
        """For ``(old, new)`` pairs, in one round trip: every new server ``ready``, then
        every old server ``drain`` (new instances must have passed their health check).

        If a new server is refused, the old server of its pair is put back
        ``ready`` (another round trip), so no pair is left out of rotation;
        then HaproxyError lists every refused command.
        """
        request = swap_request(self.backend, pairs)
        started = time.monotonic()
        answers = self._round_trip(request)
        duration = time.monotonic() - started
        try:
            self._check(request.commands, answers)
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
        names = unique_names("server", servers)
        query = stats_request(self.backend).commands[0]
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

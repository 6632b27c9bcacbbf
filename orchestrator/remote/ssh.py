"""SSH to the inventory: strict host keys, warm connections, commands with real timeouts.

Where each host is and how it is reached (our config, then the operator's
ssh_config through Fabric's Connection, jump hosts) is
:mod:`orchestrator.remote.endpoints`. Fabric is kept to connecting: its
``run`` costs Invoke runner threads and milliseconds per command, so commands
go on channels of the paramiko transport directly:

- host keys come only from ``[ssh] known_hosts``, for jump hosts too; an
  unknown or changed key is refused (:class:`HostKeyRejected`, naming host
  and fingerprint);
- sockets get TCP_NODELAY (paramiko leaves Nagle on: ~40 ms per command);
- AES-GCM is preferred where the server offers it: paramiko checks a
  non-AEAD MAC byte by byte in Python, a quarter of its CPU per command;
- connecting is retried (tenacity) within the connect timeout; a command
  that changes state is never retried;
- one connection per host, reused for the whole run, and one per jump host,
  shared by the hosts behind it; commands run on new channels of the host's
  connection, in parallel across hosts up to ``[ssh] parallelism``;
- every command runs under coreutils ``timeout`` on the host, so a command
  that hangs is killed there, not merely abandoned.
"""

from __future__ import annotations

import select
import shlex
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paramiko
import structlog
import tenacity

from orchestrator.config import Config, HostSettings, SshSettings, check_private_file
from orchestrator.errors import BadInput
from orchestrator.remote.commands import Command
from orchestrator.remote.endpoints import (
    Endpoints,
    HopFailed,
    StrictConnection,
    load_ssh_config,
)
from orchestrator.remote.results import (
    FAILED,
    OK,
    TIMEOUT,
    UNREACHABLE,
    GroupResult,
    HostResult,
    tail,
)

SEND_CHUNK = 1 << 15
"""Stdin goes out in slices of this size: paramiko's ``sendall`` re-slices the whole
remainder after every packet, which copies a 1 MB archive about 30 times."""
KILL_AFTER_S = 2
"""After the timeout's TERM, the host's ``timeout`` sends KILL this much later."""
TIMEOUT_EXIT = 124


class Unreachable(Exception):
    """A host could not be connected to (after retries, within the connect timeout)."""


def _hop_key(conn: StrictConnection) -> Hashable:
    """Which jump host connections are the same one: endpoint, login, and the path there."""
    via = _hop_key(conn.gateway) if isinstance(conn.gateway, StrictConnection) else None
    keys = tuple(conn.connect_kwargs.get("key_filename") or ())
    return (conn.user, conn.host, conn.port, keys, conn.connect_kwargs.get("allow_agent"), via)


class Remote:
    """The hosts of one config, reached over SSH for the length of a run."""

    def __init__(self, config: Config, *, log: Any = None) -> None:
        self.config = config
        self.ssh: SshSettings = config.need("ssh")
        self.log = log or structlog.get_logger("remote")
        where = str(config.path)
        self._conns: dict[str, StrictConnection] = {}
        self._jumps: dict[Hashable, StrictConnection] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.ssh.parallelism,
                                        thread_name_prefix="ssh")
        check_private_file(self.ssh.known_hosts, "ssh.known_hosts", where)
        for key, path in [("ssh.key", self.ssh.key), *(
                (f"hosts.{h.role}.{h.name}.key", h.key) for h in config.hosts)]:
            if path:
                check_private_file(path, key, where)
        try:
            paramiko.HostKeys().load(self.ssh.known_hosts)
        except (FileNotFoundError, OSError) as exc:
            raise BadInput(f"[ssh] known_hosts {self.ssh.known_hosts}: {exc}") from None
        self.endpoints = Endpoints(self.ssh, load_ssh_config(self.ssh, where))
        for host in config.hosts:  # a malformed ProxyJump is named now, not mid-run
            self.endpoints.jump_spec(host)

    # --- connections ------------------------------------------------------------------

    def _lock(self, key: Hashable) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def connection(self, host: HostSettings) -> paramiko.SSHClient:
        """The host's connection: opened on first use (with retries), then reused."""
        with self._lock(("host", host.name)):
            conn = self._conns.get(host.name)
            if conn is not None and conn.is_connected:
                return conn.client
            conn = self._connect(host)
            self._conns[host.name] = conn
            return conn.client

    def _connect(self, host: HostSettings) -> StrictConnection:
        deadline = time.monotonic() + self.ssh.connect_timeout_s
        first = self.endpoints.for_host(host)
        where = first.describe()

        @tenacity.retry(
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, HopFailed)
                and not isinstance(exc.cause, paramiko.AuthenticationException)),
            stop=tenacity.stop_after_attempt(max(1, self.ssh.connect_retries))
            | tenacity.stop_before_delay(self.ssh.connect_timeout_s),
            wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
            reraise=True)
        def attempt() -> StrictConnection:
            conn = self.endpoints.for_host(host)
            if isinstance(conn.gateway, StrictConnection):
                conn.gateway = self._jump(conn.gateway, deadline)
            conn.open_within(max(0.05, deadline - time.monotonic()))
            return conn

        started = time.monotonic()
        try:
            conn = attempt()
        except HopFailed as exc:
            hop = "" if exc.where == where else f" on the jump host {exc.where}"
            if isinstance(exc.cause, paramiko.AuthenticationException):
                raise Unreachable(f"{host.name} ({where}): login as {exc.user}{hop} refused: "
                                  f"{exc.reason}") from None
            raise Unreachable(f"{host.name} ({where}): cannot connect within "
                              f"{self.ssh.connect_timeout_s:g} s{hop}: {exc.reason}") from None
        self.log.debug("ssh.connected", host=host.name, via=where,
                       duration_s=round(time.monotonic() - started, 6))
        return conn

    def _jump(self, fresh: StrictConnection, deadline: float) -> StrictConnection:
        """The open connection to a jump host: the one already open for another host, or
        ``fresh``, opened now (its own jump host first)."""
        key = _hop_key(fresh)
        with self._lock(("jump", key)):
            conn = self._jumps.get(key)
            if conn is not None and conn.is_connected:
                return conn
            if isinstance(fresh.gateway, StrictConnection):
                fresh.gateway = self._jump(fresh.gateway, deadline)
            fresh.open_within(max(0.05, deadline - time.monotonic()))
            self._jumps[key] = fresh
            self.log.debug("ssh.jump_connected", jump=fresh.describe())
            return fresh

    def connect_all(self, hosts: Sequence[HostSettings]) -> GroupResult:
        """Open every host's connection in parallel (warming up before time matters)."""
        def one(host: HostSettings) -> HostResult:
            started = time.monotonic()
            try:
                self.connection(host)
            except Unreachable as exc:
                return HostResult(host.name, UNREACHABLE, None, "", str(exc),
                                  time.monotonic() - started, "connect")
            return HostResult(host.name, OK, 0, "", "", time.monotonic() - started, "connect")
        return GroupResult.of(self._pool.map(one, hosts))

    # --- commands -----------------------------------------------------------------------

    def wrapped(self, command: Command, timeout_s: float | None = None) -> str:
        """The exact text run on the host: ``command`` under coreutils ``timeout``."""
        limit = self.ssh.command_timeout_s if timeout_s is None else timeout_s
        return shlex.join(["timeout", "-k", str(KILL_AFTER_S), f"{limit:g}",
                           *command.argv])

    def run(self, host: HostSettings, command: Command, *, timeout_s: float | None = None,
            stdin: bytes | None = None) -> HostResult:
        """Run ``command`` on ``host``; the outcome is a value, never an exception."""
        limit = self.ssh.command_timeout_s if timeout_s is None else timeout_s
        text = self.wrapped(command, limit)
        started = time.monotonic()
        try:
            client = self.connection(host)
        except Unreachable as exc:
            return HostResult(host.name, UNREACHABLE, None, "", str(exc), 0.0, text)
        try:
            code, out, err = self._exec(client, text, stdin, started + limit + KILL_AFTER_S + 1)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return HostResult(host.name, UNREACHABLE, None, "", f"connection lost: {exc}",
                              time.monotonic() - started, text)
        duration = time.monotonic() - started
        stderr = err.decode("utf-8", "replace")
        if code is None or code == TIMEOUT_EXIT:
            status = TIMEOUT
            stderr = f"{stderr}\nkilled after its timeout of {limit:g} s".strip()
        else:
            status = OK if code == 0 else FAILED
        result = HostResult(host.name, status, code, out.decode("utf-8", "replace"),
                            tail(stderr), duration, text)
        self.log.debug("ssh.command", host=host.name, status=status, exit_code=code,
                       duration_s=round(duration, 6), command=command.render())
        return result

    def _exec(self, client: paramiko.SSHClient, text: str, stdin: bytes | None,
              deadline: float) -> tuple[int | None, bytes, bytes]:
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=self.ssh.connect_timeout_s)
        try:
            channel.exec_command(text)
            if stdin:
                for start in range(0, len(stdin), SEND_CHUNK):
                    channel.sendall(stdin[start:start + SEND_CHUNK])
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                while channel.recv_ready():
                    out += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(1 << 16)
                if channel.exit_status_ready() and not channel.recv_ready() \
                        and not channel.recv_stderr_ready():
                    if channel.eof_received or channel.closed:
                        break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None, bytes(out), bytes(err)
                select.select([channel], [], [], min(remaining, 0.5))
            return channel.recv_exit_status(), bytes(out), bytes(err)
        finally:
            channel.close()

    def run_all(self, hosts: Sequence[HostSettings],
                command: Command | Callable[[HostSettings], Command], *,
                timeout_s: float | None = None,
                stdin: bytes | Callable[[HostSettings], bytes] | None = None) -> GroupResult:
        """Run on every host in parallel (at most ``[ssh] parallelism`` at once); keep all."""
        def one(host: HostSettings) -> HostResult:
            cmd = command(host) if callable(command) else command
            data = stdin(host) if callable(stdin) else stdin
            return self.run(host, cmd, timeout_s=timeout_s, stdin=data)
        return GroupResult.of(self._pool.map(one, hosts))

    def open_process(self, host: HostSettings, argv: Sequence[str]) -> paramiko.Channel:
        """A channel running ``argv`` (no timeout) with stdin and stdout open: for
        long-lived helpers such as ``socat`` to haproxy's admin socket."""
        transport = self.connection(host).get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=self.ssh.connect_timeout_s)
        channel.exec_command(shlex.join(argv))
        return channel

    def close(self) -> None:
        """Close every connection: the hosts', then the jump hosts' they went through."""
        for conn in self._conns.values():
            conn.client.close()
        for jump in reversed(list(self._jumps.values())):  # the first hop was opened first
            jump.client.close()
        self._conns.clear()
        self._jumps.clear()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""SSH to the inventory: strict host keys, warm connections, commands with real timeouts.

paramiko directly (not Fabric's Connection, whose Invoke runner costs threads
and milliseconds per command, and whose default policy trusts unknown keys):

- host keys come only from ``[ssh] known_hosts``; an unknown or changed key
  is refused (:class:`HostKeyRejected`, naming host and fingerprint);
- sockets get TCP_NODELAY (paramiko leaves Nagle on: ~40 ms per command);
- AES-GCM is preferred where the server offers it: paramiko checks a
  non-AEAD MAC byte by byte in Python, a quarter of its CPU per command;
- connecting is retried (tenacity) within the connect timeout; a command
  that changes state is never retried;
- one connection per host, reused for the whole run; commands run on new
  channels of it, in parallel across hosts up to ``[ssh] parallelism``;
- every command runs under coreutils ``timeout`` on the host, so a command
  that hangs is killed there, not merely abandoned.
"""

from __future__ import annotations

import base64
import hashlib
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paramiko
import structlog
import tenacity

from orchestrator.config import Config, HostSettings, SshSettings, check_private_file
from orchestrator.errors import BadInput
from orchestrator.remote.commands import Command
from orchestrator.remote.results import (
    FAILED,
    OK,
    TIMEOUT,
    UNREACHABLE,
    GroupResult,
    HostKeyRejected,
    HostResult,
    tail,
)

KEEPALIVE_S = 5
"""SSH keepalive interval: a host that stops answering is found by the command deadline and
the transport, not after the kernel's TCP timeouts."""
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Ciphers put first in what we offer, when paramiko knows them (see the module text)."""
SEND_CHUNK = 1 << 15
"""Stdin goes out in slices of this size: paramiko's ``sendall`` re-slices the whole
remainder after every packet, which copies a 1 MB archive about 30 times."""
KILL_AFTER_S = 2
"""After the timeout's TERM, the host's ``timeout`` sends KILL this much later."""
TIMEOUT_EXIT = 124


class Unreachable(Exception):
    """A host could not be connected to (after retries, within the connect timeout)."""


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: ``SHA256:...``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _Reject(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that says which host and which key it refused."""

    def __init__(self, host: HostSettings) -> None:
        self.host = host

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise HostKeyRejected(self.host.name, f"{self.host.address}:{self.host.port}",
                              fingerprint(key), "is not in known_hosts")


def aead_first(sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
    """A paramiko Transport offering AES-GCM first, then its other ciphers in their order.

    Nothing is removed from the offer: a server without GCM negotiates as before.
    """
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = (tuple(c for c in AEAD_CIPHERS if c in offered)
                       + tuple(c for c in offered if c not in AEAD_CIPHERS))
    return transport


class Remote:
    """The hosts of one config, reached over SSH for the length of a run."""

    def __init__(self, config: Config, *, log: Any = None) -> None:
        self.config = config
        self.ssh: SshSettings = config.need("ssh")
        self.log = log or structlog.get_logger("remote")
        self._clients: dict[str, paramiko.SSHClient] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.ssh.parallelism,
                                        thread_name_prefix="ssh")
        self._host_keys = paramiko.HostKeys()
        check_private_file(self.ssh.known_hosts, "ssh.known_hosts", str(config.path))
        if self.ssh.key:
            check_private_file(self.ssh.key, "ssh.key", str(config.path))
        try:
            self._host_keys.load(self.ssh.known_hosts)
        except (FileNotFoundError, OSError) as exc:
            raise BadInput(f"[ssh] known_hosts {self.ssh.known_hosts}: {exc}") from None

    # --- connections ------------------------------------------------------------------

    def connection(self, host: HostSettings) -> paramiko.SSHClient:
        """The host's connection: opened on first use (with retries), then reused."""
        with self._guard:
            lock = self._locks.setdefault(host.name, threading.Lock())
        with lock:
            client = self._clients.get(host.name)
            transport = client.get_transport() if client else None
            if client is not None and transport is not None and transport.is_active():
                return client
            client = self._connect(host)
            self._clients[host.name] = client
            return client

    def _connect(self, host: HostSettings) -> paramiko.SSHClient:
        deadline = time.monotonic() + self.ssh.connect_timeout_s

        @tenacity.retry(
            retry=tenacity.retry_if_exception_type((OSError, EOFError, paramiko.SSHException))
            & tenacity.retry_if_not_exception_type((HostKeyRejected,
                                                    paramiko.BadHostKeyException,
                                                    paramiko.AuthenticationException)),
            stop=tenacity.stop_after_attempt(max(1, self.ssh.connect_retries))
            | tenacity.stop_before_delay(self.ssh.connect_timeout_s),
            wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
            reraise=True)
        def attempt() -> paramiko.SSHClient:
            remaining = max(0.05, deadline - time.monotonic())
            sock = socket.create_connection((host.address, host.port), timeout=remaining)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = paramiko.SSHClient()
            client.load_host_keys(self.ssh.known_hosts)
            client.set_missing_host_key_policy(_Reject(host))
            try:
                client.connect(host.address, port=host.port, username=self.ssh.user,
                               key_filename=self.ssh.key, look_for_keys=self.ssh.key is None,
                               allow_agent=self.ssh.key is None, sock=sock, timeout=remaining,
                               banner_timeout=remaining, auth_timeout=remaining,
                               transport_factory=aead_first)
            except BaseException:
                client.close()
                sock.close()
                raise
            transport = client.get_transport()
            if transport is not None:  # a lost host is noticed, not waited on for ever
                transport.set_keepalive(KEEPALIVE_S)
            return client

        started = time.monotonic()
        try:
            client = attempt()
        except paramiko.BadHostKeyException as exc:
            raise HostKeyRejected(host.name, f"{host.address}:{host.port}",
                                  fingerprint(exc.key),
                                  f"presented a key that differs from known_hosts "
                                  f"(expected {fingerprint(exc.expected_key)})") from None
        except paramiko.AuthenticationException as exc:
            raise Unreachable(f"{host.name} ({host.address}:{host.port}): login as "
                              f"{self.ssh.user} refused: {exc}") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Unreachable(f"{host.name} ({host.address}:{host.port}): cannot connect "
                              f"within {self.ssh.connect_timeout_s:g} s: "
                              f"{exc or type(exc).__name__}") from None
        self.log.debug("ssh.connected", host=host.name,
                       duration_s=round(time.monotonic() - started, 6))
        return client

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
        """Close every connection."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._pool.shutdown(wait=False)

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Where each SSH connection goes, as whom and through which jump hosts; and how it opens.

Fabric's :class:`~fabric.Connection` reads the operator's OpenSSH client config
(``[ssh] ssh_config``, default ``~/.ssh/config``): ``Host`` aliases and their
``HostName``, ``User``, ``Port``, ``IdentityFile``, ``ProxyJump`` and
``ProxyCommand``, with the files its ``Include`` lines name read in their place
(:func:`with_includes`: paramiko alone skips them). What our own config says wins;
ssh_config fills in what it leaves out, then the defaults:

==========  ===============================================================================
address     ssh_config's ``HostName`` for the host's ``address``, else ``address``
user        host ``user``, ``[ssh] user``, ssh_config ``User``, ``deploy``
port        host ``port``, ``[ssh] port``, ssh_config ``Port``, 22
key         host ``key``, ``[ssh] key``, ssh_config ``IdentityFile`` (and the agent, unless
            ``IdentitiesOnly yes``), else the agent and ``~/.ssh/id_*``
jump        host ``proxy_jump``, ``[ssh] proxy_jump``, ssh_config ``ProxyJump``, ssh_config
            ``ProxyCommand``, none (``""`` or ``none`` at any level: direct)
==========  ===============================================================================

A jump host (``[user@]host[:port]``, several separated by commas, the first
reached first) is outside the inventory: what its own text says wins, then its
ssh_config entry, then ``[ssh] user`` and ``[ssh] key``, then the defaults
(port 22). Its own ssh_config ``ProxyJump`` is not followed: write the chain in
one ProxyJump. A host that is its own jump host (``Host *`` with a ProxyJump)
is reached directly.

Nothing in ssh_config weakens host keys: ``StrictHostKeyChecking``,
``UserKnownHostsFile`` and the like are ignored; every hop, jump hosts
included, is checked against ``[ssh] known_hosts`` alone and an unknown or
changed key is refused (never added). A ``ProxyCommand`` is the one exception,
and only for what it opens itself: it is the operator's own transport (its
``ssh -W`` checks the hops it reaches with the operator's settings), while the
host at its end is checked against ``[ssh] known_hosts`` like any, so nothing
on the way can stand in for it. Every hop that opens a TCP connection
sets TCP_NODELAY on it and offers AES-GCM first; a hop behind a jump host runs
its SSH transport over a ``direct-tcpip`` channel of the jump host's, and the
jump host's socket acknowledges at once (:class:`QuickAckSocket`).
"""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import re
import shlex
import socket
from typing import Any

import fabric
import paramiko
from fabric.connection import derive_shorthand

from orchestrator.config import HostSettings, SshSettings, check_private_file, jump_problem
from orchestrator.errors import BadInput
from orchestrator.remote.results import HostKeyRejected

DEFAULT_USER = "deploy"
"""Login user when neither our config nor ssh_config names one."""
DEFAULT_SSH_CONFIG = "~/.ssh/config"
KEEPALIVE_S = 5
"""SSH keepalive interval: a host that stops answering is found by the command deadline and
the transport, not after the kernel's TCP timeouts."""
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Ciphers put first in what we offer, when paramiko knows them: paramiko checks a non-AEAD
MAC byte by byte in Python, a quarter of its CPU per command."""
_DIRECT = ("", "none")


def fingerprint(key: paramiko.PKey) -> str:
    """The key's fingerprint as OpenSSH prints it: ``SHA256:...``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def aead_first(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """A paramiko Transport offering AES-GCM first, then its other ciphers in their order.

    Nothing is removed from the offer: a server without GCM negotiates as before.
    """
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = (tuple(c for c in AEAD_CIPHERS if c in offered)
                       + tuple(c for c in offered if c not in AEAD_CIPHERS))
    return transport


class QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it receives at once (TCP_QUICKACK after every
    read). sshd sets TCP_NODELAY only on interactive connections: on a jump host's, which
    carries no session, its second small write waits for our ACK, and Linux delays that ACK
    up to 40 ms (measured: a third of the commands through a jump host took 40-60 ms)."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


class Reject(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that says which host (or jump host) and which key it refused."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise HostKeyRejected(self.name, self.address, fingerprint(key), "is not in known_hosts")


class HopFailed(Exception):
    """Connecting one hop failed: ``where`` names it, ``cause`` is paramiko's or the OS's
    error (an AuthenticationException is not worth retrying, the others may be)."""

    def __init__(self, where: str, user: str, cause: BaseException) -> None:
        self.where = where
        self.user = user
        self.cause = cause
        self.reason = str(cause) or type(cause).__name__
        super().__init__(f"{where}: {self.reason}")


class StrictConnection(fabric.Connection):
    """Fabric's Connection, opened our way (see the module text): host keys only from our
    known_hosts with :class:`Reject`, our own TCP socket with TCP_NODELAY, AES-GCM first,
    every step within the time given, and a jump host that must already be open.

    Build it with :meth:`Endpoints.for_host` or :meth:`Endpoints.jump`, never directly:
    they replace Fabric's trust-on-first-use policy before anything connects.
    """

    label = ""
    """The host's name, or which jump host for which host: what errors name. (Class
    attributes, so that Fabric's attribute proxy keeps them on the object, not in its
    config.)"""
    jump_host = False
    """A jump host: its socket acknowledges at once (:class:`QuickAckSocket`). Hosts keep a
    plain socket: their commands' latency is what it was."""

    def describe(self) -> str:
        """``user@host:port``, and ``via`` each jump host (or the ProxyCommand)."""
        text = f"{self.user}@{self.host}:{self.port}"
        if isinstance(self.gateway, StrictConnection):
            return f"{text} via {self.gateway.describe()}"
        if self.gateway:
            return f"{text} via ProxyCommand {self.gateway!r}"
        return text

    def open_within(self, timeout_s: float) -> None:
        """Log in within ``timeout_s`` (a jump host must be open already). Raises
        HostKeyRejected (never worth retrying) or :class:`HopFailed`."""
        sock: socket.socket | None = None
        self.connect_timeout = None  # Fabric rounds it to whole seconds: we give our own
        self.connect_kwargs.update(timeout=timeout_s, banner_timeout=timeout_s,
                                   auth_timeout=timeout_s,
                                   transport_factory=aead_first)
        try:
            if not self.gateway:
                sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.jump_host and hasattr(socket, "TCP_QUICKACK"):  # Linux
                    sock = QuickAckSocket(sock.family, sock.type, sock.proto,
                                          fileno=sock.detach())
                    sock.settimeout(timeout_s)
                self.connect_kwargs["sock"] = sock
            self.open()
        except HostKeyRejected:
            self._discard(sock)
            raise
        except paramiko.BadHostKeyException as exc:
            self._discard(sock)
            raise HostKeyRejected(self.label, f"{self.host}:{self.port}",
                                  fingerprint(exc.key),
                                  f"presented a key that differs from known_hosts "
                                  f"(expected {fingerprint(exc.expected_key)})") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._discard(sock)
            raise HopFailed(self.describe(), self.user, exc) from None
        except BaseException:
            self._discard(sock)
            raise
        finally:
            self.connect_kwargs.pop("sock", None)
        self.transport.set_keepalive(KEEPALIVE_S)

    def open_gateway(self) -> Any:
        """A ``direct-tcpip`` channel of the (open) jump host to this host, opened within
        the connect timeout (Fabric's waits up to an hour); a ProxyCommand as Fabric runs it."""
        jump = self.gateway
        if not isinstance(jump, StrictConnection):
            return super().open_gateway()
        if not jump.is_connected:
            raise paramiko.SSHException(f"the jump host {jump.describe()} is not connected")
        try:
            return jump.transport.open_channel(
                "direct-tcpip", dest_addr=(self.host, int(self.port)), src_addr=("", 0),
                timeout=self.connect_kwargs["timeout"])
        except paramiko.ChannelException as exc:
            raise paramiko.SSHException(f"the jump host {jump.describe()} could not reach "
                                        f"{self.host}:{self.port}: {exc.text}") from None

    def _discard(self, sock: socket.socket | None) -> None:
        self.client.close()
        if sock is not None:
            sock.close()


def load_ssh_config(ssh: SshSettings, where: str) -> str:
    """The text of the OpenSSH client config ``[ssh] ssh_config`` names: by default
    ``~/.ssh/config`` (none when it does not exist); ``""``: none. Its ``Include`` lines are
    replaced by the files they name (:func:`with_includes`). BadInput when it cannot be
    read or parsed; ConfigError when others may write it or a file it includes (whoever
    can, picks our jump hosts)."""
    path = DEFAULT_SSH_CONFIG if ssh.ssh_config is None else ssh.ssh_config
    if not path:
        return ""
    path = os.path.expanduser(path)
    try:
        text = _read_private(path, where)
    except FileNotFoundError:
        if ssh.ssh_config is None:
            return ""
        raise BadInput(f"[ssh] ssh_config {path}: no such file") from None
    # a config named with ssh -F is a user's: relative includes are under ~/.ssh
    text = with_includes(text, path, os.path.expanduser("~/.ssh"), where)
    try:
        paramiko.SSHConfig.from_text(text)
    except paramiko.ConfigParseError as exc:
        raise BadInput(f"[ssh] ssh_config {path}: {exc}") from None
    return text


MAX_INCLUDE_DEPTH = 16
"""How deep ``Include`` may nest, as OpenSSH's ``READCONF_MAX_DEPTH`` (deeper: a loop)."""
_KEYWORD = re.compile(r"^\s*(?P<key>[A-Za-z]+)(?:\s*=\s*|\s+)(?P<value>.*?)\s*$")


def with_includes(text: str, path: str, relative_to: str, where: str, depth: int = 0) -> str:
    """``text`` (the ssh_config at ``path``) with each ``Include`` line replaced by the files
    it names, as OpenSSH reads them (paramiko ignores ``Include``): several paths and glob
    patterns per line, each pattern's matches in sorted order, ``~`` expanded, a relative
    path taken under ``relative_to`` (``~/.ssh``), a pattern matching nothing skipped.
    Each included file starts, and what follows it resumes, where the ``Include`` stood:
    for every host (``Host *`` is written after each file, as OpenSSH restores its scope
    after each).

    BadInput for an ``Include`` inside a ``Host`` or ``Match`` block that does not apply to
    every host (OpenSSH would read it only for the hosts matched: written inline it would
    apply to others), for nesting deeper than :data:`MAX_INCLUDE_DEPTH`, and for a file it
    cannot read; ConfigError for one others may write."""
    lines: list[str] = []
    conditional: str | None = None  # the Host/Match line of a block for some hosts only
    for number, line in enumerate(text.splitlines(), 1):
        match = _KEYWORD.match(line)
        key = match["key"].lower() if match is not None else ""
        if match is None or key != "include":
            if match is not None and key in ("host", "match"):
                conditional = None if _every_host(key, match["value"]) else line.strip()
            lines.append(line)
            continue
        at = f"[ssh] ssh_config {path} line {number}"
        if conditional is not None:
            raise BadInput(f"{at}: Include inside {conditional!r} is not supported (OpenSSH "
                           "reads it for those hosts only; read here it would apply to every "
                           "host): move it to the top of the file or under Host *")
        if depth >= MAX_INCLUDE_DEPTH:
            raise BadInput(f"{at}: Include nested more than {MAX_INCLUDE_DEPTH} deep (does a "
                           "file include itself?)")
        try:
            patterns = shlex.split(match["value"])
        except ValueError as exc:
            raise BadInput(f"{at}: Include {match['value']!r}: {exc}") from None
        for pattern in patterns:
            pattern = os.path.join(relative_to, os.path.expanduser(pattern))
            for found in sorted(glob.glob(pattern)):
                try:
                    included = _read_private(found, where)
                except FileNotFoundError:  # gone since the glob saw it
                    raise BadInput(f"{at}: Include {found}: no such file") from None
                lines.append(with_includes(included, found, relative_to, where, depth + 1))
                lines.append("Host *")
    return "\n".join(lines) + "\n"


def _every_host(key: str, value: str) -> bool:
    """Whether a ``Host``/``Match`` line's block applies to every host (``Host *``,
    ``Match all``)."""
    return value.split() == (["*"] if key == "host" else ["all"])


def _read_private(path: str, where: str) -> str:
    """The text of the ssh_config file ``path``, refused (ConfigError) when others may write
    it; BadInput when it cannot be read as text; FileNotFoundError left to the caller."""
    check_private_file(path, "ssh.ssh_config", where)
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except UnicodeDecodeError as exc:
        raise BadInput(f"[ssh] ssh_config {path}: {exc}") from None
    except IsADirectoryError:
        raise BadInput(f"[ssh] ssh_config {path}: a directory, not a file") from None
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BadInput(f"[ssh] ssh_config {path}: {exc.strerror or exc}") from None


class Endpoints:
    """Turns inventory hosts and jump hosts into unopened :class:`StrictConnection` s, with
    the precedence of the module text. Nothing connects here."""

    def __init__(self, ssh: SshSettings, ssh_config: str) -> None:
        self.ssh = ssh
        self.text = ssh_config
        self.ssh_config = paramiko.SSHConfig.from_text(ssh_config)
        # lazy: no Fabric or Invoke config file is read, only the ssh_config given
        self.fabric = fabric.Config(ssh_config=self.ssh_config, lazy=True,
                                    overrides={"user": ssh.user or DEFAULT_USER, "port": 22})

    def jump_spec(self, host: HostSettings) -> str | None:
        """The host's jump hosts (``a,b``), or None for a direct connection. BadInput naming
        where a malformed one was written."""
        lookup = self.ssh_config.lookup(host.address)
        for origin, spec in ((f"hosts.{host.role}.{host.name}.proxy_jump", host.proxy_jump),
                             ("ssh.proxy_jump", self.ssh.proxy_jump),
                             (f"ssh_config ProxyJump for {host.address}",
                              lookup.get("proxyjump"))):
            if spec is None:
                continue
            problem = jump_problem(spec)
            if problem:
                raise BadInput(f"{origin}: {problem}")
            return None if spec.strip().lower() in _DIRECT else spec
        return None

    def for_host(self, host: HostSettings) -> StrictConnection:
        """The connection to an inventory host, through its jump hosts if any."""
        lookup = self.ssh_config.lookup(host.address)
        port = host.port if host.port is not None else self.ssh.port
        conn = self._connection(host.address, host.name, user=host.user or self.ssh.user,
                                port=port, lookup=lookup,
                                keys=(host.key or self.ssh.key, None))
        spec = self.jump_spec(host)
        if spec is not None:
            last = self.jump(spec, host.name)
            if (last.host, last.port) != (conn.host, conn.port):  # not its own jump host
                conn.gateway = last
        elif "proxycommand" in lookup and not _said_direct(host, self.ssh):
            conn.gateway = self._proxy_command(host.address, conn.user, conn.port)
        return conn

    def _proxy_command(self, address: str, user: str, port: int) -> str:
        """ssh_config's ProxyCommand for ``address`` with ``%p`` and ``%r`` the port and user
        we connect with (paramiko expands them with ssh_config's own): looked up again with a
        first stanza that states them, as OpenSSH's command line would."""
        first = f"Host {shlex.quote(address)}\n    Port {port}\n    User {shlex.quote(user)}\n"
        command: str = paramiko.SSHConfig.from_text(first + self.text).lookup(address)[
            "proxycommand"]
        return command

    def jump(self, spec: str, for_host: str) -> StrictConnection:
        """The chain of jump hosts ``spec`` names (``a,b``: a first), returning its last hop,
        whose ``gateway`` is the hop before it."""
        gateway: StrictConnection | bool = False
        for hop in (part.strip() for part in spec.split(",")):
            target = derive_shorthand(hop)["host"]
            conn = self._connection(hop, f"jump host {hop} (for {for_host})", user=None,
                                    port=None, lookup=self.ssh_config.lookup(target),
                                    keys=(None, self.ssh.key), gateway=gateway)
            conn.jump_host = True
            gateway = conn
        assert isinstance(gateway, StrictConnection)
        return gateway

    def _connection(self, target: str, label: str, *, user: str | None, port: int | None,
                    lookup: paramiko.SSHConfigDict, keys: tuple[str | None, str | None],
                    gateway: StrictConnection | bool = False) -> StrictConnection:
        # A fresh connect_kwargs dict each time: Fabric would otherwise extend the shared
        # config's own key list with every host's IdentityFile. And a config of its own:
        # Fabric keeps the one it is given, and Invoke rebuilds a config from empty on any
        # write to it, so a connection opening in another thread could find it empty
        # (seen: "No attribute or config key found for 'authentication'", exit 70).
        try:
            conn = StrictConnection(target, user=user, port=port, config=self.fabric.clone(),
                                    gateway=gateway, connect_kwargs={"look_for_keys": False})
        except ValueError as exc:  # Fabric: a user or port both in the address and given
            raise BadInput(f"{label}: address {target!r}: {exc} (give the host's user and "
                           "port as their own keys, the address alone)") from None
        conn.label = label
        conn.client.load_host_keys(self.ssh.known_hosts)
        conn.client.set_missing_host_key_policy(Reject(label, f"{conn.host}:{conn.port}"))
        conn.connect_kwargs = _auth(keys[0], lookup, keys[1])
        return conn


def _said_direct(host: HostSettings, ssh: SshSettings) -> bool:
    """Our config said ``proxy_jump = ""`` (or none) for the host: no ProxyCommand either."""
    return any(spec is not None and spec.strip().lower() in _DIRECT
               for spec in (host.proxy_jump, ssh.proxy_jump))


def _auth(first: str | None, lookup: paramiko.SSHConfigDict,
          last: str | None) -> dict[str, Any]:
    """paramiko's authentication arguments: the ``first`` key alone; else ssh_config's
    IdentityFiles that exist (and the agent unless IdentitiesOnly); else the ``last`` key
    alone; else the agent and ~/.ssh/id_* as paramiko finds them."""
    if first:
        return {"key_filename": [first], "look_for_keys": False, "allow_agent": False}
    files = [path for path in lookup.get("identityfile", []) if os.path.isfile(path)]
    if files:
        only = lookup.get("identitiesonly", "no").lower() == "yes"
        return {"key_filename": files, "look_for_keys": False, "allow_agent": not only}
    if last:
        return {"key_filename": [last], "look_for_keys": False, "allow_agent": False}
    return {"look_for_keys": True, "allow_agent": True}

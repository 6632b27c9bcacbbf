"""SSH through the sandbox's bastion, and the operator's ssh_config honoured.

Every sandbox sshd sees connections from 127.0.0.1, whoever opens them, so
``$SSH_CONNECTION``'s client address cannot tell a jump from a direct
connection. Its client *port* can: the tests find which local process owns
the TCP socket with that port (``/proc/net/tcp`` and ``/proc/*/fd``) and
check that it is the bastion's sshd (a descendant of the process its pid file
names), and, as the control, this test process for a direct connection.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path

import pytest

from orchestrator.config import Config, HostSettings
from orchestrator.remote.checks import run_checks
from orchestrator.remote.commands import Command
from orchestrator.remote.results import HostKeyRejected
from orchestrator.remote.ssh import Remote
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.procs import read_pid

pytestmark = pytest.mark.integration

WHO = Command(("sh", "-c", 'echo "$FASTDOWNTIME_HOST $(id -un) $SSH_CONNECTION"'))


def bastion_pidfile(sandbox: Context) -> Path:
    """The bastion's sshd pid file."""
    return sandbox.layout.bastion.root / "sshd" / "sshd.pid"


def with_ssh(config: Config, **changes: object) -> Config:
    assert config.ssh is not None
    return dataclasses.replace(config, ssh=dataclasses.replace(config.ssh, **changes))


def _address(field: str) -> tuple[str, int]:
    host, port = field.split(":")
    return socket.inet_ntoa(bytes.fromhex(host)[::-1]), int(port, 16)


def socket_owners(client_port: int, server: tuple[str, int]) -> set[int]:
    """The pids holding the local TCP socket from ``client_port`` to ``server``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = _address(fields[1]), _address(fields[2])
        if local[1] == client_port and remote == server:
            inodes.add(f"socket:[{fields[9]}]")
    owners = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) in inodes:
                owners.add(int(fd.parts[2]))
        except OSError:
            continue
    return owners


def ancestors(pid: int) -> list[int]:
    """``pid`` and its parents up to PID 1."""
    chain = [pid]
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def connected_by(bastion_pidfile: Path, host: HostSettings, words: list[str]) -> str:
    """Who opened the TCP connection the host's sshd reports in ``WHO``'s output: ``bastion``
    (its sshd), ``us`` (this process) or the pids found."""
    client_port = int(words[3])  # host, user, then $SSH_CONNECTION: client address and port
    owners = socket_owners(client_port, (host.address, L.SSH_PORT))
    bastion = read_pid(bastion_pidfile)
    if owners and all(bastion in ancestors(pid) for pid in owners):
        return "bastion"
    if owners == {os.getpid()}:
        return "us"
    return f"pids {sorted(owners)}"


def test_commands_go_through_the_bastion(sandbox: Context, config: Config) -> None:
    """With ``proxy_jump`` every host runs commands as deploy over a TCP connection the
    bastion's sshd opened, all over one shared connection to the bastion; without it, over
    our own (the control)."""
    jumped = with_ssh(config, proxy_jump=sandbox.layout.bastion_jump)
    with Remote(jumped) as remote:
        result = remote.run_all(jumped.hosts, WHO)
        assert result.ok, result.failed
        assert len(remote._jumps) == 1, "one connection to the bastion, shared"
        seen = {r.host: r.stdout.split() for r in result.results}
        via = {h.name: connected_by(bastion_pidfile(sandbox), h, seen[h.name])
               for h in jumped.hosts}
    assert {name: words[:2] for name, words in seen.items()} == {
        h.name: [h.name, L.DEPLOY_USER] for h in jumped.hosts}
    assert via == {h.name: "bastion" for h in jumped.hosts}
    with Remote(config) as remote:
        host = config.hosts[0]
        direct = remote.run(host, WHO)
        assert direct.ok, direct.stderr_tail
        assert connected_by(bastion_pidfile(sandbox), host, direct.stdout.split()) == "us"


def test_preflight_remote_checks_pass_through_the_bastion(sandbox: Context,
                                                          config: Config) -> None:
    """Preflight's remote checks (hosts, revision, haproxy over its socat channel, disk)
    pass through the bastion: every host's transport runs over a channel of the bastion's."""
    first = json.loads((sandbox.layout.base / "layout.json").read_text())["first"]
    jumped = with_ssh(config, proxy_jump=sandbox.layout.bastion_jump)
    with Remote(jumped) as remote:
        results = {r.name: r for r in run_checks(remote, jumped, first)}
        socks = {h.name: type(remote.connection(h).get_transport().sock).__name__  # type: ignore[union-attr]
                 for h in jumped.hosts}
    assert socks == {h.name: "Channel" for h in jumped.hosts}
    assert {n: r.ok for n, r in results.items()} == {"hosts": True, "deployed_revision": True,
                                                     "haproxy": True, "haproxy_waits": True,
                                                     "free_disk": True}


def write_ssh_config(tmp_path: Path, layout: L.Layout, user: str = L.DEPLOY_USER) -> Path:
    """Host aliases ``fdt-<name>`` for every host and ``fdt-bastion``: HostName, User, Port,
    IdentityFile and ProxyJump, nothing of which our config states."""
    lines = [f"Host fdt-bastion\n    HostName {L.BASTION_ADDRESS}\n    Port {L.SSH_PORT}\n"
             f"    User {L.DEPLOY_USER}\n    IdentityFile {layout.key_file}\n"]
    for host in layout.hosts:
        lines.append(f"Host fdt-{host.name}\n    HostName {host.address}\n"
                     f"    Port {L.SSH_PORT}\n    User {user}\n"
                     f"    IdentityFile {layout.key_file}\n    ProxyJump fdt-bastion\n")
    path = tmp_path / "ssh_config"
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


def aliased(config: Config, ssh_config: Path) -> Config:
    """The config with nothing said of user, port, key or jump: hosts named by alias."""
    hosts = tuple(dataclasses.replace(h, address=f"fdt-{h.name}", port=None)
                  for h in config.hosts)
    changed = with_ssh(config, user=None, port=None, key=None, ssh_config=str(ssh_config))
    return dataclasses.replace(changed, hosts=hosts)


def test_ssh_config_aliases_are_honoured(sandbox: Context, config: Config,
                                         tmp_path: Path) -> None:
    """A Host alias's HostName, Port, User, IdentityFile and ProxyJump are what connects."""
    layout = sandbox.layout
    mine = aliased(config, write_ssh_config(tmp_path, layout))
    with Remote(mine) as remote:
        result = remote.run_all(mine.hosts, WHO)
        assert result.ok, result.failed
        by_host = {r.host: r.stdout.split() for r in result.results}
        for host in config.hosts:
            words = by_host[host.name]
            assert words[:2] == [host.name, L.DEPLOY_USER]
            assert connected_by(bastion_pidfile(sandbox), host, words) == "bastion"
    refused = aliased(config, write_ssh_config(tmp_path, layout, user="nobody"))
    with Remote(refused) as remote:
        one = remote.run(refused.hosts[0], WHO)
    assert one.status == "unreachable" and "login as nobody" in one.stderr_tail


def test_aliases_from_an_included_file_are_honoured(sandbox: Context, config: Config,
                                                   tmp_path: Path) -> None:
    """The aliases in a file the ssh_config Includes (by glob) connect through the bastion
    as if written inline; paramiko alone would skip the Include and find no alias."""
    (tmp_path / "config.d").mkdir()
    write_ssh_config(tmp_path, sandbox.layout).rename(tmp_path / "config.d" / "fdt")
    main = tmp_path / "main_config"
    main.write_text(f"Include {tmp_path}/config.d/*\n")
    main.chmod(0o600)
    mine = aliased(config, main)
    with Remote(mine) as remote:
        result = remote.run_all(mine.hosts, WHO)
        assert result.ok, result.failed
        for r in result.results:
            host = next(h for h in config.hosts if h.name == r.host)
            assert connected_by(bastion_pidfile(sandbox), host, r.stdout.split()) == "bastion"


def test_our_config_beats_ssh_config(sandbox: Context, config: Config,
                                     tmp_path: Path) -> None:
    """[ssh] user and proxy_jump = "" override the alias's User and ProxyJump."""
    mine = aliased(config, write_ssh_config(tmp_path, sandbox.layout, user="nobody"))
    mine = with_ssh(mine, user=L.DEPLOY_USER, proxy_jump="")
    host = config.hosts[0]
    with Remote(mine) as remote:
        result = remote.run(mine.hosts[0], WHO)
        assert result.ok, result.stderr_tail
        assert connected_by(bastion_pidfile(sandbox), host, result.stdout.split()) == "us"


def test_proxy_command_from_ssh_config(sandbox: Context, config: Config,
                                       tmp_path: Path) -> None:
    """An ssh_config ProxyCommand (here socat) carries the connection, its ``%p`` the port
    [ssh] says (ssh_config names none); host keys still checked."""
    host = config.hosts[0]
    path = tmp_path / "ssh_config"
    path.write_text(f"Host fdt-pc\n    HostName {host.address}\n"
                    "    ProxyCommand socat - TCP:%h:%p\n")
    path.chmod(0o600)
    mine = dataclasses.replace(with_ssh(config, ssh_config=str(path)),
                               hosts=(dataclasses.replace(host, address="fdt-pc"),))
    with Remote(mine) as remote:
        result = remote.run(mine.hosts[0], WHO)
    assert result.ok, result.stderr_tail
    assert result.stdout.split()[0] == host.name


def test_unknown_bastion_key_is_refused(sandbox: Context, config: Config,
                                        tmp_path: Path) -> None:
    """known_hosts without the bastion's line: the jump host is refused, named, fingerprint
    given, whatever the target's key."""
    assert config.ssh is not None
    known = tmp_path / "known_hosts"
    known.write_text("".join(line for line in Path(config.ssh.known_hosts).read_text()
                             .splitlines(keepends=True) if L.BASTION_ADDRESS not in line))
    strict = with_ssh(config, known_hosts=str(known), proxy_jump=sandbox.layout.bastion_jump)
    with Remote(strict) as remote:
        with pytest.raises(HostKeyRejected) as caught:
            remote.connection(config.hosts[0])
    assert f"jump host {sandbox.layout.bastion_jump}" in str(caught.value)
    assert "SHA256:" in str(caught.value)


def test_a_dead_jump_host_is_named_within_the_timeout(sandbox: Context,
                                                      config: Config) -> None:
    """A jump host where nothing listens: the host is unreachable, the jump host named."""
    dead = with_ssh(config, proxy_jump=f"{L.DEPLOY_USER}@{L.BASTION_ADDRESS}:2299",
                    connect_timeout_s=1.0)
    with Remote(dead) as remote:
        result = remote.run(config.hosts[0], WHO)
    assert result.status == "unreachable"
    assert f"on the jump host {L.DEPLOY_USER}@{L.BASTION_ADDRESS}:2299" in result.stderr_tail

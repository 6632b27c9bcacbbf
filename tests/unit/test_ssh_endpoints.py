"""Where an SSH connection goes: our config first, then the operator's ssh_config (through
Fabric's Connection), then the defaults; jump hosts held to the same host keys."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from orchestrator.config import Config, HostSettings, SshSettings, load_config
from orchestrator.errors import BadInput, ConfigError
from orchestrator.remote.endpoints import (
    Endpoints,
    QuickAckSocket,
    Reject,
    StrictConnection,
    fingerprint,
    load_ssh_config,
)
from orchestrator.remote.results import HostKeyRejected
from orchestrator.remote.ssh import Remote

HOST = HostSettings("app1", "app", "app1.internal")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A known_hosts file and two keys that exist (their content is never read here)."""
    (tmp_path / "known_hosts").write_text("")
    for name in ("id_config", "id_ssh", "id_host", "id_bastion", "id_alias"):
        (tmp_path / name).write_text("not read\n")
    return tmp_path


def settings(files: Path, **values: object) -> SshSettings:
    return SshSettings(known_hosts=str(files / "known_hosts"), **values)  # type: ignore[arg-type]


def endpoints(files: Path, ssh_config: str = "", **values: object) -> Endpoints:
    path = files / "ssh_config"
    path.write_text(ssh_config.replace("$DIR", str(files)))
    ssh = settings(files, ssh_config=str(path), **values)
    return Endpoints(ssh, load_ssh_config(ssh, "test.toml"))


ALIAS = """
Host app1.internal
    HostName 10.0.0.11
    User alice
    Port 2200
    IdentityFile $DIR/id_config
    ProxyJump bastion

Host bastion
    HostName 10.0.0.4
    User bob
    Port 2022
    IdentityFile $DIR/id_bastion
"""


def test_nothing_said_anywhere_gives_the_defaults(files: Path) -> None:
    """No ssh_config, no [ssh] values: the address, deploy, port 22, agent and ~/.ssh keys."""
    conn = endpoints(files).for_host(HOST)
    assert (conn.host, conn.user, conn.port, conn.gateway) == ("app1.internal", "deploy", 22,
                                                               False)
    assert conn.connect_kwargs == {"look_for_keys": True, "allow_agent": True}


def test_ssh_config_fills_in_what_our_config_leaves_out(files: Path) -> None:
    """A Host alias gives HostName, User, Port, IdentityFile and ProxyJump, and the jump host
    is itself looked up in ssh_config."""
    conn = endpoints(files, ALIAS).for_host(HOST)
    assert (conn.host, conn.user, conn.port) == ("10.0.0.11", "alice", 2200)
    assert conn.connect_kwargs["key_filename"] == [str(files / "id_config")]
    assert conn.connect_kwargs["look_for_keys"] is False
    jump = conn.gateway
    assert isinstance(jump, StrictConnection)
    assert (jump.host, jump.user, jump.port, jump.gateway) == ("10.0.0.4", "bob", 2022, False)
    assert jump.connect_kwargs["key_filename"] == [str(files / "id_bastion")]
    assert conn.describe() == "alice@10.0.0.11:2200 via bob@10.0.0.4:2022"


def test_ssh_section_wins_over_ssh_config_and_the_host_over_both(files: Path) -> None:
    """[ssh] user, port, key and proxy_jump beat ssh_config; the host's own beat [ssh]."""
    found = endpoints(files, ALIAS, user="deploy", port=2222, key=str(files / "id_ssh"),
                      proxy_jump="ops@10.9.9.9:2201")
    conn = found.for_host(HOST)
    assert (conn.host, conn.user, conn.port) == ("10.0.0.11", "deploy", 2222)
    assert conn.connect_kwargs == {"key_filename": [str(files / "id_ssh")],
                                   "look_for_keys": False, "allow_agent": False}
    assert (conn.gateway.user, conn.gateway.host, conn.gateway.port) == ("ops", "10.9.9.9",
                                                                         2201)
    own = dataclasses.replace(HOST, user="carol", port=2300, key=str(files / "id_host"),
                              proxy_jump="bastion")
    conn = found.for_host(own)
    assert (conn.user, conn.port) == ("carol", 2300)
    assert conn.connect_kwargs["key_filename"] == [str(files / "id_host")]
    assert (conn.gateway.host, conn.gateway.user) == ("10.0.0.4", "bob")


@pytest.mark.parametrize("direct", ["", "none", "None"])
def test_an_empty_or_none_proxy_jump_connects_directly(files: Path, direct: str) -> None:
    """``proxy_jump = ""`` (or none) on a host or in [ssh] overrides ssh_config's ProxyJump and
    ProxyCommand alike."""
    text = ALIAS + "\nHost other\n    ProxyCommand socat - TCP:%h:%p\n"
    assert endpoints(files, text, proxy_jump=direct).for_host(HOST).gateway is False
    own = dataclasses.replace(HOST, proxy_jump=direct)
    assert endpoints(files, text).for_host(own).gateway is False
    other = dataclasses.replace(HOST, address="other")
    assert endpoints(files, text).for_host(other).gateway == "socat - TCP:other:22"
    assert endpoints(files, text, proxy_jump=direct).for_host(other).gateway is False


def test_proxy_command_gets_the_port_and_user_we_connect_with(files: Path) -> None:
    """``%p`` and ``%r`` of a ProxyCommand are the port and user our config gives, as
    OpenSSH's ``-p`` and ``-l`` would make them."""
    text = "Host other\n    Port 2200\n    ProxyCommand nc -X %r %h %p\n"
    other = dataclasses.replace(HOST, address="other")
    assert endpoints(files, text).for_host(other).gateway == "nc -X deploy other 2200"
    assert endpoints(files, text, port=2222, user="ops").for_host(other).gateway == \
        "nc -X ops other 2222"


def test_jump_host_text_then_its_ssh_config_then_the_ssh_section(files: Path) -> None:
    """A jump host takes what its spec says, then its ssh_config entry, then [ssh] user and
    key, then port 22 (the inventory's [ssh] port is not the jump host's)."""
    found = endpoints(files, ALIAS, user="deploy", key=str(files / "id_ssh"), port=2222,
                      proxy_jump="eve@bastion:2023")
    jump = found.for_host(HOST).gateway
    assert (jump.host, jump.user, jump.port) == ("10.0.0.4", "eve", 2023)
    assert jump.connect_kwargs["key_filename"] == [str(files / "id_bastion")]
    bare = endpoints(files, "", user="deploy", key=str(files / "id_ssh"), port=2222,
                     proxy_jump="10.0.0.5").for_host(HOST).gateway
    assert (bare.host, bare.user, bare.port) == ("10.0.0.5", "deploy", 22)
    assert bare.connect_kwargs["key_filename"] == [str(files / "id_ssh")]


def test_hops_are_chained_first_to_last(files: Path) -> None:
    """``a,b`` reaches a first, then b through a, then the host through b (as OpenSSH)."""
    conn = endpoints(files, proxy_jump="u@10.0.0.1,v@10.0.0.2:2022").for_host(HOST)
    last = conn.gateway
    assert (last.user, last.host, last.port) == ("v", "10.0.0.2", 2022)
    first = last.gateway
    assert (first.user, first.host, first.port, first.gateway) == ("u", "10.0.0.1", 22, False)


def test_only_jump_hosts_acknowledge_at_once(files: Path) -> None:
    """A jump host's socket ACKs every read at once (its sshd leaves Nagle on, and our
    delayed ACK would hold its next write 40 ms); a host's socket is left as it was."""
    conn = endpoints(files, proxy_jump="u@10.0.0.1,v@10.0.0.2").for_host(HOST)
    assert (conn.jump_host, conn.gateway.jump_host, conn.gateway.gateway.jump_host) == (
        False, True, True)
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as plain:
        quick = QuickAckSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        peer, _ = server.accept()
        with quick, peer:
            peer.sendall(b"hello")
            assert quick.recv(5) == b"hello"
            assert quick.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_a_host_that_is_its_own_jump_host_is_reached_directly(files: Path) -> None:
    """``Host *`` with a ProxyJump would send the bastion through itself: it goes direct."""
    found = endpoints(files, "Host *\n    ProxyJump 10.0.0.4:2222\n")
    bastion = HostSettings("bastion", "lb", "10.0.0.4", 2222)
    assert found.for_host(bastion).gateway is False
    assert found.for_host(HOST).gateway.host == "10.0.0.4"


def test_identity_files_that_exist_are_used_and_identities_only_drops_the_agent(
        files: Path) -> None:
    """A missing IdentityFile is skipped as OpenSSH does; IdentitiesOnly keeps the agent out;
    none left: the agent and ~/.ssh."""
    text = (f"Host a\n    IdentityFile {files}/missing\n    IdentityFile {files}/id_alias\n"
            f"Host b\n    IdentityFile {files}/id_alias\n    IdentitiesOnly yes\n"
            f"Host c\n    IdentityFile {files}/missing\n")
    found = endpoints(files, text)
    a = found.for_host(dataclasses.replace(HOST, address="a")).connect_kwargs
    assert a == {"key_filename": [str(files / "id_alias")], "look_for_keys": False,
                 "allow_agent": True}
    assert found.for_host(dataclasses.replace(HOST, address="b")).connect_kwargs[
        "allow_agent"] is False
    assert found.for_host(dataclasses.replace(HOST, address="c")).connect_kwargs == {
        "look_for_keys": True, "allow_agent": True}


def test_every_hop_refuses_unknown_keys_and_never_adds_them(files: Path) -> None:
    """Fabric's own client trusts on first use: each hop's is replaced by our RejectPolicy
    before anything connects, naming the hop."""
    conn = endpoints(files, ALIAS).for_host(HOST)
    for hop, name in ((conn, "app1"), (conn.gateway, "jump host bastion (for app1)")):
        policy = hop.client._policy
        assert isinstance(policy, Reject) and policy.name == name
        assert not isinstance(policy, paramiko.AutoAddPolicy)


def test_a_malformed_proxy_jump_is_named_where_it_was_written(files: Path,
                                                              tmp_path: Path) -> None:
    """In our config: ConfigError at load; in ssh_config: BadInput when the Remote is made."""
    toml = tmp_path / "env.toml"
    toml.write_text('[ssh]\nknown_hosts = "known_hosts"\nproxy_jump = "a b"\n'
                    '[hosts.app.web1]\naddress = "10.0.0.1"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(toml)
    assert caught.value.key == "ssh.proxy_jump"
    (files / "ssh_config").write_text("Host *\n    ProxyJump bastion:notaport\n")
    ssh = settings(files, ssh_config=str(files / "ssh_config"))
    with pytest.raises(BadInput, match="ssh_config ProxyJump for app1.internal"):
        Remote(Config(path=None, ssh=ssh, hosts=(HOST,)))


def test_the_ssh_config_file_read_and_when_not(files: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Default ~/.ssh/config (none if absent); "" reads nothing; a named file must exist and
    be private."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    assert load_ssh_config(settings(files), "t") == ""
    (home / ".ssh" / "config").write_text("Host x\n    User fromhome\n")
    assert "fromhome" in load_ssh_config(settings(files), "t")
    assert load_ssh_config(settings(files, ssh_config=""), "t") == ""
    with pytest.raises(BadInput, match="no such file"):
        load_ssh_config(settings(files, ssh_config=str(tmp_path / "absent")), "t")
    (home / ".ssh" / "config").chmod(0o666)
    with pytest.raises(ConfigError, match="writable by group or others"):
        load_ssh_config(settings(files), "t")


def test_ssh_keys_load_from_the_file(tmp_path: Path) -> None:
    """The new keys load; ssh_config "" stays "" (not the config's directory); [ssh] port
    still reaches hosts without their own."""
    toml = tmp_path / "env.toml"
    toml.write_text('[ssh]\nknown_hosts = "kh"\nssh_config = ""\nport = 2222\n'
                    'proxy_jump = "deploy@127.0.0.4:2222"\n'
                    '[hosts.app.web1]\naddress = "w1"\nuser = "u"\nkey = "k"\n'
                    'proxy_jump = ""\n[hosts.app.web2]\naddress = "w2"\n')
    config = load_config(toml)
    assert config.ssh is not None
    assert (config.ssh.ssh_config, config.ssh.proxy_jump, config.ssh.user) == (
        "", "deploy@127.0.0.4:2222", None)
    web1, web2 = config.hosts
    assert (web1.user, web1.key, web1.proxy_jump, web1.port) == ("u", str(tmp_path / "k"), "",
                                                                2222)
    assert web2.port == 2222


# --- a jump host whose key we do not know, in-process --------------------------------


@pytest.fixture
def fake_bastion() -> Iterator[tuple[str, int, paramiko.PKey]]:
    """An SSH server on 127.0.0.1 that shows its host key and nothing else."""
    key = paramiko.ECDSAKey.generate()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.1)
    stop = threading.Event()
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = server.accept()
            except TimeoutError:
                continue
            transport = paramiko.Transport(sock)
            transport.add_server_key(key)
            transports.append(transport)
            try:
                transport.start_server(server=paramiko.ServerInterface())
            except (paramiko.SSHException, EOFError, OSError):
                pass  # the client refused our key and hung up: what the tests expect
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    address, port = server.getsockname()
    yield address, port, key
    stop.set()
    thread.join()
    for transport in transports:
        transport.close()
    server.close()


def test_an_unknown_bastion_key_is_refused_and_not_added(
        files: Path, fake_bastion: tuple[str, int, paramiko.PKey]) -> None:
    """A jump host missing from known_hosts is refused (naming it and its fingerprint) before
    the host behind it is tried, and known_hosts is left as it was."""
    address, port, key = fake_bastion
    ssh = settings(files, ssh_config="", proxy_jump=f"deploy@{address}:{port}",
                   key=str(files / "id_ssh"), connect_timeout_s=2.0)
    with Remote(Config(path=None, ssh=ssh, hosts=(HOST,))) as remote:
        with pytest.raises(HostKeyRejected) as caught:
            remote.connection(HOST)
    assert f"jump host deploy@{address}:{port} (for app1)" in str(caught.value)
    assert fingerprint(key) in str(caught.value) and "is not in known_hosts" in str(caught.value)
    assert (files / "known_hosts").read_text() == ""


def test_a_changed_bastion_key_is_refused(files: Path,
                                          fake_bastion: tuple[str, int, paramiko.PKey]) -> None:
    """A jump host presenting another key than known_hosts records is refused as changed."""
    address, port, key = fake_bastion
    other = paramiko.ECDSAKey.generate()
    (files / "known_hosts").write_text(f"[{address}]:{port} {other.get_name()} "
                                       f"{other.get_base64()}\n")
    ssh = settings(files, ssh_config="", proxy_jump=f"deploy@{address}:{port}",
                   key=str(files / "id_ssh"), connect_timeout_s=2.0)
    with Remote(Config(path=None, ssh=ssh, hosts=(HOST,))) as remote:
        with pytest.raises(HostKeyRejected, match="differs from known_hosts") as caught:
            remote.connection(HOST)
    assert fingerprint(key) in str(caught.value) and fingerprint(other) in str(caught.value)


def test_an_address_that_also_names_a_user_or_port_is_bad_input(files: Path) -> None:
    """Fabric refuses a user or port given twice (in the address and as a key) with a bare
    ValueError: it is bad input naming the host, not an internal error."""
    with pytest.raises(BadInput, match="app1: address 'admin@10.0.0.5'"):
        endpoints(files, user="deploy").for_host(
            dataclasses.replace(HOST, address="admin@10.0.0.5"))
    with pytest.raises(BadInput, match="own keys"):
        endpoints(files, port=22).for_host(dataclasses.replace(HOST, address="10.0.0.5:2200"))


def test_each_connection_has_a_config_of_its_own(files: Path) -> None:
    """Invoke rebuilds a config from empty on any write to it: shared between connections
    opening in threads, one could read it empty mid-write (seen as an internal error,
    "No attribute or config key found for 'authentication'"). A write to one connection's
    config leaves every other's alone."""
    ends = endpoints(files, ALIAS)
    first, second = ends.for_host(HOST), ends.for_host(dataclasses.replace(HOST, name="app2"))
    assert first.config is not second.config and first.gateway.config is not first.config
    first.config.timeouts.connect = 3
    assert second.config.timeouts.connect != 3
    assert ends.fabric.timeouts.connect != 3


def test_included_files_are_read_as_openssh_reads_them(files: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``Include`` at the top: relative paths under ~/.ssh, globs in sorted order (the
    first value found wins), several per line, nested, a pattern matching nothing
    skipped; each included file starts for every host whatever the one before ended in,
    and so do the lines after the Include."""
    home = tmp_path / "home"
    included = home / ".ssh" / "config.d"
    included.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (included / "30-later").write_text("Host app1.internal\n    HostName 10.9.9.9\n")
    (included / "20-bastion").write_text(  # starts at the top: for every host
        f"Port 2300\nHost bastion\n    HostName 10.0.0.4\n    User bob\n"
        f"    IdentityFile {files}/id_bastion\n")
    (included / "10-app").write_text(  # ends inside Host app1.internal
        "Include ~/.ssh/nested\nHost app1.internal\n    HostName 10.0.0.11\n")
    (home / ".ssh" / "nested").write_text("Host app1.internal\n    ProxyJump bastion\n")
    main = ("Include config.d/* missing/none-*\n"
            "User carol\n"
            "Port 2200\n")
    conn = endpoints(files, main).for_host(HOST)
    assert (conn.host, conn.user, conn.port) == ("10.0.0.11", "carol", 2300)
    jump = conn.gateway
    assert isinstance(jump, StrictConnection)
    assert (jump.host, jump.user, jump.port) == ("10.0.0.4", "bob", 2300)


def test_an_include_ssh_would_read_otherwise_is_refused(files: Path, tmp_path: Path) -> None:
    """An Include under a Host that is not every host (OpenSSH reads it for that host only),
    a loop, and a file others may write are refused, each named where it was written."""
    (files / "other").write_text("User dave\n")
    with pytest.raises(BadInput, match=r"line 2: Include inside 'Host app1.internal' is not "
                                       r"supported"):
        endpoints(files, "Host app1.internal\n    Include $DIR/other\n")
    assert endpoints(files, "Host *\n    Include $DIR/other\n").for_host(HOST).user == "dave"
    (files / "loop").write_text(f"Include {files}/loop\n")
    with pytest.raises(BadInput, match="nested more than 16 deep"):
        endpoints(files, "Include $DIR/loop\n")
    (files / "other").chmod(0o664)
    with pytest.raises(ConfigError, match="other is writable by group or others"):
        endpoints(files, "Include $DIR/other\n")
    with pytest.raises(BadInput, match="No closing quotation"):
        endpoints(files, 'Include "$DIR/other\n')

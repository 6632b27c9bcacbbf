"""SSH to the sandbox hosts: strict host keys, timeouts, and results kept per host."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from orchestrator.config import Config, HostSettings
from orchestrator.remote.commands import Command
from orchestrator.remote.endpoints import AEAD_CIPHERS, aead_first, fingerprint
from orchestrator.remote.results import HostKeyRejected
from orchestrator.remote.ssh import SEND_CHUNK, Remote
from orchestrator.sandbox import layout as L

pytestmark = pytest.mark.integration


def with_known_hosts(config: Config, path: Path) -> Config:
    assert config.ssh is not None
    return dataclasses.replace(config, ssh=dataclasses.replace(config.ssh,
                                                               known_hosts=str(path)))


def test_commands_run_on_every_host_over_one_connection_each(config: Config,
                                                             remote: Remote) -> None:
    """Every host runs a command as the deploy user; its connection is reused."""
    result = remote.run_all(config.hosts, Command(("sh", "-c", "id -un; echo $FASTDOWNTIME_HOST")))
    assert result.ok, result.failed
    assert {r.host: r.stdout.split() for r in result.results} == {
        h.name: ["deploy", h.name] for h in config.hosts}
    first = remote.connection(config.hosts[0])
    remote.run(config.hosts[0], Command(("true",)))
    assert remote.connection(config.hosts[0]) is first


def test_stdin_reaches_the_command(config: Config, remote: Remote) -> None:
    """Bytes given as stdin arrive whole (how releases are shipped), a last short slice too."""
    data = bytes(range(256)) * 4096 + b"tail"
    assert len(data) % SEND_CHUNK
    result = remote.run(config.hosts[0], Command(("sha256sum",)), stdin=data)
    assert result.ok and result.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_connections_negotiate_aes_gcm(config: Config, remote: Remote) -> None:
    """OpenSSH offers AES-GCM, so it is chosen (paramiko checks other MACs in Python)."""
    transport = remote.connection(config.hosts[0]).get_transport()
    assert transport is not None
    assert (transport.local_cipher, transport.remote_cipher) == (AEAD_CIPHERS[0],) * 2


def test_gcm_is_offered_first_and_nothing_is_dropped() -> None:
    """A server without GCM still finds every cipher paramiko would have offered."""
    left, right = socket.socketpair()
    with left, right:
        transport = aead_first(left)
        offered = transport.get_security_options().ciphers
        assert offered[:len(AEAD_CIPHERS)] == AEAD_CIPHERS
        assert sorted(offered) == sorted(paramiko.Transport._preferred_ciphers)
        assert aead_first(right, disabled_algorithms={"ciphers": list(AEAD_CIPHERS)}) \
            .preferred_ciphers[0] == "aes128-ctr"


def test_unknown_host_key_is_refused_with_fingerprint(config: Config, tmp_path: Path) -> None:
    """A host missing from known_hosts is refused, naming host and key fingerprint."""
    (tmp_path / "known_hosts").write_text("")
    host = config.role("app")[0]
    expected = paramiko.Ed25519Key.from_private_key_file(
        str(L.sandbox_dir() / "hosts" / host.name / "sshd" / "ssh_host_ed25519_key"))
    with Remote(with_known_hosts(config, tmp_path / "known_hosts")) as remote:
        with pytest.raises(HostKeyRejected) as caught:
            remote.connection(host)
    assert host.name in str(caught.value) and fingerprint(expected) in str(caught.value)
    assert caught.value.exit_code == 3


def test_changed_host_key_is_refused(config: Config, tmp_path: Path) -> None:
    """A host presenting another key than known_hosts records is refused, both keys named."""
    host = config.role("app")[0]
    other = paramiko.Ed25519Key.from_private_key_file(str(L.sandbox_dir() / "ssh/id_ed25519"))
    (tmp_path / "known_hosts").write_text(
        f"[{host.address}]:{host.port} {other.get_name()} {other.get_base64()}\n")
    with Remote(with_known_hosts(config, tmp_path / "known_hosts")) as remote:
        with pytest.raises(HostKeyRejected, match="differs from known_hosts") as caught:
            remote.connection(host)
    assert fingerprint(other) in str(caught.value)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts and never speaks: an sshd that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.98", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_dead_and_hanging_hosts_fail_within_the_connect_timeout(
        config: Config, silent_server: tuple[str, int]) -> None:
    """A host with no sshd, and one whose sshd never answers, are named within the timeout."""
    assert config.ssh is not None
    quick = dataclasses.replace(config, ssh=dataclasses.replace(config.ssh,
                                                                connect_timeout_s=1.0))
    dead = HostSettings("ghost", "app", "127.0.0.99", 2222)
    hung = HostSettings("mute", "app", *silent_server)
    with Remote(quick) as remote:
        started = time.monotonic()
        result = remote.run_all([dead, hung, config.role("app")[0]], Command(("true",)))
        elapsed = time.monotonic() - started
    by_host = result.by_host
    assert by_host["ghost"].status == "unreachable" and "ghost" in by_host["ghost"].stderr_tail
    assert by_host["mute"].status == "unreachable" and "within 1 s" in by_host["mute"].stderr_tail
    assert by_host["app1"].ok, "the reachable host's result is kept"
    assert elapsed < 2.5, f"took {elapsed:.2f} s"


def test_hanging_command_is_killed_at_its_timeout(config: Config, remote: Remote) -> None:
    """A command that hangs is killed on the host at its timeout, and reported as such."""
    host = config.role("app")[0]
    marker = f"fdt-hang-{time.monotonic_ns()}"
    started = time.monotonic()
    result = remote.run(host, Command(("sh", "-c", f"sleep 30; echo {marker}")), timeout_s=1)
    assert result.status == "timeout" and time.monotonic() - started < 4
    # "[f]dt-..." matches the hung command's line but not pgrep's own
    left = remote.run(host, Command(("sh", "-c", f"pgrep -f '[f]{marker[1:]}' || true")))
    assert left.stdout.strip() == "", "the hung command still runs on the host"


def test_one_failing_host_of_four_keeps_the_others(config: Config, remote: Remote) -> None:
    """A failure on one host is reported with its stderr; the other hosts' results are kept."""
    def command(host: HostSettings) -> Command:
        if host.name == "app2":
            return Command(("sh", "-c", "echo 'disk on fire' >&2; exit 3"))
        return Command(("echo", host.name))
    result = remote.run_all(config.role("app"), command)
    assert [r.host for r in result.failed] == ["app2"]
    failed = result.by_host["app2"]
    assert failed.exit_code == 3 and "disk on fire" in failed.stderr_tail
    assert [r.stdout.strip() for r in result.results if r.ok] == ["app1", "app3", "app4"]
    from orchestrator.remote.results import RemoteFailed

    with pytest.raises(RemoteFailed, match="app2: failed \\(exit 3\\): disk on fire"):
        result.raise_for_failures("switch")

"""sandbox up is all-or-nothing and names what is missing; the plumbing waits with deadlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import SandboxError
from orchestrator.sandbox import manager, procs
from orchestrator.sandbox.component import Component


class Fake(Component):
    def __init__(self, name: str, events: list[str], fail: bool = False) -> None:
        self.name = name
        self.events = events
        self.fail = fail
        self.running = False
        self.log = Path(f"/nonexistent/{name}.log")

    def is_up(self) -> bool:
        return self.running

    def up(self) -> None:
        self.events.append(f"up {self.name}")
        self.running = True
        if self.fail:
            raise SandboxError(self.name, "not ready within 1 s", str(self.log))

    def down(self) -> None:
        self.events.append(f"down {self.name}")
        self.running = False


@pytest.fixture
def fake_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path / "sb"
    monkeypatch.setenv("FASTDOWNTIME_SANDBOX", str(base))
    monkeypatch.setattr(manager, "check_tools", lambda: None)
    monkeypatch.setattr(manager, "ensure_os_user", lambda user: None)
    monkeypatch.setattr(manager, "ensure_client_key", lambda layout: None)
    monkeypatch.setattr(manager, "write_known_hosts", lambda layout: None)

    class Repo:
        first = "0" * 40

    monkeypatch.setattr(manager, "build_sample_repo", lambda path: Repo())
    monkeypatch.setattr(manager, "_baseline", lambda repo, rev: [])
    return base


def test_failed_component_stops_what_this_call_started(
        fake_sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When a component fails, every component this call started is stopped, in reverse."""
    events: list[str] = []
    parts = [Fake("primary", events), Fake("pgbouncer", events), Fake("app1", events, fail=True),
             Fake("haproxy", events)]
    monkeypatch.setattr(manager, "components", lambda *a, **k: parts)
    with pytest.raises(SandboxError, match="app1: not ready within 1 s"):
        manager.up()
    assert events == ["up primary", "up pgbouncer", "up app1",
                      "down app1", "down pgbouncer", "down primary"]
    assert not fake_sandbox.exists(), "a sandbox directory this call created is removed"


def test_up_leaves_running_components_alone(
        fake_sandbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An already-up component is not started again, nor stopped when a later one fails."""
    events: list[str] = []
    running = Fake("primary", events)
    running.running = True
    fake_sandbox.mkdir()
    parts: list[Any] = [running, Fake("app1", events, fail=True)]
    monkeypatch.setattr(manager, "components", lambda *a, **k: parts)
    with pytest.raises(SandboxError):
        manager.up()
    assert events == ["up primary", "up app1", "down app1"]
    assert fake_sandbox.exists(), "a directory that existed before is kept"


def test_missing_tool_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing binary is reported with the package that provides it."""
    monkeypatch.setattr(manager, "_TOOLS", {"/nonexistent/pgbouncer": "pgbouncer"})
    with pytest.raises(SandboxError, match="apt-get install pgbouncer"):
        manager.check_tools()


def test_wait_until_names_component_and_log() -> None:
    """A readiness check that never passes fails at its deadline, naming component and log."""
    with pytest.raises(SandboxError) as caught:
        procs.wait_until(lambda: False, deadline_s=0.05, component="pgbouncer",
                         what="answering", log=Path("/tmp/pgb.log"))
    assert "pgbouncer" in str(caught.value) and "/tmp/pgb.log" in str(caught.value)


def test_wait_until_stops_early_when_the_daemon_died() -> None:
    """A dead daemon ends the wait at once instead of running out the deadline."""
    with pytest.raises(SandboxError, match="exited before answering"):
        procs.wait_until(lambda: False, deadline_s=30, component="pgbouncer",
                         what="answering", gave_up=lambda: True)


def test_alive_treats_zombies_and_missing_pids_as_dead(tmp_path: Path) -> None:
    """A pid with no /proc entry is dead; our own pid is alive."""
    import os
    import subprocess
    import time

    assert procs.alive(os.getpid())
    assert not procs.alive(2**22 + 12345)
    child = subprocess.Popen(["true"])
    stat = Path(f"/proc/{child.pid}/stat")
    deadline = time.monotonic() + 5
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert not procs.alive(child.pid), "an unreaped zombie counts as dead"
    child.wait()
    assert procs.pid_alive(tmp_path / "missing.pid") is None


def test_down_never_kills_a_process_that_is_not_the_sandboxs(tmp_path: Path) -> None:
    """A pid file whose pid now belongs to another process (its daemon died, the pid was
    reused) is left alone: stop_pid checks the command line and the owner first."""
    import subprocess
    import sys

    from orchestrator.sandbox.procs import alive, stop_pid

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pidfile = tmp_path / "daemon.pid"
        pidfile.write_text(f"{bystander.pid}\n")
        assert stop_pid(pidfile, component="haproxy") is False
        assert alive(bystander.pid)
        assert stop_pid(pidfile, component="haproxy", expect="time.sleep") is True
        assert bystander.wait(5) is not None
    finally:
        if bystander.poll() is None:
            bystander.kill()
            bystander.wait()


def test_the_bastion_is_a_host_of_the_sandbox_but_not_of_the_inventory(tmp_path: Path) -> None:
    """The bastion's sshd comes up before the hosts behind it and goes down after them; its
    key is in known_hosts; the config lists no host at its address."""
    from orchestrator.config import load_config
    from orchestrator.sandbox import layout as L
    from orchestrator.sandbox.component import Context
    from orchestrator.sandbox.configfile import render_config
    from orchestrator.sandbox.hosts import SandboxHost, write_known_hosts

    layout = L.Layout(tmp_path, 2)
    parts = manager.components(Context(layout, {}))
    hosts = [p.host.name for p in parts if isinstance(p, SandboxHost)]
    assert hosts == ["bastion1", *(h.name for h in layout.hosts)]
    assert layout.bastion.address == L.BASTION_ADDRESS not in {h.address for h in layout.hosts}
    for host in (*layout.hosts, layout.bastion):
        sshd = host.root / "sshd"
        sshd.mkdir(parents=True)
        (sshd / "ssh_host_ed25519_key.pub").write_text(f"ssh-ed25519 KEY{host.name} c\n")
    layout.ssh_dir.mkdir()
    write_known_hosts(layout)
    assert f"[{L.BASTION_ADDRESS}]:{L.SSH_PORT} ssh-ed25519 KEYbastion1\n" in \
        layout.known_hosts.read_text()
    (tmp_path / "sandbox.toml").write_text(render_config(layout))
    config = load_config(tmp_path / "sandbox.toml")
    assert config.ssh is not None and config.ssh.proxy_jump is None
    assert config.ssh.ssh_config == ""
    assert L.BASTION_ADDRESS not in {h.address for h in config.hosts}
    assert f'# proxy_jump = "{layout.bastion_jump}"' in render_config(layout)

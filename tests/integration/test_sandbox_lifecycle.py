"""sandbox up/status/down against the real machine: idempotent, all-or-nothing, exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.sandbox import manager
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PRIMARY_PORT
from orchestrator.sandbox.procs import alive, read_pid

pytestmark = pytest.mark.integration


def pids(ctx: Context) -> set[int]:
    base = ctx.layout.base
    files = [*base.glob("hosts/*/sshd/sshd.pid"), *base.glob("hosts/*/app/run/*.pid"),
             base / "pgbouncer/pgbouncer.pid", ctx.layout.haproxy_socket.parent / "haproxy.pid",
             ctx.layout.primary_dir / "postmaster.pid", ctx.layout.standby_dir / "postmaster.pid"]
    found = {read_pid(f) for f in files}
    return {pid for pid in found if pid is not None}


def test_status_json_names_every_component(sandbox: Context,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """status --json names primary, standby, pgbouncer, haproxy, the bastion and every host,
    all up."""
    assert main(["sandbox", "status", "--json"]) == 0
    components = json.loads(capsys.readouterr().out)["components"]
    hosts = {h.name for h in sandbox.layout.hosts}
    expected = {"primary", "standby", "pgbouncer", "haproxy", sandbox.layout.bastion.name} | hosts
    assert set(components) == expected
    assert {c["state"] for c in components.values()} == {"up"}
    assert components["standby"]["streaming"] is True


def test_up_twice_is_harmless(sandbox: Context) -> None:
    """A second `up` starts nothing new and restarts nothing."""
    before = pids(sandbox)
    assert len(before) >= 6 + len(sandbox.layout.hosts)
    manager.up()
    assert pids(sandbox) == before


def test_port_in_use_names_it_and_leaves_nothing(sandbox: Context, tmp_path: Path) -> None:
    """A second sandbox whose ports are taken fails naming the port, and leaves no trace."""
    other = tmp_path / "second"
    env = {**os.environ, "FASTDOWNTIME_SANDBOX": str(other)}
    done = subprocess.run([sys.executable, "-m", "orchestrator", "sandbox", "up"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert f"127.0.0.1:{PRIMARY_PORT} is already in use" in done.stderr
    assert "primary" in done.stderr
    assert not other.exists()


def test_down_stops_exactly_its_processes_then_up_again(sandbox: Context) -> None:
    """down stops every process its pid files name and removes the directory; up rebuilds it."""
    before = pids(sandbox)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert manager.down() is True
        assert not sandbox.layout.base.exists()
        assert [pid for pid in before if alive(pid)] == []
        assert alive(bystander.pid), "a process the sandbox did not start is left alone"
    finally:
        bystander.kill()
        bystander.wait()
        manager.up()
    assert main(["sandbox", "status"]) == 0


PROBE = '''
from orchestrator.sandbox import manager


def test_brings_the_sandbox_up_without_the_fixture():
    """As the e2e tests do: up, without the session fixture."""
    manager.up()
'''


def test_a_test_session_leaves_no_sandbox_it_brought_up(sandbox: Context,
                                                        tmp_path: Path) -> None:
    """A pytest session that started without a sandbox ends without one, even when a test
    brought it up without the session fixture (make test leaves nothing running)."""
    from orchestrator.sandbox.layout import PROJECT_ROOT

    before = pids(sandbox)
    assert manager.down() is True
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-c", str(PROJECT_ROOT / "pyproject.toml"),
             "-p", "tests.conftest", "-p", "no:cacheprovider", str(probe)],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=False, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not sandbox.layout.base.exists(), "the session took its sandbox down"
        left = subprocess.run(["pgrep", "-f", str(sandbox.layout.base)], capture_output=True,
                              text=True, check=False).stdout.split()
        assert left == [], f"processes of the sandbox left running: {left}"
        assert [pid for pid in before if alive(pid)] == []
    finally:
        manager.up()

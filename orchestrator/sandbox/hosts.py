"""Sandbox hosts: one sshd each on its own loopback address, root directory and host key.

Login is as the non-root ``deploy`` user with the sandbox's client key; the
host keys are collected into ``<sandbox>/ssh/known_hosts``. App hosts get the
control script, their host-local config and the first revision staged under
``releases/<sha>`` with ``current`` pointing at it, and run it on the first
instance port; the script host runs the fragile script. The bastion (role
``bastion``) is an sshd and nothing else: a jump host that forwards TCP.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

from orchestrator.errors import SandboxError
from orchestrator.history import git
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Component, Context, write_private
from orchestrator.sandbox.procs import (
    chown_tree,
    pid_alive,
    port_open,
    run,
    stop_pid,
    wait_until,
)

SSHD = "/usr/sbin/sshd"
# StrictModes is off: it refuses an authorized_keys file below any group- or
# world-writable directory, and a checkout under /tmp (1777) is one. The file
# itself is root-owned 0644 in a root-owned 0755 directory.
START_DEADLINE_S = 15

_SSHD_CONFIG = """\
ListenAddress {address}:{port}
HostKey {hostkey}
PidFile {pidfile}
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowUsers {user}
StrictModes no
UseDNS no
MaxStartups 200:30:400
MaxSessions 100
SetEnv FASTDOWNTIME_HOST={name}
Subsystem sftp internal-sftp
"""


def ensure_os_user(name: str) -> None:
    """Create a non-root login user whose password field is ``*`` (not a locked ``!``)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        run(["useradd", "--create-home", "--shell", "/bin/sh", name], component="os-users")
    run(["usermod", "-p", "*", name], component="os-users")


def ensure_client_key(layout: L.Layout) -> None:
    """The orchestrator's SSH key pair and the authorized_keys every host trusts."""
    layout.ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.ssh_dir, 0o755)
    if not layout.key_file.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fastdowntime-sandbox",
             "-f", str(layout.key_file)], component="ssh")
    authorized = layout.ssh_dir / "authorized_keys"
    shutil.copyfile(layout.key_file.with_suffix(".pub"), authorized)
    os.chmod(authorized, 0o644)


def write_known_hosts(layout: L.Layout) -> None:
    """``known_hosts`` with every host's key and the bastion's, as ``[address]:port``."""
    lines = []
    for host in (*layout.hosts, layout.bastion):
        kind, key = (_sshd_dir(host) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        lines.append(f"[{host.address}]:{L.SSH_PORT} {kind} {key}\n")
    layout.known_hosts.write_text("".join(lines))


def _sshd_dir(host: L.Host) -> Path:
    return host.root / "sshd"


class SandboxHost(Component):
    """One host: its sshd, plus the app (app role) or the fragile script (scripts role)."""

    def __init__(self, ctx: Context, host: L.Host, first_revision: str) -> None:
        self.ctx = ctx
        self.host = host
        self.name = host.name
        self.first = first_revision
        self.dir = _sshd_dir(host)
        self.pidfile = self.dir / "sshd.pid"
        self.log = ctx.layout.logs / f"sshd-{host.name}.log"

    def ports(self) -> list[tuple[str, int]]:
        ports = [(self.host.address, L.SSH_PORT)]
        if self.host.role == "app":
            ports += [(self.host.address, port) for port in L.APP_PORTS]
        return ports

    def is_up(self) -> bool:
        return pid_alive(self.pidfile) is not None and port_open(self.host.address, L.SSH_PORT)

    def up(self) -> None:
        if not self.is_up():
            self._start_sshd()
        if self.host.role in ("app", "scripts"):
            self._install_app()
            if self.host.role == "app":
                self._ctl("appctl", "start", "current", str(L.APP_PORTS[0]))
            else:
                self._ctl("scriptctl", "start")

    def _start_sshd(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.host.root, 0o755)
        hostkey = self.dir / "ssh_host_ed25519_key"
        if not hostkey.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.host.name,
                 "-f", str(hostkey)], component=self.name)
        config = self.dir / "sshd_config"
        config.write_text(_SSHD_CONFIG.format(
            address=self.host.address, port=L.SSH_PORT, hostkey=hostkey, pidfile=self.pidfile,
            authorized_keys=self.ctx.layout.ssh_dir / "authorized_keys", user=L.DEPLOY_USER,
            name=self.host.name))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        run([SSHD, "-t", "-f", str(config)], component=self.name, log=self.log)
        run([SSHD, "-f", str(config), "-E", str(self.log)], component=self.name, log=self.log)
        wait_until(self._banner, deadline_s=START_DEADLINE_S, component=self.name,
                   what=f"accepting SSH on {self.host.address}:{L.SSH_PORT}", log=self.log)

    def _banner(self) -> bool:
        import socket

        try:
            with socket.create_connection((self.host.address, L.SSH_PORT), timeout=1) as sock:
                return sock.recv(64).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def _install_app(self) -> None:
        app = self.host.app_root
        for sub in ("bin", "etc", "releases", "run", "log"):
            (app / sub).mkdir(parents=True, exist_ok=True)
        host_scripts = resources.files("orchestrator.sandbox") / "sample" / "host"
        for script in host_scripts.iterdir():
            if script.name.startswith(("_", ".")):
                continue
            target = app / "bin" / script.name
            target.write_bytes(script.read_bytes())
            target.chmod(0o644 if script.name.endswith(".py") else 0o755)
        if self.host.role == "app":
            role, port = "app", L.PGBOUNCER_PORT
        else:
            role, port = "fragile", L.PRIMARY_PORT
        settings = {"bind": self.host.address, "passfile": str(app / "etc" / "pgpass"),
                    "pool_wait_s": L.APP_POOL_WAIT_S,
                    "dsn": f"host=127.0.0.1 port={port} dbname={L.DB_NAME} user={role} "
                           f"application_name={role}-{self.host.name}"}
        (app / "etc" / "app.json").write_text(json.dumps(settings, indent=2) + "\n")
        write_private(app / "etc" / "pgpass", self.ctx.pgpass_line(port, role))
        release = app / "releases" / self.first
        if not release.exists():
            self._stage(release)
        current = app / "current"
        if not current.is_symlink():
            current.symlink_to(Path("releases") / self.first)
        chown_tree(app, L.DEPLOY_USER)

    def _stage(self, release: Path) -> None:
        partial = release.with_name(release.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        try:
            archive = git.archive(str(self.ctx.layout.repo), self.first)
        except git.GitError as exc:
            raise SandboxError(self.name, f"git archive {self.first}: {exc}") from None
        unpack = subprocess.run(["tar", "-x", "-C", str(partial)], input=archive,
                                capture_output=True, check=False)
        if unpack.returncode != 0:
            raise SandboxError(self.name, f"unpacking {self.first} failed: "
                               f"{unpack.stderr.decode(errors='replace').strip()}")
        partial.rename(release)

    def _ctl(self, script: str, *args: str) -> None:
        app = self.host.app_root
        run([str(app / "bin" / script), *args], component=self.name, user=L.DEPLOY_USER,
            log=app / "log")

    def down(self) -> None:
        run_dir = self.host.app_root / "run"
        if run_dir.is_dir():
            for pidfile in sorted(run_dir.glob("*.pid")):
                stop_pid(pidfile, component=self.name)
        stop_pid(self.pidfile, component=self.name)

    def instances(self) -> dict[str, Any]:
        """Each app instance slot's ``/+health`` answer (or its failure)."""
        out: dict[str, Any] = {}
        for port in L.APP_PORTS:
            url = f"http://{self.host.address}:{port}/+health"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    out[str(port)] = json.loads(answer.read())
            except OSError as exc:
                out[str(port)] = {"ok": False, "error": str(getattr(exc, "reason", exc))}
        return out

    def status(self) -> dict[str, Any]:
        out = {**super().status(), "role": self.host.role, "address": self.host.address,
               "ssh_port": L.SSH_PORT, "pid": pid_alive(self.pidfile)}
        if self.host.role == "app":
            out["instances"] = self.instances()
        return out

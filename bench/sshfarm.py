"""A farm of bare sshd hosts on 127.0.2.x for the remote benchmarks (no database, no app).

Uses the sandbox's own host component, so each host is a real OpenSSH sshd
with its own host key, on its own loopback address, logging in ``deploy``;
one more at ``.254`` is a jump host (``config(..., jump=True)``). The /24 is
``$FASTDOWNTIME_BENCH_NET`` (default ``127.0.2``), for a machine where that one is taken.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from orchestrator.config import AppSettings, Config, HostSettings, SshSettings
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.hosts import SandboxHost, ensure_client_key, ensure_os_user
from orchestrator.sandbox.procs import chown_tree, stop_pid

JUMP_OCTET = 254


class SshFarm:
    """``count`` sshd hosts and a jump host; ``config`` reaches the hosts as app hosts with
    their own app roots, directly or through the jump host."""

    def __init__(self, count: int) -> None:
        net = os.environ.get("FASTDOWNTIME_BENCH_NET", "127.0.2")
        self.base = Path(tempfile.mkdtemp(prefix="fdt-sshfarm-"))
        self.base.chmod(0o755)
        self.layout = L.Layout(self.base, 1)
        self.ctx = Context(self.layout, {})
        self.hosts = [L.Host(f"b{i}", "lb", f"{net}.{i}", self.base / "hosts" / f"b{i}")
                      for i in range(1, count + 1)]
        self.jump = L.Host("jump", "bastion", f"{net}.{JUMP_OCTET}", self.base / "hosts" / "jump")
        self.parts = [SandboxHost(self.ctx, host, "") for host in (*self.hosts, self.jump)]

    def __enter__(self) -> SshFarm:
        ensure_os_user(L.DEPLOY_USER)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        ensure_client_key(self.layout)
        try:
            for part in self.parts:
                part.up()
            for host in self.hosts:
                (host.app_root / "releases").mkdir(parents=True, exist_ok=True)
                chown_tree(host.app_root, L.DEPLOY_USER)
            lines = []
            for host in (*self.hosts, self.jump):
                key = (host.root / "sshd" / "ssh_host_ed25519_key.pub").read_text().split()
                lines.append(f"[{host.address}]:{L.SSH_PORT} {key[0]} {key[1]}\n")
            self.layout.known_hosts.write_text("".join(lines))
        except BaseException:
            self.__exit__()
            raise
        return self

    def config(self, parallelism: int, jump: bool = False) -> Config:
        """The farm as an inventory; ``jump``: every host through the jump host."""
        ssh = SshSettings(known_hosts=str(self.layout.known_hosts), user=L.DEPLOY_USER,
                          key=str(self.layout.key_file), port=L.SSH_PORT, ssh_config="",
                          parallelism=parallelism,
                          proxy_jump=f"{L.DEPLOY_USER}@{self.jump.address}:{L.SSH_PORT}"
                          if jump else None)
        hosts = tuple(HostSettings(h.name, "app", h.address, L.SSH_PORT, str(h.app_root))
                      for h in self.hosts)
        app = AppSettings(start=("true",), stop=("true",), status=("true",))
        return Config(path=None, ssh=ssh, hosts=hosts, app=app)

    def __exit__(self, *exc: object) -> None:
        for part in self.parts:
            # the farm is not the sandbox: its daemons are recognised by its own directory
            stop_pid(part.pidfile, component=part.name, expect=str(self.base))
        shutil.rmtree(self.base, ignore_errors=True)

"""Where every sandbox component lives: addresses, ports, directories, OS users.

Pure data. ``config/sandbox.toml`` describes the default layout (4 app hosts);
``sandbox up --hosts N`` writes ``<sandbox>/sandbox.toml`` for other sizes,
rendered from the same :class:`Layout`, so the two never drift apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

PG_OS_USER = "fdtpg"
"""Non-root OS user that runs PostgreSQL and pgbouncer (both refuse root)."""

DEPLOY_USER = "deploy"
"""Non-root OS user that logs in to every sandbox host over SSH."""

SSH_PORT = 2222
PRIMARY_PORT = 15432
STANDBY_PORT = 15433
PGBOUNCER_PORT = 16432
PUBLIC_PORT = 18080
APP_PORTS = (8001, 8002)
APP_POOL_WAIT_S = 60.0
"""How long the sample app waits for a free database connection: longer than the window's
budget (30 s) plus a margin, so a request held in the window waits instead of failing."""
"""The two instance slots of every app host: old and new run side by side."""

DB_NAME = "app"
REVISION_TABLE = "LaunchpadDatabaseRevision"
BRANCH = "db-stable"
LB_ADDRESS = "127.0.0.2"
SCRIPTS_ADDRESS = "127.0.0.3"
BASTION_ADDRESS = "127.0.0.4"
"""The jump host: an sshd like the others' (deploy user, same keys), outside the inventory;
``[ssh] proxy_jump = "deploy@127.0.0.4:2222"`` reaches every host through it."""
FIRST_APP_OCTET = 11
MAX_APP_HOSTS = 200
MAX_ROWS = 100_000_000
"""``sandbox up --rows``: at most this many seeded items (about 8 GB)."""


def sandbox_dir() -> Path:
    """The sandbox root: ``$FASTDOWNTIME_SANDBOX`` or ``.sandbox/`` at the project root."""
    env = os.environ.get("FASTDOWNTIME_SANDBOX")
    return Path(env).resolve() if env else PROJECT_ROOT / ".sandbox"


@dataclass(frozen=True)
class Host:
    """One sandbox host: its own sshd on its own loopback address and root directory."""

    name: str
    role: str
    address: str
    root: Path

    @property
    def app_root(self) -> Path:
        """``releases/``, ``current``, ``bin/``, ``etc/``, ``run/``, ``log/`` live here."""
        return self.root / "app"


@dataclass(frozen=True)
class Layout:
    """The whole sandbox for a given number of app hosts."""

    base: Path
    app_hosts: int = 4
    hosts: tuple[Host, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.app_hosts <= MAX_APP_HOSTS:
            raise ValueError(f"app hosts must be between 1 and {MAX_APP_HOSTS}")
        hosts = [Host(f"app{i}", "app", f"127.0.0.{FIRST_APP_OCTET + i - 1}",
                      self.base / "hosts" / f"app{i}") for i in range(1, self.app_hosts + 1)]
        hosts.append(Host("scripts1", "scripts", SCRIPTS_ADDRESS, self.base / "hosts" / "scripts1"))
        hosts.append(Host("lb1", "lb", LB_ADDRESS, self.base / "hosts" / "lb1"))
        object.__setattr__(self, "hosts", tuple(hosts))

    def role(self, role: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.role == role)

    @property
    def bastion(self) -> Host:
        """The jump host (not in :attr:`hosts`, the inventory the config lists)."""
        return Host("bastion1", "bastion", BASTION_ADDRESS, self.base / "hosts" / "bastion1")

    @property
    def bastion_jump(self) -> str:
        """The bastion as ``proxy_jump`` names it."""
        return f"{DEPLOY_USER}@{BASTION_ADDRESS}:{SSH_PORT}"

    @property
    def lb(self) -> Host:
        return self.role("lb")[0]

    @property
    def primary_dir(self) -> Path:
        return self.base / "pg" / "primary"

    @property
    def standby_dir(self) -> Path:
        return self.base / "pg" / "standby"

    @property
    def pgbouncer_dir(self) -> Path:
        return self.base / "pgbouncer"

    @property
    def ssh_dir(self) -> Path:
        return self.base / "ssh"

    @property
    def key_file(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def pgpass(self) -> Path:
        """libpq password file for the orchestrator (root-only)."""
        return self.base / "pgpass"

    @property
    def repo(self) -> Path:
        return self.base / "repo"

    @property
    def logs(self) -> Path:
        return self.base / "log"

    @property
    def haproxy_socket(self) -> Path:
        return self.lb.root / "haproxy" / "haproxy.sock"

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{PUBLIC_PORT}/"

    @staticmethod
    def server_name(host: str, port: int) -> str:
        """The haproxy server of a host's instance slot, e.g. ``app1_8001``."""
        return f"{host}_{port}"

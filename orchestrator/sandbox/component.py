"""What every sandbox component is: a small object that comes up, reports, goes down.

:class:`Component` is the seam: ``up`` (idempotent: an up component is left
alone), ``is_up``, ``status`` and ``down`` (stops only what its pid files
name). :class:`Context` carries the layout and the generated passwords.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.sandbox.layout import Layout
from orchestrator.sandbox.procs import chown_tree

ROLES = ("fdt_admin", "app", "fragile", "replicator", "pgbouncer_admin", "postgres")


@dataclass(frozen=True)
class Context:
    """The layout being built and the database passwords of its roles."""

    layout: Layout
    passwords: dict[str, str]

    @classmethod
    def load(cls, layout: Layout) -> Context:
        """Read ``<sandbox>/secrets.json``, creating it (root-only) on first use."""
        file = layout.base / "secrets.json"
        if file.exists():
            passwords = json.loads(file.read_text())
        else:
            passwords = {role: secrets.token_urlsafe(18) for role in ROLES}
            file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(passwords, out)
        return cls(layout, passwords)

    def pgpass_line(self, port: int, role: str, database: str = "*") -> str:
        """One ``~/.pgpass`` line for ``role`` on 127.0.0.1:``port``."""
        return f"127.0.0.1:{port}:{database}:{role}:{self.passwords[role]}\n"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` with ``mode`` from the first byte (no window of 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, mode)


class Component:
    """One part of the sandbox (a server, or a host with its daemons)."""

    name: str = ""
    log: Path

    def prepare_log(self, user: str) -> None:
        """Create the log file and give it to the OS ``user`` the daemon runs as."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        chown_tree(self.log, user)

    def ports(self) -> list[tuple[str, int]]:
        """The (address, port) pairs this component listens on once up."""
        return []

    def is_up(self) -> bool:
        raise NotImplementedError

    def up(self) -> None:
        """Bring the component up; leave it alone when it already is."""
        raise NotImplementedError

    def down(self) -> None:
        """Stop the processes named by this component's pid files."""
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        state = "up" if self.is_up() else "down"
        return {"state": state, "log": str(self.log)}

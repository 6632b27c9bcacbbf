"""``sandbox up|down|status``: bring the whole local staging up in order, or take it down.

``up`` is idempotent (an up component is left alone) and all-or-nothing: when
a component fails, everything this call started is stopped again, and a
sandbox directory this call created is removed. ``down`` stops only the
processes named by the sandbox's pid files, then removes the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import structlog

from orchestrator.errors import SandboxError
from orchestrator.history import git
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Component, Context
from orchestrator.sandbox.configfile import render_config
from orchestrator.sandbox.haproxy import Haproxy
from orchestrator.sandbox.hosts import (
    SandboxHost,
    ensure_client_key,
    ensure_os_user,
    write_known_hosts,
)
from orchestrator.sandbox.pgbouncer import Pgbouncer
from orchestrator.sandbox.postgres import PG_BIN, Primary, Standby
from orchestrator.sandbox.procs import port_free
from orchestrator.sandbox.samplerepo import build_sample_repo

log = structlog.get_logger("sandbox")

_TOOLS = {
    str(PG_BIN / "initdb"): "postgresql-15",
    str(PG_BIN / "pg_basebackup"): "postgresql-15",
    "/usr/sbin/pgbouncer": "pgbouncer",
    "/usr/sbin/sshd": "openssh-server",
    "/usr/bin/ssh-keygen": "openssh-client",
    "/usr/sbin/haproxy": "haproxy",
    "/usr/bin/socat": "socat",
    "/usr/bin/git": "git",
    "/usr/bin/python3": "python3",
    "/usr/sbin/runuser": "util-linux",
}


def check_tools() -> None:
    """Refuse early, naming the Debian package, when a tool the sandbox runs is missing."""
    for path, package in _TOOLS.items():
        if not os.access(path, os.X_OK):
            raise SandboxError("install", f"{path} is missing: apt-get install {package} "
                                          "(or run `make install`)")
    probe = subprocess.run(["/usr/bin/python3", "-c", "import psycopg2"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        raise SandboxError("install", "the hosts' python3 lacks psycopg2: "
                                      "apt-get install python3-psycopg2")
    if os.geteuid() != 0:
        raise SandboxError("install", "sandbox up must run as root (it starts sshd and "
                                      "creates the OS users fdtpg and deploy)")


def _recorded_hosts(base: Path) -> int | None:
    try:
        return int(json.loads((base / "layout.json").read_text())["app_hosts"])
    except FileNotFoundError:
        return None


def current_layout(app_hosts: int | None = None) -> L.Layout:
    """The layout of the sandbox directory: as recorded there, or ``app_hosts`` (default 4)."""
    base = L.sandbox_dir()
    recorded = _recorded_hosts(base)
    if app_hosts is not None and recorded is not None and recorded != app_hosts:
        raise SandboxError("layout", f"{base} holds a sandbox with {recorded} app hosts, "
                                     f"not {app_hosts}: run `sandbox down` first")
    return L.Layout(base, app_hosts or recorded or 4)


def components(ctx: Context, first: str = "", baseline: list[str] | None = None,
               rows: int | None = None) -> list[Component]:
    """Every component in start order (stop order is the reverse); ``rows``: the sample's
    ``item`` table is topped up to that many rows."""
    primary = Primary(ctx, baseline or [], rows)
    parts: list[Component] = [primary, Standby(ctx, primary), Pgbouncer(ctx, primary)]
    parts.append(SandboxHost(ctx, ctx.layout.bastion, first))
    parts += [SandboxHost(ctx, host, first) for host in ctx.layout.hosts]
    parts.append(Haproxy(ctx))
    return parts


def up(app_hosts: int | None = None, rows: int | None = None) -> L.Layout:
    """Bring every component up (idempotent); on failure stop what this call started.
    ``rows``: the sample's ``item`` table holds at least that many rows."""
    check_tools()
    layout = current_layout(app_hosts)
    created = not layout.base.exists()
    started: list[Component] = []
    try:
        layout.logs.mkdir(parents=True, exist_ok=True)
        os.chmod(layout.base, 0o755)
        for user in (L.PG_OS_USER, L.DEPLOY_USER):
            ensure_os_user(user)
        ctx = Context.load(layout)
        repo = build_sample_repo(layout.repo)
        (layout.base / "layout.json").write_text(
            json.dumps({"app_hosts": layout.app_hosts, "first": repo.first}))
        ensure_client_key(layout)
        parts = components(ctx, repo.first, _baseline(layout.repo, repo.first), rows)
        _check_ports([part for part in parts if not part.is_up()])
        for part in parts:
            if not part.is_up():
                started.append(part)
            log.info("sandbox.component", component=part.name, action="up")
            part.up()
        write_known_hosts(layout)
        _write_private_config(layout)
        _write_pgpass(ctx)
    except BaseException:
        _stop(reversed(started))
        if created:
            shutil.rmtree(layout.base, ignore_errors=True)
        raise
    return layout


def _baseline(repo: Path, revision: str) -> list[str]:
    files = ("database/schema/baseline.sql", "database/schema/security.sql")
    return [git.show(str(repo), revision, name) for name in files]


def _check_ports(parts: list[Component]) -> None:
    for part in parts:
        for address, port in part.ports():
            if not port_free(address, port):
                raise SandboxError(part.name, f"port {address}:{port} is already in use "
                                              "by another process")


def _write_private_config(layout: L.Layout) -> None:
    (layout.base / "sandbox.toml").write_text(render_config(layout))


def _write_pgpass(ctx: Context) -> None:
    from orchestrator.sandbox.component import write_private

    lines = [ctx.pgpass_line(L.PRIMARY_PORT, "fdt_admin"),
             ctx.pgpass_line(L.STANDBY_PORT, "fdt_admin"),
             ctx.pgpass_line(L.PGBOUNCER_PORT, "pgbouncer_admin"),
             ctx.pgpass_line(L.PGBOUNCER_PORT, "fdt_admin"),
             ctx.pgpass_line(L.PRIMARY_PORT, "postgres"),
             ctx.pgpass_line(L.PRIMARY_PORT, "fragile"),
             ctx.pgpass_line(L.PGBOUNCER_PORT, "app")]
    write_private(ctx.layout.pgpass, "".join(lines))


def _stop(parts: Any) -> list[str]:
    problems = []
    for part in parts:
        try:
            part.down()
        except (SandboxError, OSError, subprocess.SubprocessError) as exc:
            problems.append(f"{part.name}: {exc}")
            log.error("sandbox.stop_failed", component=part.name, error=str(exc))
    return problems


def stop() -> bool:
    """Stop every process the sandbox's pid files name, keeping the directory: ``up``
    starts it again as it was (the databases' data, the hosts' releases, the keys)."""
    base = L.sandbox_dir()
    if not base.exists():
        return False
    problems = _stop(reversed(components(Context.load(current_layout()))))
    if problems:
        raise SandboxError("down", "; ".join(problems) + f" (directory {base} kept)")
    return True


def down() -> bool:
    """Stop every process the sandbox's pid files name and remove the directory."""
    if not stop():
        return False
    shutil.rmtree(L.sandbox_dir())
    return True


def status() -> dict[str, Any]:
    """``{"components": {name: {"state": "up"|"down", ...}}}`` for every component."""
    base = L.sandbox_dir()
    if not base.exists():
        return {"sandbox": str(base), "components": {}}
    layout = current_layout()
    parts = components(Context.load(layout))
    return {"sandbox": str(base), "config": str(base / "sandbox.toml"),
            "components": {part.name: part.status() for part in parts}}

"""Render the config file that describes a sandbox :class:`Layout`.

``config/sandbox.toml`` is this rendering for the default 4 app hosts with the
sandbox directory written as ``${FASTDOWNTIME_SANDBOX:-../.sandbox}``; a unit
test keeps the checked-in file equal to it. ``sandbox up --hosts N`` writes
the rendering for N hosts, with absolute paths, to ``<sandbox>/sandbox.toml``.
"""

from __future__ import annotations

from orchestrator.sandbox import layout as L

CHECKED_IN_BASE = "${FASTDOWNTIME_SANDBOX:-../.sandbox}"


def render_config(layout: L.Layout, base: str | None = None) -> str:
    """The TOML text describing ``layout``; ``base`` replaces the sandbox directory."""
    b = base if base is not None else str(layout.base)

    def at(path: object) -> str:
        return str(path).replace(str(layout.base), b, 1)

    lines = [
        "# The embedded sandbox: a complete local staging on loopback.",
        "# `fastdowntime sandbox up` builds what this file describes.",
        "# Generated from orchestrator/sandbox/layout.py; a test keeps the two equal.",
        "",
        "[source]",
        f'repo = "{at(layout.repo)}"',
        f'branch = "{L.BRANCH}"',
        'patches = "database/schema/patch-*.sql"',
        'schema_files = ["database/schema/**"]',
        'permissions = "database/schema/security.sql"',
        "tag_cuts = true",
        "",
        "[database]",
        f'dsn = "host=127.0.0.1 port={L.PRIMARY_PORT} dbname={L.DB_NAME} user=fdt_admin"',
        f'pgbouncer_admin_dsn = "host=127.0.0.1 port={L.PGBOUNCER_PORT} dbname=pgbouncer '
        'user=pgbouncer_admin"',
        f'passfile = "{at(layout.pgpass)}"',
        f'revision_table = "{L.REVISION_TABLE}"',
        "standbys = 1",
        f'standby_dsns = ["host=127.0.0.1 port={L.STANDBY_PORT} dbname={L.DB_NAME} '
        'user=fdt_admin"]',
        "max_replay_lag_s = 60",
        "max_transaction_age_s = 60",
        'system_users = ["postgres", "replicator", "fdt_admin", "pgbouncer_admin"]',
        'fragile_users = ["fragile"]',
        "",
        "[window]",
        "budget_s = 30",
        "patch_budget_s = 15",
        'mode = "hold"',
        "",
        "[ssh]",
        f'user = "{L.DEPLOY_USER}"',
        f'key = "{at(layout.key_file)}"',
        f'known_hosts = "{at(layout.known_hosts)}"',
        f"port = {L.SSH_PORT}",
        'ssh_config = ""  # the sandbox reads no ~/.ssh/config',
        f'# proxy_jump = "{layout.bastion_jump}"  # every host through the sandbox\'s bastion',
        "connect_timeout_s = 5",
        "command_timeout_s = 60",
        "parallelism = 16",
        "",
    ]
    for host in layout.hosts:
        lines += [f"[hosts.{host.role}.{host.name}]", f'address = "{host.address}"']
        if host.role != "lb":
            lines.append(f'root = "{at(host.app_root)}"')
        lines.append("")
    lines += [
        "[lb]",
        f'admin_socket = "{at(layout.haproxy_socket)}"',
        'backend = "app"',
        f'public_url = "{layout.public_url}"',
        'server_name = "{host}_{port}"',
        "drain_timeout_s = 10",
        f'haproxy_config = "{at(layout.haproxy_socket.parent / "haproxy.cfg")}"',
        "",
        "[app]",
        f"ports = [{', '.join(str(p) for p in L.APP_PORTS)}]",
        'start = ["{root}/bin/appctl", "start", "{release}", "{port}"]',
        'stop = ["{root}/bin/appctl", "stop", "{port}"]',
        'status = ["{root}/bin/appctl", "status"]',
        'health_url = "http://{address}:{port}/+health"',
        "health_timeout_s = 10",
        "keep_releases = 5",
        f"pool_wait_s = {L.APP_POOL_WAIT_S:g}",
        "",
        "[scripts]",
        'start = ["{root}/bin/scriptctl", "start"]',
        'stop = ["{root}/bin/scriptctl", "stop"]',
        'status = ["{root}/bin/scriptctl", "status"]',
        "",
        "[nodowntime]",
        "batch_size = 1",
        "max_out_of_rotation = 1",
        "",
        "[runs]",
        f'dir = "{at(layout.base / "runs")}"',
        'playbook = "fastdowntime"',
    ]
    return "\n".join(lines) + "\n"

"""The sandbox's pgbouncer in front of the primary, with its admin console enabled.

Its userlist holds each role's SCRAM verifier as the primary stores it, never a
password: pgbouncer then checks a client's proof without deriving its key (4096
rounds of PBKDF2 on pgbouncer's one thread, per login), and logs in to the primary
with the keys the client proved. Measured here: a client login 12.8 -> 5.0 ms, a
server login (the first query after PAUSE/RESUME) 13.2 -> 5.0 ms, medians of 30. A
window's held queries wait for those server logins. The userlist is written as
pgbouncer starts: a role whose password changes on the primary afterwards (a new
salt, a new verifier) cannot log in through it until pgbouncer restarts.

``pgbouncer -d`` exits 0 even when the daemon dies at once, so readiness is
polled (an admin-console ``SHOW VERSION``) with a deadline, and a dead pid
ends the wait early with the log named.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from orchestrator.errors import SandboxError
from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Component, Context, write_private
from orchestrator.sandbox.postgres import Primary
from orchestrator.sandbox.procs import chown_tree, pid_alive, run, stop_pid, wait_until

START_DEADLINE_S = 15

_INI = """\
[databases]
{db} = host=127.0.0.1 port={primary} dbname={db}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {userlist}
admin_users = pgbouncer_admin
stats_users = pgbouncer_admin, fdt_admin
pool_mode = transaction
max_client_conn = 500
default_pool_size = 40
server_login_retry = 2
ignore_startup_parameters = extra_float_digits,options
pidfile = {pidfile}
logfile = {logfile}
"""


ROLES = ("app", "fragile", "fdt_admin", "pgbouncer_admin")
"""The roles pgbouncer lets in (``pgbouncer_admin`` only to its admin console)."""


class Pgbouncer(Component):
    """pgbouncer on 127.0.0.1, transaction pooling, admin console for ``pgbouncer_admin``."""

    name = "pgbouncer"

    def __init__(self, ctx: Context, primary: Primary) -> None:
        self.ctx = ctx
        self.primary = primary
        self.dir = ctx.layout.pgbouncer_dir
        self.pidfile = self.dir / "pgbouncer.pid"
        self.ini = self.dir / "pgbouncer.ini"
        self.log = ctx.layout.logs / "pgbouncer.log"

    def ports(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", L.PGBOUNCER_PORT)]

    def is_up(self) -> bool:
        return pid_alive(self.pidfile) is not None and self.answers()

    def answers(self) -> bool:
        """True when the admin console answers ``SHOW VERSION``."""
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=L.PGBOUNCER_PORT, dbname="pgbouncer",
                                    user="pgbouncer_admin", connect_timeout=2,
                                    password=self.ctx.passwords["pgbouncer_admin"])
        except psycopg2.OperationalError:
            return False
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SHOW VERSION")
                return cur.fetchone() is not None
        finally:
            conn.close()

    def up(self) -> None:
        if self.is_up():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.dir / "userlist.txt", self.userlist())
        self.ini.write_text(_INI.format(db=L.DB_NAME, primary=L.PRIMARY_PORT,
                                        port=L.PGBOUNCER_PORT,
                                        userlist=self.dir / "userlist.txt",
                                        pidfile=self.pidfile, logfile=self.log))
        chown_tree(self.dir, L.PG_OS_USER)
        self.prepare_log(L.PG_OS_USER)
        run(["pgbouncer", "-d", str(self.ini)], component=self.name, user=L.PG_OS_USER,
            log=self.log)
        wait_until(self.answers, deadline_s=START_DEADLINE_S, component=self.name,
                   what="answering on its admin console", log=self.log,
                   gave_up=lambda: self.pidfile.exists() and pid_alive(self.pidfile) is None)

    def userlist(self) -> str:
        """pgbouncer's auth file: every role it serves with its verifier from the primary."""
        conn = self.primary.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                            (list(ROLES),))
                verifiers = dict(cur.fetchall())
        finally:
            conn.close()
        missing = [r for r in ROLES if not (verifiers.get(r) or "").startswith("SCRAM-SHA-256$")]
        if missing:
            raise SandboxError(self.name, "the primary has no SCRAM verifier for "
                               f"{', '.join(missing)} (password_encryption is not scram?)")
        return "".join(f'"{role}" "{verifiers[role]}"\n' for role in ROLES)

    def down(self) -> None:
        stop_pid(self.pidfile, component=self.name)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "address": "127.0.0.1", "port": L.PGBOUNCER_PORT,
                "pid": pid_alive(self.pidfile)}

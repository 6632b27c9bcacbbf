"""The sandbox's PostgreSQL primary and its streaming standby (run as a non-root OS user).

The primary is initialised once: roles with generated passwords, the ``app``
database owned by ``fdt_admin``, then the sample repository's baseline schema
and permissions at its first revision. The standby is a ``pg_basebackup`` of
it, streaming as ``standby1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2

from orchestrator.sandbox import layout as L
from orchestrator.sandbox.component import Component, Context, write_private
from orchestrator.sandbox.procs import chown_tree, pid_alive, port_open, run, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")
STANDBY_NAME = "standby1"
START_DEADLINE_S = 60

_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket}'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
hot_standby = on
hot_standby_feedback = on
wal_keep_size = '256MB'
max_connections = 200
logging_collector = off
log_line_prefix = '%m [%p] %u@%d '
log_timezone = 'UTC'
log_min_duration_statement = 100
log_checkpoints = on
"""

_HBA = """
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication replicator 127.0.0.1/32 scram-sha-256
"""


class _Server(Component):
    port: int
    datadir: Path

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.socket = ctx.layout.base / "pg" / f"run-{self.name}"
        self.log = ctx.layout.logs / f"{self.name}.log"

    def ports(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.port)]

    def pid(self) -> int | None:
        return pid_alive(self.datadir / "postmaster.pid")

    def is_up(self) -> bool:
        return self.pid() is not None and port_open("127.0.0.1", self.port)

    def start(self) -> None:
        self.socket.mkdir(parents=True, exist_ok=True)
        chown_tree(self.socket, L.PG_OS_USER)
        self.prepare_log(L.PG_OS_USER)
        run([str(PG_BIN / "pg_ctl"), "start", "-D", str(self.datadir), "-l", str(self.log),
             "-w", "-t", str(START_DEADLINE_S)], component=self.name, user=L.PG_OS_USER,
            log=self.log, timeout=START_DEADLINE_S + 5)

    def down(self) -> None:
        if self.pid() is not None:
            run([str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w"],
                component=self.name, user=L.PG_OS_USER, log=self.log)

    def connect(self, user: str = "postgres", dbname: str = "postgres") -> Any:
        """A superuser (or ``user``) connection over the server's unix socket."""
        return psycopg2.connect(host=str(self.socket), port=self.port, user=user, dbname=dbname)

    def status(self) -> dict[str, Any]:
        return {**super().status(), "address": "127.0.0.1", "port": self.port,
                "pid": self.pid(), "datadir": str(self.datadir)}


class Primary(_Server):
    """The primary: initdb, configure, start, create roles, database and baseline."""

    name = "primary"

    def __init__(self, ctx: Context, baseline: list[str], rows: int | None = None) -> None:
        self.port = L.PRIMARY_PORT
        self.datadir = ctx.layout.primary_dir
        self.baseline = baseline
        self.rows = rows
        super().__init__(ctx)

    def up(self) -> None:
        if not self.is_up():
            if not (self.datadir / "PG_VERSION").exists():
                self._initdb()
            self.start()
            marker = self.datadir / "fastdowntime-sandbox-initialised"
            if not marker.exists():
                self._initialise()
                marker.write_text("roles, database and baseline created\n")
        if self.rows:
            seed_items(self.connect("postgres", L.DB_NAME), self.rows)

    def _initdb(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        chown_tree(self.datadir.parent, L.PG_OS_USER)
        self.datadir.chmod(0o700)
        run([str(PG_BIN / "initdb"), "-D", str(self.datadir), "-U", "postgres", "-E", "UTF8",
             "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256"],
            component=self.name, user=L.PG_OS_USER, log=self.log)
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(_SETTINGS.format(port=self.port, socket=self.socket))
        (self.datadir / "pg_hba.conf").write_text(_HBA)

    def _initialise(self) -> None:
        pw = self.ctx.passwords
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER ROLE postgres PASSWORD %s", (pw["postgres"],))
            cur.execute("CREATE ROLE fdt_admin LOGIN CREATEROLE PASSWORD %s", (pw["fdt_admin"],))
            cur.execute("GRANT pg_monitor, pg_signal_backend TO fdt_admin")
            cur.execute("CREATE ROLE app LOGIN PASSWORD %s", (pw["app"],))
            cur.execute("CREATE ROLE fragile LOGIN PASSWORD %s", (pw["fragile"],))
            cur.execute("CREATE ROLE replicator LOGIN REPLICATION PASSWORD %s",
                        (pw["replicator"],))
            cur.execute("CREATE ROLE pgbouncer_admin LOGIN PASSWORD %s",
                        (pw["pgbouncer_admin"],))
            cur.execute(f"CREATE DATABASE {L.DB_NAME} OWNER fdt_admin")
        conn.close()
        with self.connect("fdt_admin", L.DB_NAME) as conn, conn.cursor() as cur:
            for sql in self.baseline:
                cur.execute(sql)
        conn.close()


class Standby(_Server):
    """A streaming standby made with pg_basebackup from the primary."""

    name = "standby"

    def __init__(self, ctx: Context, primary: Primary) -> None:
        self.port = L.STANDBY_PORT
        self.datadir = ctx.layout.standby_dir
        self.primary = primary
        super().__init__(ctx)
        self.passfile = ctx.layout.base / "pg" / "replicator.pgpass"

    def up(self) -> None:
        if self.is_up():
            return
        if not (self.datadir / "PG_VERSION").exists():
            self._basebackup()
        self.start()
        wait_until(self.streaming, deadline_s=START_DEADLINE_S, component=self.name,
                   what="streaming from the primary", log=self.log)
        # a standby that has replayed no commit yet has no replay timestamp, and a
        # preflight right after `sandbox up` would see an unknown lag: commit a
        # transaction with an xid on the primary and wait for the standby to replay it
        with self.primary.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_current_xact_id()")
        conn.close()
        wait_until(self.caught_up, deadline_s=START_DEADLINE_S, component=self.name,
                   what="caught up with the primary", log=self.log)

    def _basebackup(self) -> None:
        write_private(self.passfile, self.ctx.pgpass_line(L.PRIMARY_PORT, "replicator"))
        chown_tree(self.datadir.parent, L.PG_OS_USER)
        run(["env", f"PGPASSFILE={self.passfile}", str(PG_BIN / "pg_basebackup"),
             "-h", "127.0.0.1", "-p", str(L.PRIMARY_PORT), "-U", "replicator",
             "-D", str(self.datadir), "-X", "stream", "-c", "fast", "-w"],
            component=self.name, user=L.PG_OS_USER, log=self.log)
        conninfo = (f"host=127.0.0.1 port={L.PRIMARY_PORT} user=replicator "
                    f"passfile={self.passfile} application_name={STANDBY_NAME}")
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nunix_socket_directories = '{self.socket}'\n"
                       f"primary_conninfo = '{conninfo}'\n")
        (self.datadir / "standby.signal").touch()
        chown_tree(self.datadir, L.PG_OS_USER)

    def streaming(self) -> bool:
        """True when the primary reports this standby as streaming."""
        try:
            with self.primary.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT state FROM pg_stat_replication WHERE application_name = %s",
                            (STANDBY_NAME,))
                row = cur.fetchone()
            conn.close()
        except psycopg2.OperationalError:
            return False
        return row is not None and row[0] == "streaming"

    def caught_up(self) -> bool:
        """True when this standby has replayed everything the primary has written, and
        has replayed a transaction (so its replay timestamp is known)."""
        with self.primary.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()")
            target = cur.fetchone()[0]
        conn.close()
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn "
                        "AND pg_last_xact_replay_timestamp() IS NOT NULL", (target,))
            done = bool(cur.fetchone()[0])
        conn.close()
        return done

    def status(self) -> dict[str, Any]:
        up = self.is_up()
        return {**super().status(), "streaming": up and self.streaming()}


def seed_items(conn: Any, rows: int) -> int:
    """Top the sample application's ``item`` table up to ``rows`` rows, generated in the
    database (one INSERT ... SELECT over generate_series), so a cold patch that reads every
    row takes seconds. Never deletes; returns how many rows it added.

    Then VACUUM (ANALYZE) and a CHECKPOINT, as a long-lived table would be: without them
    the first scan after the load sets every row's hint bits (writing each page again) and
    the load's checkpoint lands later: a rehearsal on 4 million fresh rows took 1.58 s for
    a patch that took 1.18 s once the table was vacuumed."""
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM item")
            (have,) = cur.fetchone()
            missing = max(0, rows - int(have))
            if missing:
                cur.execute("INSERT INTO item (name, created) "
                            "SELECT 'seeded item ' || g, now() - g * interval '1 second' "
                            "FROM generate_series(1, %s) AS g", (missing,))
                cur.execute("VACUUM (ANALYZE) item")
                cur.execute("CHECKPOINT")
        return missing
    finally:
        conn.close()

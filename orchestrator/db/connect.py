"""Connections to the primary, the standbys and pgbouncer's admin console.

Passwords come from the environment (PGPASSWORD) or a pgpass file
(``[database] passfile``, else libpq's ``~/.pgpass``); never from the config.
A failure to connect raises :class:`DatabaseUnreachable` naming host, port,
database and user, and never a password.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import psycopg2
import psycopg2.extensions

from orchestrator.config import DatabaseSettings, check_private_file
from orchestrator.errors import Refused

Connection: TypeAlias = psycopg2.extensions.connection

KEEPALIVE = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2",
             "keepalives_count": "3", "tcp_user_timeout": "10000"}
"""Every connection notices a dead peer: TCP keepalives after 5 s idle (3 probes 2 s apart),
and unacknowledged data gives up after 10 s. A long statement sends nothing and is not cut;
a connection lost mid-window no longer hangs the run until the kernel's two hours."""
CHECK_STATEMENT_TIMEOUT_S = 30.0
"""``statement_timeout`` of read-only (preflight, dry run) and lock sessions: a check that
waits on a lock or a slow catalog never holds a release manager for ever."""


class DatabaseUnreachable(Refused):
    """The database could not be reached or refused the login (exit 3: nothing was touched)."""

    def __init__(self, what: str, params: dict[str, str], reason: str) -> None:
        self.params = {k: v for k, v in params.items() if k != "password"}
        where = (f"{self.params.get('host', 'local socket')}:{self.params.get('port', '5432')}"
                 f" database {self.params.get('dbname', '?')} as {self.params.get('user', '?')}")
        self.reason = reason
        super().__init__(f"{what} ({where}): {reason}")


def connect(settings: DatabaseSettings, dsn: str | None = None, *, what: str = "database",
            autocommit: bool = False, application_name: str = "fastdowntime",
            readonly: bool = False, statement_timeout_s: float | None = None) -> Connection:
    """A connection to ``dsn`` (default: the primary's) with the settings' passfile and timeout.

    ``readonly`` makes every transaction of the session read-only (dry runs,
    preflight) and bounds each statement by :data:`CHECK_STATEMENT_TIMEOUT_S`
    (or ``statement_timeout_s``). Every connection has TCP keepalives and a
    user timeout (:data:`KEEPALIVE`). The error of a failed connection never
    contains a password.
    """
    target = dsn or settings.dsn
    params = dict(psycopg2.extensions.parse_dsn(target))
    extra: dict[str, str] = {"connect_timeout": str(max(1, round(settings.connect_timeout_s)))}
    extra.update((k, v) for k, v in KEEPALIVE.items() if k not in params)
    if readonly and statement_timeout_s is None:
        statement_timeout_s = CHECK_STATEMENT_TIMEOUT_S
    options = params.get("options", "")
    if readonly:
        options += " -c default_transaction_read_only=on"
    if statement_timeout_s is not None:
        options += f" -c statement_timeout={round(statement_timeout_s * 1000)}"
    if options.strip():
        extra["options"] = options.strip()
    if settings.passfile and "passfile" not in params:
        check_private_file(settings.passfile, "database.passfile")
        extra["passfile"] = settings.passfile
    if "application_name" not in params:
        extra["application_name"] = application_name
    try:
        conn = psycopg2.connect(psycopg2.extensions.make_dsn(target, **extra))
    except psycopg2.OperationalError as exc:
        reason = " ".join(str(exc).split())
        password = _password(params)
        if password:
            reason = reason.replace(password, "***")
        raise DatabaseUnreachable(what, params, reason) from None
    conn.autocommit = autocommit
    return conn


def _password(params: dict[str, str]) -> str | None:
    import os

    return params.get("password") or os.environ.get("PGPASSWORD")


def admin_console(settings: DatabaseSettings) -> Connection:
    """pgbouncer's admin console (``[database] pgbouncer_admin_dsn``), in autocommit."""
    if not settings.pgbouncer_admin_dsn:
        raise Refused("no [database] pgbouncer_admin_dsn configured")
    return connect(settings, settings.pgbouncer_admin_dsn, what="pgbouncer admin console",
                   autocommit=True)


def fresh_rows(conn: Connection, sql: str,
               params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` as of now: in autocommit, in a transaction of its own, or on a new
    statistics snapshot inside the caller's transaction (pg_stat_* views are snapshots)."""
    began = (not conn.autocommit
             and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE)
    try:
        with conn.cursor() as cur:
            if not conn.autocommit and not began:
                cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
    finally:
        if began:
            conn.rollback()

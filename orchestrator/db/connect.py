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

from orchestrator.config import DatabaseSettings
from orchestrator.errors import Refused

Connection: TypeAlias = psycopg2.extensions.connection


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
            readonly: bool = False) -> Connection:
    """A connection to ``dsn`` (default: the primary's) with the settings' passfile and timeout.

    ``readonly`` makes every transaction of the session read-only (dry runs,
    preflight). The error of a failed connection never contains a password.
    """
    target = dsn or settings.dsn
    params = dict(psycopg2.extensions.parse_dsn(target))
    extra: dict[str, str] = {"connect_timeout": str(max(1, round(settings.connect_timeout_s)))}
    if settings.passfile and "passfile" not in params:
        extra["passfile"] = settings.passfile
    if "application_name" not in params:
        extra["application_name"] = application_name
    if readonly:
        extra["options"] = (params.get("options", "") +
                            " -c default_transaction_read_only=on").strip()
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

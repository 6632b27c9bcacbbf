"""Shared fixtures: the real sandbox for integration and e2e tests.

The ``sandbox`` fixture brings the embedded sandbox up once per test session
(a no-op when it already runs). Tests leave the machine as they found it:
whatever brought the sandbox up during the session (this fixture, or an e2e
test that rebuilds it), it is taken down at the end unless it existed before
the session started. Tests that change its state put it back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.config import DatabaseSettings
from orchestrator.sandbox import manager
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import Layout, sandbox_dir

_FOUND: dict[str, bool] = {}
"""Whether a sandbox existed when the session started (``"sandbox"``)."""


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remember whether the machine had a sandbox before any test ran."""
    _FOUND["sandbox"] = sandbox_dir().exists()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Take down a sandbox this session brought up, whichever test did."""
    if not _FOUND.get("sandbox", True) and sandbox_dir().exists():
        manager.down()


@pytest.fixture(scope="session")
def sandbox_layout() -> Iterator[Layout]:
    """Bring the sandbox up once per session (see :func:`pytest_sessionfinish` for down)."""
    yield manager.up()


@pytest.fixture
def sandbox(sandbox_layout: Layout) -> Context:
    """The running sandbox: its layout and (read afresh) its database passwords."""
    return Context.load(sandbox_layout)


@pytest.fixture
def scratch_db(sandbox: Context) -> Iterator[DatabaseSettings]:
    """A fresh database on the sandbox primary, owned by fdt_admin, with a revision table.

    Yields the sandbox's database settings pointed at it (primary and standby);
    the database is dropped afterwards, whatever the test left connected.
    """
    import dataclasses
    import secrets

    import psycopg2

    from orchestrator.config import load_config
    from orchestrator.sandbox.layout import PRIMARY_PORT, PROJECT_ROOT, STANDBY_PORT

    name = f"fdt_scratch_{secrets.token_hex(4)}"
    admin = psycopg2.connect(host="127.0.0.1", port=PRIMARY_PORT, user="postgres",
                             dbname="postgres", password=sandbox.passwords["postgres"])
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} OWNER fdt_admin")
    settings = load_config(PROJECT_ROOT / "config" / "sandbox.toml").database
    assert settings is not None
    settings = dataclasses.replace(
        settings, dsn=f"host=127.0.0.1 port={PRIMARY_PORT} dbname={name} user=fdt_admin",
        standby_dsns=(f"host=127.0.0.1 port={STANDBY_PORT} dbname={name} user=fdt_admin",),
        passfile=str(sandbox.layout.pgpass))
    conn = psycopg2.connect(settings.dsn, passfile=settings.passfile)
    with conn, conn.cursor() as cur:
        cur.execute(SCRATCH_BASELINE)
    conn.close()
    try:
        yield settings
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


SCRATCH_BASELINE = """
CREATE TABLE LaunchpadDatabaseRevision (
    major integer NOT NULL, minor integer NOT NULL, patch integer NOT NULL,
    start_time timestamp without time zone DEFAULT (now() AT TIME ZONE 'UTC'),
    end_time timestamp without time zone,
    PRIMARY KEY (major, minor, patch));
INSERT INTO LaunchpadDatabaseRevision VALUES (2200, 0, 0);
CREATE TABLE item (id serial PRIMARY KEY, name text NOT NULL);
INSERT INTO item (name) SELECT 'item ' || i FROM generate_series(1, 1000) i;
"""

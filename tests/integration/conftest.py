"""Fixtures the integration tests share: the sandbox's config, SSH to its hosts, and the
orchestrator's own connection to the primary (for a module's ``settings`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.config import Config, DatabaseSettings, load_config
from orchestrator.db.connect import Connection, connect
from orchestrator.remote.ssh import Remote
from orchestrator.sandbox.component import Context
from orchestrator.sandbox.layout import PROJECT_ROOT


@pytest.fixture
def config(sandbox: Context) -> Config:
    """``config/sandbox.toml``, once the sandbox is up."""
    return load_config(PROJECT_ROOT / "config" / "sandbox.toml")


@pytest.fixture
def remote(config: Config) -> Iterator[Remote]:
    """SSH to the sandbox's hosts for one test; every connection closed after it."""
    with Remote(config) as remote:
        yield remote


@pytest.fixture
def primary(settings: DatabaseSettings) -> Iterator[Connection]:
    """The orchestrator's own connection to the primary (autocommit), made from the
    requesting module's ``settings`` fixture."""
    conn = connect(settings, autocommit=True)
    yield conn
    conn.close()

"""Fixtures the integration tests share: the sandbox's config, and SSH to its hosts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.config import Config, load_config
from orchestrator.remote.ssh import Remote
from orchestrator.sandbox.base import Context
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

"""Shared fixtures: the real sandbox for integration and e2e tests.

The ``sandbox`` fixture brings the embedded sandbox up once per test session
(a no-op when it already runs) and takes it down at the end only when this
session started it. Tests that change its state put it back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator.sandbox import manager
from orchestrator.sandbox.base import Context
from orchestrator.sandbox.layout import Layout


def _all_up() -> bool:
    components = manager.status()["components"]
    return bool(components) and all(c["state"] == "up" for c in components.values())


@pytest.fixture(scope="session")
def sandbox_layout() -> Iterator[Layout]:
    """Bring the sandbox up once per session; down at the end if this session started it."""
    started = not _all_up()
    layout = manager.up()
    yield layout
    if started:
        manager.down()


@pytest.fixture
def sandbox(sandbox_layout: Layout) -> Context:
    """The running sandbox: its layout and (read afresh) its database passwords."""
    return Context.load(sandbox_layout)

"""What a command loads before it acts: its config file and, when it needs them, its hosts."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.config import Config, load_config
from orchestrator.errors import BadInput

DEFAULT_CONFIG = Path("config/sandbox.toml")
CONFIG_ENV = "FASTDOWNTIME_CONFIG"
"""The environment variable naming the config file when ``-c`` is not given."""


def load(args: argparse.Namespace, *, required: bool = True) -> Config:
    """The config named by ``-c``, else by ``$FASTDOWNTIME_CONFIG`` (when set and not
    empty), else ``config/sandbox.toml`` when present.

    A file named by ``-c`` or the variable must exist. With ``required=False``
    (commands that work on a laptop with flags alone) a missing default file
    gives the built-in defaults instead of an error.
    """
    path = getattr(args, "config", None)
    if path is not None:
        return load_config(path)
    named = os.environ.get(CONFIG_ENV)
    if named:
        if not Path(named).exists():
            raise BadInput(f"{named}: no such file (named by ${CONFIG_ENV})", key=CONFIG_ENV)
        return load_config(named)
    if DEFAULT_CONFIG.exists() or required:
        return load_config(DEFAULT_CONFIG)
    return load_config(None)


@contextlib.contextmanager
def hosts(config: Config, needed: bool = True) -> Iterator[Any]:
    """SSH to the config's hosts for one command (None when not needed or not configured)."""
    if not needed or config.ssh is None or not config.hosts:
        yield None
        return
    from orchestrator.runner.preflight import connect_hosts

    with connect_hosts(config) as remote:
        yield remote


__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG", "hosts", "load"]

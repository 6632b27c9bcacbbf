"""``sandbox up|down|status``: the embedded local staging (SPEC section 6)."""

from __future__ import annotations

import argparse

from rich.console import Console

from orchestrator.commands.loading import DEFAULT_CONFIG
from orchestrator.commands.output import emit, out, wants_json
from orchestrator.errors import BadInput, ExitCode


def cmd_sandbox(args: argparse.Namespace) -> int:
    """``sandbox up [--hosts N] [--rows N] | down | status [--json]``.

    ``--json``: for ``up`` ``{"action", "sandbox", "app_hosts", "config"}``, for ``down``
    ``{"action", "sandbox", "removed"}``, for ``status`` every component's state.
    """
    from orchestrator.sandbox import manager
    from orchestrator.sandbox.layout import MAX_APP_HOSTS, MAX_ROWS, sandbox_dir

    if args.hosts is not None and not 1 <= args.hosts <= MAX_APP_HOSTS:
        raise BadInput(f"sandbox up --hosts: must be between 1 and {MAX_APP_HOSTS}",
                       key="--hosts")
    if args.rows is not None and not 0 <= args.rows <= MAX_ROWS:
        raise BadInput(f"sandbox up --rows: must be between 0 and {MAX_ROWS:,}", key="--rows")
    if args.action == "up":
        layout = manager.up(args.hosts, args.rows)
        config = DEFAULT_CONFIG if layout.app_hosts == 4 else layout.base / "sandbox.toml"
        if wants_json(args):
            emit({"action": "up", "sandbox": str(layout.base), "app_hosts": layout.app_hosts,
                  "config": str(config)})
        else:
            out(f"sandbox up: {layout.app_hosts} app hosts under {layout.base}")
            out(f"config: {config}")
        return ExitCode.OK
    if args.action == "down":
        removed = manager.down()
        if wants_json(args):
            emit({"action": "down", "sandbox": str(sandbox_dir()), "removed": removed})
        else:
            out("sandbox down" if removed else "no sandbox to take down")
        return ExitCode.OK
    state = manager.status()
    if wants_json(args):
        emit(state, sort_keys=True)
    else:
        from orchestrator.views.text import print_sandbox_status

        print_sandbox_status(state, Console())
    components = state["components"]
    all_up = bool(components) and all(c["state"] == "up" for c in components.values())
    return ExitCode.OK if all_up else ExitCode.FAILED_BEFORE_COMMIT


__all__ = ["cmd_sandbox"]

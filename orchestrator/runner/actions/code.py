"""Actions on the code and the scripts: stage, switch ``current``, stop and start the
fragile scripts, check that none of their connections is left."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import FailedBeforeCommit
from orchestrator.remote import operations as ops
from orchestrator.runner.actions.base import Action, _failed, _lines, action
from orchestrator.runner.context import Run


@dataclass(frozen=True)
class RolesParams:
    roles: tuple[str, ...] = ("app", "scripts")


def _role_hosts(run: Run, roles: tuple[str, ...]) -> list[Any]:
    """The hosts of ``roles``, role by role in config order."""
    return [h for role in roles for h in run.config.role(role)]


def _has_scripts(run: Run) -> bool:
    """True when the config has scripts to stop and start, and hosts to run them."""
    return run.config.scripts is not None and bool(run.config.role("scripts"))


@action
class StageCode(Action):
    """Ship the stage's release to every host of ``roles`` (``releases/<sha>``)."""

    name = "stage_code"
    Params = RolesParams

    def hosts(self, run: Run) -> list[Any]:
        return _role_hosts(run, self.params.roles)

    def do(self, run: Run) -> dict[str, Any]:
        result = ops.stage(run.remote, run.config, run.config.source.repo, run.release,
                           self.hosts(run))
        _failed(result, f"staging {run.release[:12]}")
        return {"release": run.release, "hosts": [r.host for r in result.results]}

    def render(self, run: Run) -> list[str]:
        return _lines(ops.render_stage(run.config, run.config.source.repo, run.release,
                                       self.hosts(run)), run)


@action
class SwitchCurrent(Action):
    """Point ``current`` at the stage's release on every host of ``roles`` (atomic)."""

    name = "switch_current"
    Params = RolesParams

    def hosts(self, run: Run) -> list[Any]:
        return _role_hosts(run, self.params.roles)

    def do(self, run: Run) -> dict[str, Any]:
        _failed(ops.switch(run.remote, run.config, run.release, self.hosts(run)),
                f"switching current to {run.release[:12]}")
        return {"release": run.release}

    def undo(self, run: Run) -> None:
        _failed(ops.switch(run.remote, run.config, run.previous, self.hosts(run)),
                f"switching current back to {run.previous[:12]}")

    def render(self, run: Run) -> list[str]:
        return _lines(ops.render_switch(run.config, run.release, self.hosts(run)), run)


# --- scripts -------------------------------------------------------------------------------


@action
class StopScripts(Action):
    """Stop the fragile scripts gracefully (before the window, never inside it)."""

    name = "stop_scripts"

    def do(self, run: Run) -> dict[str, Any]:
        if not _has_scripts(run):
            return {"skipped": "no scripts configured"}
        _failed(ops.stop_scripts(run.remote, run.config), "stopping the scripts")
        return {}

    def undo(self, run: Run) -> None:
        if _has_scripts(run):
            _failed(ops.start_scripts(run.remote, run.config), "restarting the scripts")

    def render(self, run: Run) -> list[str]:
        if not _has_scripts(run):
            return []
        return _lines(ops.render_stop_scripts(run.config), run)


@action
class StartScripts(Action):
    """Start the scripts on ``current`` (after the window, or after a nodowntime switch)."""

    name = "start_scripts"

    def do(self, run: Run) -> dict[str, Any]:
        if not _has_scripts(run):
            return {"skipped": "no scripts configured"}
        _failed(ops.start_scripts(run.remote, run.config), "starting the scripts")
        return {}

    def render(self, run: Run) -> list[str]:
        if not _has_scripts(run):
            return []
        return _lines(ops.render_start_scripts(run.config), run)


@action
class CheckFragile(Action):
    """Refuse to go on while a fragile user is still connected (the scripts should be off)."""

    name = "check_fragile"

    def do(self, run: Run) -> dict[str, Any]:
        from orchestrator.db.connect import connect

        settings = run.config.need("database")
        conn = connect(settings, readonly=True, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pid, usename FROM pg_stat_activity WHERE usename = ANY(%s)",
                            (list(settings.fragile_users),))
                rows = cur.fetchall()
        finally:
            conn.close()
        if rows:
            listed = ", ".join(f"{user} (pid {pid})" for pid, user in rows)
            raise FailedBeforeCommit(f"fragile connections remain after stopping the "
                                     f"scripts: {listed}")
        return {}

    def render(self, run: Run) -> list[str]:
        return ["primary: SELECT pid, usename FROM pg_stat_activity WHERE usename = ANY(...)"]

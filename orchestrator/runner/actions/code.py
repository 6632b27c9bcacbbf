"""Actions on the code and the scripts: stage, switch ``current``, stop and start the
fragile scripts, check that none of their connections is left."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import FailedBeforeCommit
from orchestrator.remote import operations as ops
from orchestrator.runner.actions.base import Action, action
from orchestrator.runner.actions.script import (
    Answers,
    Fail,
    If,
    Note,
    Script,
    Sql,
    Ssh,
    When,
)
from orchestrator.runner.context import Run

NO_SCRIPTS = "no scripts configured"


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

    def script(self, run: Run) -> Script:
        return (Ssh(ops.staging(run.config, run.config.repository, run.release,
                                self.hosts(run)),
                    fails=f"staging {run.release[:12]}", key="staged"),)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"release": run.release, "hosts": [r.host for r in answers["staged"].results]}


@action
class SwitchCurrent(Action):
    """Point ``current`` at the stage's release on every host of ``roles`` (atomic)."""

    name = "switch_current"
    Params = RolesParams

    def hosts(self, run: Run) -> list[Any]:
        return _role_hosts(run, self.params.roles)

    def script(self, run: Run) -> Script:
        return (Ssh(ops.switch_commands(run.config, run.release, self.hosts(run)),
                    fails=f"switching current to {run.release[:12]}"),)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {"release": run.release}

    def undo_script(self, run: Run) -> Script:
        return (Ssh(ops.switch_commands(run.config, run.previous, self.hosts(run)),
                    fails=f"switching current back to {run.previous[:12]}"),)


# --- scripts -------------------------------------------------------------------------------


@action
class StopScripts(Action):
    """Stop the fragile scripts gracefully (before the window, never inside it)."""

    name = "stop_scripts"

    def script(self, run: Run) -> Script:
        if not _has_scripts(run):
            return (Note(NO_SCRIPTS),)
        return (Ssh(ops.scripts_stop_commands(run.config), fails="stopping the scripts"),)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {} if _has_scripts(run) else {"skipped": NO_SCRIPTS}

    def undo_script(self, run: Run) -> Script:
        if not _has_scripts(run):
            return ()
        return (Ssh(ops.scripts_start_commands(run.config), fails="restarting the scripts"),)


@action
class StartScripts(Action):
    """Start the scripts on ``current`` (after the window, or after a nodowntime switch)."""

    name = "start_scripts"

    def script(self, run: Run) -> Script:
        if not _has_scripts(run):
            return (Note(NO_SCRIPTS),)
        return (Ssh(ops.scripts_start_commands(run.config), fails="starting the scripts"),)

    def outcome(self, run: Run, answers: Answers) -> dict[str, Any]:
        return {} if _has_scripts(run) else {"skipped": NO_SCRIPTS}


FRAGILE = "SELECT pid, usename FROM pg_stat_activity WHERE usename = ANY(%s)"
"""The fragile users' connections ([database] fragile_users as the parameter)."""


def _fragile(run: Run, answers: Answers) -> list[tuple[Any, ...]]:
    from orchestrator.db.connect import connect

    settings = run.config.need("database")
    conn = connect(settings, readonly=True, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(FRAGILE, (list(settings.fragile_users),))
            return list(cur.fetchall())
    finally:
        conn.close()


@action
class CheckFragile(Action):
    """Refuse to go on while a fragile user is still connected (the scripts should be off)."""

    name = "check_fragile"

    def script(self, run: Run) -> Script:
        return (Sql(lambda run: (f"primary: {FRAGILE} -- %s: "
                                 f"{list(run.config.need('database').fragile_users)}",),
                    _fragile, key="fragile"),
                If(When("a fragile user is still connected",
                        lambda run, answers: bool(answers["fragile"])),
                   (Fail("fragile connections remain after stopping the scripts",
                         lambda run, answers: "fragile connections remain after stopping the "
                         "scripts: " + ", ".join(f"{user} (pid {pid})"
                                                 for pid, user in answers["fragile"]),
                         FailedBeforeCommit),)))

"""``rollback [--to RELEASE]``: code only, back to a release every host still keeps.

Host by host behind haproxy, exactly as nodowntime rolls forward (the ``rollback``
playbook), journaled and probed like any run, under the deploy lock. The database is
never touched, so the release must work on the schema the hosts run against. By the
both-schemas rule the release that served just before the last window does, and so does
every release after it; an older one may not. Refused, naming the reason:

- the release is the one the hosts run (nothing to roll back);
- its revision is not an ancestor of the deployed one (that would be a deploy);
- it is older than the release that served just before the last window (its run record
  in the database says which);
- a host no longer keeps it (``[app] keep_releases``), naming the hosts.

Without ``--to``: the newest release every host keeps, other than the deployed one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.config import Config
from orchestrator.errors import BadInput, FailedBeforeCommit, Refused
from orchestrator.history import git
from orchestrator.plan import Plan
from orchestrator.runner.deploy import Options, execute
from orchestrator.runner.outcome import Outcome
from orchestrator.runner.planning import refreshed


def rollback(config: Config, to: str | None = None, *, yes: bool = False,
             ask: Callable[[str], str] = input, show: Callable[[str], None] = print,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Roll the code back; return the run summary (raises the outcome's error)."""
    from orchestrator.db.connect import connect
    from orchestrator.db.lock import DeployLock, last_window_from, new_run_id, whoami
    from orchestrator.remote import operations as ops
    from orchestrator.remote.ssh import Remote

    settings = config.need("database")
    config.need("app")
    config.need("lb")
    config = refreshed(config, show)  # a deploy from elsewhere may have fetched them
    repo = config.repository
    with Remote(config) as remote:
        current = ops.agreed_revision(remote, config)
        hosts = [*config.role("app"), *config.role("scripts")]
        kept = ops.kept_releases(remote, config, hosts)
        target = (git.resolve(repo, to, what="rollback --to") if to is not None
                  else _previous(kept, current))
        conn = connect(settings, what="primary", readonly=True, autocommit=True)
        try:
            floor = last_window_from(conn)
        finally:
            conn.close()
        check(repo, current, target, floor, kept)
        if not yes:
            answer = ask(f"roll the code back from {current[:12]} to {target[:12]} on "
                         f"{len(config.role('app'))} app hosts? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise FailedBeforeCommit("not confirmed: nothing was changed")
        run_id = new_run_id()
        plan = Plan.empty(current, target)
        lock = DeployLock(settings, run_id, whoami(), {**plan.to_json(), "rollback": True}, [])
        lock.acquire()
        try:
            return execute(config, plan, {}, remote, Options(stage="rollback", yes=True),
                           run_id, lock, {}, progress, None)
        finally:
            lock.finish(Outcome.FAILED, "the orchestrator stopped before recording an outcome")


def _previous(kept: dict[str, list[str]], current: str) -> str:
    """The newest release every host keeps, other than ``current``."""
    hosts = list(kept.values())
    common = [sha for sha in hosts[0] if sha != current and all(sha in h for h in hosts)]
    if not common:
        raise Refused(f"no release besides {current[:12]} is kept on every host: nothing to "
                      "roll back to ([app] keep_releases)")
    return common[0]


def check(repo: str, current: str, target: str, floor: tuple[str, str] | None,
          kept: dict[str, list[str]]) -> None:
    """Refuse a rollback to ``target`` from ``current`` (see the module), naming why."""
    if target == current:
        raise BadInput(f"the hosts run {current[:12]} already: nothing to roll back")
    if not git.is_ancestor(repo, target, current):
        raise Refused(f"{target[:12]} is not an ancestor of the deployed {current[:12]}: "
                      "that is a deploy (`fastdowntime deploy --to REV`), not a rollback")
    if floor is not None:
        run_id, before = floor
        if before != target and not git.is_ancestor(repo, before, target):
            raise Refused(f"{target[:12]} is older than {before[:12]}, which served just "
                          f"before the last window (run {run_id}): it may not work on the "
                          f"schema now; roll back no further than {before[:12]}")
    missing = sorted(host for host, shas in kept.items() if target not in shas)
    if missing:
        raise Refused(f"{target[:12]} is no longer kept on {', '.join(missing)} "
                      "([app] keep_releases): deploy it instead")


__all__ = ["check", "rollback"]

"""``plan --sql``: the SQL a deploy of a plan sends to the primary, for a change board.

Offline: it reads the plan, the texts the plan carries (and the permissions file's, read
from git at the target), the config and the playbook; it connects nowhere. The window's
transaction is :func:`~orchestrator.db.cold.review_cold`, made from the one description
:func:`~orchestrator.db.cold.apply_cold` executes; each live patch is
:func:`~orchestrator.db.live.review_live`, made from what
:func:`~orchestrator.db.live.apply_live` sends. This module puts them in the order a deploy
runs them (the fastdowntime stage's live patches, the window, the nodowntime stage's live
patches), under comments saying what the SQL cannot: the plan, the deadline, the retries.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from orchestrator.config import Config, DatabaseSettings
from orchestrator.db.cold import review_cold
from orchestrator.db.live import review_live
from orchestrator.plan import Plan
from orchestrator.runner.actions.window import PERMISSIONS, ApplyColdPatches, cold_patches
from orchestrator.runner.playbook import load_playbook


def plan_sql(config: Config, plan: Plan, texts: Mapping[str, str],
             revision_table: str) -> list[str]:
    """The lines ``plan --sql`` prints for ``plan``: comments (``--``) and SQL that psql runs.

    ``texts`` holds every planned patch's text and, under
    :data:`~orchestrator.runner.actions.window.PERMISSIONS`, the permissions file's
    (:func:`~orchestrator.runner.deploy.read_texts`); ``revision_table`` is the one the
    plan's patches were analysed against. The window's deadline comes from ``[window]
    budget_s`` and the ``reserve_s`` of the playbook's ``apply_cold_patches`` step, the
    live patches' lock timeout and retries from ``[database]`` (its defaults without one).
    """
    lines = _header(config, plan, revision_table)
    if not plan.revisions:
        return [*lines, "", f"-- nothing to deploy: {plan.from_sha[:12]} is the target"]
    settings = config.database or DatabaseSettings(dsn="")
    if plan.cut is not None:
        lines += ["", f"-- ==== stage fastdowntime (up to the cut {plan.cut[:12]}): live "
                  "patches, online, before the window ===="]
        lines += _live(plan.fastdowntime_live_patches, plan, texts, settings, revision_table)
        lines += ["", "-- ==== stage fastdowntime: the window, one transaction ===="]
        lines += _window(config, plan, texts, revision_table)
    if plan.nodowntime_revisions:
        lines += ["", f"-- ==== stage nodowntime ({len(plan.nodowntime_revisions)} revisions "
                  "rolled out host by host): live patches, online, before the rollout ===="]
        lines += _live(plan.nodowntime_live_patches, plan, texts, settings, revision_table)
    return lines


def _header(config: Config, plan: Plan, revision_table: str) -> list[str]:
    permissions = config.source.permissions
    estimate = "no window"
    if plan.cut is not None:
        estimate = ("unknown (no rehearsal timings)" if plan.estimated_outage_s is None
                    else f"{plan.estimated_outage_s:.3f} s")
        if plan.estimate is not None:
            estimate = plan.estimate.describe()
    lines = [
        *_comment("fastdowntime plan --sql: what a deploy of this plan sends to the primary, "
                  "in order. Printed offline: nothing was connected to. psql -v "
                  "ON_ERROR_STOP=1 -f FILE runs it by hand (it keeps the database's clock "
                  "readings with \\gset); a deploy adds its retries, the window's deadline, "
                  "the connection control around the window and its run records."),
        f"-- branch    {plan.branch}",
        f"-- from      {plan.from_sha}",
        f"-- to        {plan.to_sha}",
        *([f"-- source    {plan.source.describe()}"]
          if plan.source is not None and plan.source.fetched is not None else []),
        f"-- cut       {plan.cut or 'none: no window, the whole range is a nodowntime deploy'}",
        f"-- estimated outage: {estimate}",
        f"-- revision table: {revision_table}",
        f"-- permissions: {permissions} at {plan.to_sha[:12]}" if permissions
        else "-- permissions: none ([source] permissions is not set)",
    ]
    if plan.violations:
        lines.append(f"-- {len(plan.violations)} violation(s): a deploy of this plan is refused")
        lines += [f"--   {v.describe()}" for v in plan.violations]
    return lines


def _live(names: Sequence[str], plan: Plan, texts: Mapping[str, str],
          settings: DatabaseSettings, revision_table: str) -> list[str]:
    if not names:
        return ["-- none"]
    lines = _comment(
        "Outside any transaction block: each statement is sent on its own after SET "
        f"lock_timeout ([database] lock_timeout_s {settings.lock_timeout_s:g} s); one "
        "PostgreSQL accepts in a transaction runs in its own, committed with the "
        "orchestrator's progress row, so a re-run resumes after it. A statement that waits "
        f"out lock_timeout is tried again, up to {settings.live_retries} more times, after "
        f"{settings.live_backoff_s:g} s, then twice as long each time; any other error stops "
        "the patch.")
    for name in names:
        lines += review_live(plan.reports[name], texts[name], revision_table=revision_table,
                             lock_timeout_s=settings.lock_timeout_s)
    return lines


def _window(config: Config, plan: Plan, texts: Mapping[str, str],
            revision_table: str) -> list[str]:
    playbook = load_playbook(config.runs.playbook)
    step = next((s for s in playbook.steps if isinstance(s.action, ApplyColdPatches)), None)
    if step is None:
        return [f"-- the playbook {playbook.name} ({playbook.path}) has no apply_cold_patches "
                "step: its window sends no transaction"]
    budget = config.window.budget_s
    reserve = step.action.params.reserve_s
    remaining = budget - reserve
    lines = _comment(
        f"The window opens (mode {config.window.mode}) and the database connections are held "
        "or cut; they come back after COMMIT, the commit point: before it any failure, the "
        f"deadline included, rolls everything back. The deadline: [window] budget_s "
        f"{budget:g} s from the window's opening, minus reserve_s {reserve:g} s of "
        f"apply_cold_patches (playbook {playbook.name}). Each statement is sent after SET "
        "LOCAL statement_timeout = what is left of the deadline. Offline the timeout shown "
        f"is the whole {remaining:g} s, what is left at the start: at run time each "
        "statement gets what is left when it is sent, less than shown. The revision-row "
        "checks and records run under the timeout set before them.")
    if remaining <= 0:
        lines += _comment("The budget leaves no time after reserve_s: the transaction would "
                          "fail at once.")
    return lines + review_cold(cold_patches(plan, texts), texts.get(PERMISSIONS),
                               revision_table, remaining)


def _comment(text: str) -> list[str]:
    """``text`` as SQL comment lines of a readable width."""
    return [f"-- {line}" for line in textwrap.wrap(text, 86, break_on_hyphens=False)]


__all__ = ["plan_sql"]

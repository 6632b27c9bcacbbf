"""The I/O side of planning: fetch the source, read git, then call the pure
:func:`orchestrator.plan.make_plan`.

A fixed number of git processes for the range whatever its length (three
``log`` at once, a ``diff-tree`` for merges whose own resolution touches a
patch, ``cat-file --batch``, ``ls-tree``), plus a few ``rev-parse`` to
resolve the ends, after at most one fetch (:func:`checked_out`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from orchestrator.config import Config
from orchestrator.errors import BadInput
from orchestrator.history import git, read_history, read_patch_texts
from orchestrator.history.checkout import Checkout, checkout
from orchestrator.plan import PathRules, Plan, make_plan


def rules_for(config: Config) -> PathRules:
    """The path rules of ``[source]`` and the revision table of ``[database]``."""
    table = config.database.revision_table if config.database else PathRules.revision_table
    return PathRules(config.source.patches, config.source.schema_files, table)


def checked_out(config: Config, *, fetch: bool = True) -> Config:
    """``config`` with its :attr:`~orchestrator.config.Config.checkout`: ``[source] repo``
    fetched (a URL into its mirror, a local repository's ``[source] fetch`` remote) and the
    branch's tip found. Every reader of git then reads ``config.repository``.

    Fetches once per command: a config already checked out comes back as it is.
    ``fetch=False`` (``rollback``, ``resume``: they read only revisions a deploy fetched)
    reads what the last fetch left, and fetches a URL only when it has no mirror yet.
    """
    if config.checkout is not None:
        return config
    source = config.source
    found = checkout(source.repo, source.branch, remote=source.fetch,
                     cache_dir=source.cache_dir, fetch=fetch, timeout_s=source.fetch_timeout_s)
    return dataclasses.replace(config, checkout=found)


def refreshed(config: Config, show: Callable[[str], None]) -> Config:
    """For ``rollback`` and ``resume``: ``config`` fetched as a plan would be, so that the
    revisions a deploy from another machine fetched are here too; when the fetch fails,
    what the last fetch left (said through ``show``): an emergency does not wait on the
    network, and a revision still missing is named by git where it is read."""
    try:
        return checked_out(config)
    except BadInput as exc:
        show(f"warning: {exc}; reading the repository as the last fetch left it")
        return checked_out(config, fetch=False)


def build_plan(repo: str, branch: str, from_rev: str, to_rev: str | None, rules: PathRules,
               timings: Mapping[tuple[str, str], float] | None = None, *,
               source: Checkout | None = None) -> Plan:
    """Read ``branch`` of ``repo`` in (``from_rev``, ``to_rev``] and plan it.

    ``timings`` (rehearsal seconds by (file name, checksum)) give the outage estimate.
    ``source``, the checkout ``repo`` is, gives the branch's tip (the default ``to_rev``)
    and goes with the plan.
    """
    history = read_history(repo, branch, from_rev, to_rev, patches=(rules.patches,),
                           tip=source.tip if source is not None else None)
    texts = read_patch_texts(history, rules.is_patch)
    tree = git.list_tree(repo, history.to_sha)
    plan = make_plan(history, texts, tree, rules)
    if source is not None:
        plan = dataclasses.replace(plan, source=source)
    return plan.with_timings(timings) if timings is not None else plan

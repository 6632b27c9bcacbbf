"""The I/O side of planning: read git, then call the pure :func:`orchestrator.plan.make_plan`.

A fixed number of git processes for the range whatever its length (three
``log`` at once, a ``diff-tree`` for merges whose own resolution touches a
patch, ``cat-file --batch``, ``ls-tree``), plus a few ``rev-parse`` to
resolve the ends.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.config import Config
from orchestrator.history import git, read_history, read_patch_texts
from orchestrator.plan import PathRules, Plan, make_plan


def rules_for(config: Config) -> PathRules:
    """The path rules of ``[source]`` and the revision table of ``[database]``."""
    table = config.database.revision_table if config.database else PathRules.revision_table
    return PathRules(config.source.patches, config.source.schema_files, table)


def build_plan(repo: str, branch: str, from_rev: str, to_rev: str | None, rules: PathRules,
               timings: Mapping[tuple[str, str], float] | None = None) -> Plan:
    """Read ``branch`` of ``repo`` in (``from_rev``, ``to_rev``] and plan it.

    ``timings`` (rehearsal seconds by (file name, checksum)) give the outage estimate.
    """
    history = read_history(repo, branch, from_rev, to_rev, patches=(rules.patches,))
    texts = read_patch_texts(history, rules.is_patch)
    tree = git.list_tree(repo, history.to_sha)
    plan = make_plan(history, texts, tree, rules)
    return plan.with_timings(timings) if timings is not None else plan

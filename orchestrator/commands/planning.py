"""``plan`` and ``patches``: the commands that work offline, with flags alone if need be."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console

from orchestrator.commands.loading import hosts, load
from orchestrator.commands.output import emit, wants_json
from orchestrator.config import Config
from orchestrator.errors import BadInput, ExitCode

if TYPE_CHECKING:
    from orchestrator.plan import PathRules


def path_rules(config: Config, args: argparse.Namespace) -> PathRules:
    """The config's ``[source]`` path rules and revision table, overridden by the flags."""
    from orchestrator.plan import PathRules
    from orchestrator.runner.planning import rules_for

    rules = rules_for(config)
    return PathRules(getattr(args, "patches_glob", None) or rules.patches,
                     tuple(getattr(args, "schema_files", None) or rules.schema_files),
                     getattr(args, "revision_table", None) or rules.revision_table)


def cmd_plan(args: argparse.Namespace) -> int:
    """``plan``: fetch the source, read db-stable, classify and cut it; print the plan.
    Changes nothing but the fetched refs (a URL's mirror, a ``--fetch`` remote's branch).

    With ``--check``, exit 3 when the plan has violations (for CI). With ``--sql``, print
    the SQL a deploy of the plan sends instead (``--json``: the plan with it under
    ``sql``); it connects nowhere, so it needs ``--from``.
    """
    from orchestrator.runner.planning import checked_out
    from orchestrator.runner.preflight import offline_timings, plan_for

    if args.permissions and not args.sql:
        raise BadInput("plan --permissions is for --sql", key="--permissions")
    if args.sql and not args.from_rev:
        raise BadInput("plan --sql works offline: give --from REV, the revision the hosts run "
                       "(`fastdowntime status` shows it)", key="--from")
    config = _with_source_flags(load(args, required=False), args)
    rules = path_rules(config, args)
    config = checked_out(config)
    with hosts(config, needed=not args.from_rev) as remote:
        plan = plan_for(config, remote, from_rev=args.from_rev, to_rev=args.to_rev,
                        rules=rules, timings=offline_timings(config)).plan
    sql = _plan_sql(config, plan, rules.revision_table) if args.sql else None
    if wants_json(args):
        data = plan.to_json()
        if sql is not None:
            data["sql"] = sql
        emit(data)
    elif sql is not None:
        print(sql)
    else:
        from orchestrator.views.text import print_plan

        print_plan(plan, Console())
    return ExitCode.REFUSED if args.check and plan.violations else ExitCode.OK


def _with_source_flags(config: Config, args: argparse.Namespace) -> Config:
    """``config`` with ``plan``'s ``--repo``, ``--branch``, ``--fetch`` and ``--permissions``
    over its ``[source]`` (``--repo`` without ``--fetch`` reads that repository as it
    stands, whatever ``[source] fetch`` says of the configured one)."""
    import dataclasses

    source = config.source
    changes: dict[str, Any] = {"branch": args.branch or source.branch,
                               "permissions": args.permissions or source.permissions}
    if args.repo:
        changes.update(repo=args.repo, fetch=None)
    if args.fetch:
        changes["fetch"] = args.fetch
    return dataclasses.replace(config, source=dataclasses.replace(source, **changes))


def _plan_sql(config: Config, plan: Any, revision_table: str) -> str:
    """``plan --sql``'s text: the patch texts from the plan, the permissions file's from the
    repository planned."""
    from orchestrator.runner.deploy import read_texts
    from orchestrator.runner.sqlreview import plan_sql

    return "\n".join(plan_sql(config, plan, read_texts(config, plan), revision_table))


def cmd_patches(args: argparse.Namespace) -> int:
    """``patches FILE...``: lint patch files (kind, statements, locks, problems with rule codes).

    Every file is reported whatever the others hold. Exit 2 when a file cannot
    be read or parsed, else 3 when a problem is at least as severe as
    ``--fail-on`` (default warning: any problem), else 0. ``--json`` is ``--format json``.
    """
    from orchestrator.patchfiles import exit_code, expand, lint_files, summary
    from orchestrator.views import lint as lintout

    form = args.format
    if wants_json(args):
        if form not in ("text", "json"):
            raise BadInput(f"patches: --json is --format json, not --format {form}: give one",
                           key="--json")
        form = "json"
    rules = path_rules(load(args, required=False), args)
    reports = lint_files(expand(args.files, rules.patches), rules.revision_table)
    if form == "json":
        emit([r.to_json() for r in reports])
    elif form == "github":
        for command in lintout.github(reports):
            print(command)
    elif form == "sarif":
        print(json.dumps(lintout.sarif(reports, lintout.tool_version()), indent=2))
    else:
        from orchestrator.views.text import print_patches

        print_patches(reports, Console())
    code = exit_code(reports, args.fail_on)
    if code != ExitCode.OK:
        print(f"fastdowntime: patches: {summary(reports)}", file=sys.stderr)
    return code


__all__ = ["cmd_patches", "cmd_plan", "path_rules"]

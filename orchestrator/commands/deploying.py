"""``deploy``, ``rehearse``, ``rollback``, ``resume`` and ``unlock``: the commands that act
on the hosts and the database, each ending with the run's summary line."""

from __future__ import annotations

import argparse

from rich.console import Console

from orchestrator.commands.loading import load
from orchestrator.commands.output import out
from orchestrator.errors import BadInput, ExitCode


def cmd_deploy(args: argparse.Namespace) -> int:
    """``deploy``: the whole sequence (``rehearse``: the same, recording patch timings)."""
    from orchestrator.runner.deploy import Options, deploy
    from orchestrator.views.progress import Progress
    from orchestrator.views.text import print_plan

    config = load(args)
    console = Console()
    options = Options(stage=args.stage, dry_run=args.dry_run, yes=args.yes,
                      approve=args.approve, rehearse=args.command == "rehearse",
                      to_rev=args.to_rev)
    with Progress(console, config.window.budget_s) as progress:
        summary = deploy(config, options, show=out, progress=progress,
                         show_plan=lambda plan: print_plan(plan, console))
    if summary.get("id"):
        out(f"run {summary['id']}: {summary['outcome']}, outage {summary['outage_s']} s "
            f"(budget {summary['window_budget_s']} s), seen by the probe "
            f"{(summary.get('probe') or {}).get('longest_s')} s")
    return ExitCode.OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """``rollback [--to RELEASE]``: code only, host by host, to a release the hosts keep."""
    from orchestrator.runner.rollback import rollback
    from orchestrator.views.progress import Progress

    config = load(args)
    with Progress(Console(), config.window.budget_s) as progress:
        summary = rollback(config, args.to, yes=args.yes, show=out, progress=progress)
    out(f"run {summary['id']}: {summary['outcome']}: every app host serves "
        f"{str(summary['to'])[:12]}; failed requests {summary.get('failed_requests')}")
    return ExitCode.OK


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume RUN``: finish or restore a run whose orchestrator died."""
    from orchestrator.runner.resume import resume

    summary = resume(load(args), args.run, show=out)
    out(f"run {summary['id']}: {summary['outcome']}")
    return ExitCode.OK


def cmd_unlock(args: argparse.Namespace) -> int:
    """``unlock --force``: end the session holding the deploy lock and mark its run."""
    from orchestrator.runner.admin import unlock

    if not args.force:
        raise BadInput("unlock: give --force to end another run's session")
    released = unlock(load(args))
    print("the deploy lock was free" if released is None
          else f"released the deploy lock held by {released.describe()}")
    return ExitCode.OK


__all__ = ["cmd_deploy", "cmd_resume", "cmd_rollback", "cmd_unlock"]

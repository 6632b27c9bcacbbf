"""``deploy``, ``rehearse``, ``rollback``, ``resume`` and ``unlock``: the commands that act
on the hosts and the database, each ending with the run's summary line.

With ``--json`` the plan, the progress, a dry run's steps and the question go to stderr,
and stdout holds the run's summary as ``show RUN --json`` prints it; a failure inside a
run puts that summary beside the error, under ``run``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.commands.loading import load
from orchestrator.commands.output import (
    CommandFailed,
    ask_on_stderr,
    console,
    emit,
    out,
    shown,
    wants_json,
)
from orchestrator.config import Config
from orchestrator.errors import BadInput, ExitCode, FastdowntimeError


def cmd_deploy(args: argparse.Namespace) -> int:
    """``deploy``: the whole sequence (``rehearse``: the same, recording patch timings)."""
    from orchestrator.runner.deploy import Options, deploy
    from orchestrator.views.progress import Progress
    from orchestrator.views.text import print_plan

    config = load(args)
    view = console(args)
    options = Options(stage=args.stage, dry_run=args.dry_run, yes=args.yes,
                      approve=args.approve, rehearse=args.command == "rehearse",
                      to_rev=args.to_rev)

    def run() -> dict[str, Any]:
        with Progress(view, config.window.budget_s) as progress:
            return deploy(config, options, ask=_ask(args), show=shown(args),
                          progress=progress, show_plan=lambda plan: print_plan(plan, view))

    summary = _ran(args, config, run)
    if not wants_json(args) and summary.get("id"):
        out(f"run {summary['id']}: {summary['outcome']}, outage {summary['outage_s']} s "
            f"(budget {summary['window_budget_s']} s), seen by the probe "
            f"{(summary.get('probe') or {}).get('longest_s')} s")
    return ExitCode.OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """``rollback [--to RELEASE]``: code only, host by host, to a release the hosts keep."""
    from orchestrator.runner.rollback import rollback
    from orchestrator.views.progress import Progress

    config = load(args)

    def run() -> dict[str, Any]:
        with Progress(console(args), config.window.budget_s) as progress:
            return rollback(config, args.to, yes=args.yes, ask=_ask(args), show=shown(args),
                            progress=progress)

    summary = _ran(args, config, run)
    if not wants_json(args):
        out(f"run {summary['id']}: {summary['outcome']}: every app host serves "
            f"{str(summary['to'])[:12]}; failed requests {summary.get('failed_requests')}")
    return ExitCode.OK


def cmd_resume(args: argparse.Namespace) -> int:
    """``resume RUN``: finish or restore a run whose orchestrator died."""
    from orchestrator.runner.resume import resume
    from orchestrator.runner.runs import load_run

    config = load(args)
    run_id = str(load_run(Path(config.runs.dir), args.run)["id"])
    summary = _ran(args, config, lambda: resume(config, run_id, show=shown(args)), run_id)
    if not wants_json(args):
        out(f"run {summary['id']}: {summary['outcome']}")
    return ExitCode.OK


def cmd_unlock(args: argparse.Namespace) -> int:
    """``unlock --force``: end the session holding the deploy lock and mark its run
    (``--json``: ``{"released": bool, "holder": {...} or null}``)."""
    from orchestrator.runner.admin import unlock

    if not args.force:
        raise BadInput("unlock: give --force to end another run's session", key="--force")
    released = unlock(load(args))
    if wants_json(args):
        from orchestrator.runner.status import holder_json

        emit({"released": released is not None,
              "holder": None if released is None else holder_json(released)})
    else:
        out("the deploy lock was free" if released is None
            else f"released the deploy lock held by {released.describe()}")
    return ExitCode.OK


def recorded(config: Config, summary: dict[str, Any]) -> dict[str, Any]:
    """The run's summary as ``show RUN --json`` prints it (read back from ``[runs] dir``);
    ``summary`` itself for what left no record (a dry run, nothing to deploy) or when the
    record cannot be read."""
    from orchestrator.runner.runs import load_run

    if not summary.get("id"):
        return summary
    try:
        return load_run(Path(config.runs.dir), str(summary["id"]))
    except (FastdowntimeError, OSError, ValueError):
        return summary


def _ran(args: argparse.Namespace, config: Config, run: Callable[[], dict[str, Any]],
         run_id: str | None = None) -> dict[str, Any]:
    """``run()``'s summary, printed under ``--json`` as ``show RUN --json`` prints it; an
    error that ended a run carries that run's summary beside it (:func:`_in_run`)."""
    try:
        summary = run()
    except FastdowntimeError as exc:
        failed = _in_run(args, config, exc, run_id)
        if failed is None:
            raise
        raise failed from exc
    if wants_json(args):
        emit(recorded(config, summary))
    return summary


def _in_run(args: argparse.Namespace, config: Config, error: FastdowntimeError,
            run_id: str | None = None) -> CommandFailed | None:
    """Under ``--json``, when ``error`` ended a run: the error with that run's summary beside
    it, to raise instead; else None (``error`` as it is)."""
    run_id = error.run_id or run_id
    if not wants_json(args) or run_id is None:
        return None
    return CommandFailed(error, {"run": recorded(config, {"id": run_id})})


def _ask(args: argparse.Namespace) -> Callable[[str], str]:
    """The confirmation prompt: ``input``, or under ``--json`` its question on stderr."""
    return ask_on_stderr if wants_json(args) else input


__all__ = ["cmd_deploy", "cmd_resume", "cmd_rollback", "cmd_unlock", "recorded"]
